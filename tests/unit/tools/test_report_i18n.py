"""The report catalogs (every message translated in fr, en, de, es, no fuzzy) and the locale formats."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_file

from ipm_tools.report import build, i18n

SOURCES = [Path(build.__file__)]
PLACEHOLDER = re.compile(r"%\(\w+\)s")


def used_messages():
    """Every message the report code asks the catalogs for: marked calls plus the label tables."""
    found = set()
    for source in SOURCES:
        for _line, message, _comments, _context in extract_from_file(
            "python", str(source), keywords={"_": None, "n_": (1, 2)}
        ):
            found.add(message)
    for labels in (build.RESULT_LABELS, build.MAINTENANCE_LABELS, build.SEVERITY_LABELS, build.AUTHORIZATION_LABELS):
        found.update(labels.values())
    return found


def test_extraction_sees_the_messages():
    messages = used_messages()
    assert "Maintenance report" in messages
    assert ("%(num)s terminal drifted", "%(num)s terminals drifted") in messages
    assert len(messages) > 80


@pytest.mark.parametrize("language", i18n.LANGUAGES)
def test_catalog_complete_without_fuzzy(language):
    catalog = i18n.catalog(language)
    assert catalog.locale.language == language
    entries = {message.id: message for message in catalog if message.id}
    missing = [m for m in used_messages() if m not in entries]
    assert not missing, f"{i18n.po_path(language)}: not in the catalog: {missing}"
    for message in entries.values():
        assert not message.fuzzy, f"{language}: fuzzy {message.id!r}"
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        assert all(strings), f"{language}: untranslated {message.id!r}"
        if isinstance(message.id, tuple):
            assert len(strings) == catalog.num_plurals, f"{language}: {message.id!r} needs {catalog.num_plurals} forms"
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        wanted = set(PLACEHOLDER.findall(ids[-1]))
        for text in strings:
            assert set(PLACEHOLDER.findall(text)) == wanted, f"{language}: placeholders of {message.id!r}"
    unused = [m for m in entries if m not in used_messages()]
    assert not unused, f"{language}: messages no code uses: {unused}"


def test_translations_differ_from_english():
    for language in ("fr", "de", "es"):
        formatter = i18n.Formatter(language)
        assert formatter._("Maintenance report") != "Maintenance report"
        assert formatter._("Backups") != "Backups"


def test_plurals_follow_the_language():
    fr, en = i18n.Formatter("fr"), i18n.Formatter("en")
    one, many = "%(num)s terminal drifted", "%(num)s terminals drifted"
    assert fr.n_(one, many, 0) == "0 terminal en écart"  # French: zero is singular
    assert fr.n_(one, many, 2) == "2 terminaux en écart"
    assert en.n_(one, many, 0) == "0 terminals drifted"
    assert en.n_(one, many, 1) == "1 terminal drifted"
    assert i18n.Formatter("de").n_(one, many, 1234) == "1.234 Terminals weichen ab"


def test_numbers_and_currency_per_locale():
    assert i18n.Formatter("fr").number(1234567) == "1\u202f234\u202f567"
    assert i18n.Formatter("de").number(1234567) == "1.234.567"
    assert i18n.Formatter("en").number(1234567) == "1,234,567"
    assert i18n.Formatter("es").number(1234567) == "1.234.567"
    assert i18n.Formatter("fr").number(2.5) == "2,5"
    assert i18n.Formatter("fr").currency(1280.5, "EUR") == "1\u202f280,50\xa0€"
    assert i18n.Formatter("de").currency(1280.5, "EUR") == "1.280,50\xa0€"
    assert i18n.Formatter("en", "US").currency(1280.5, "USD") == "$1,280.50"
    assert i18n.Formatter("es").currency(1280.5, "EUR") == "1.280,50\xa0€"


def test_times_in_the_site_zone_with_offset():
    fr = i18n.Formatter("fr")
    assert fr.moment("2027-01-15T08:30:00.000000Z", "Europe/Paris") == "15 janv. 2027, 09:30:00 (UTC+01:00)"
    assert fr.moment("2027-07-15T08:30:00.000000Z", "Europe/Paris").endswith("10:30:00 (UTC+02:00)")
    de = i18n.Formatter("de")
    assert de.moment("2027-01-15T08:30:00.000000Z", "Australia/Sydney") == "15.01.2027, 19:30:00 (UTC+11:00)"
    es = i18n.Formatter("es")
    assert es.moment("2027-01-15T08:30:00.000000Z", "America/Chicago") == "15 ene 2027, 2:30:00 (UTC-06:00)"
    assert fr.moment(None, "UTC") == "-"


def test_language_choice():
    assert i18n.choose_language(["ja", "en"]) == "en"
    assert i18n.choose_language(["fr", "en"]) == "fr"
    assert i18n.choose_language(["ja"]) == "en"
    assert i18n.choose_language(["fr"], "de_DE") == "de"
    with pytest.raises(i18n.LanguageError, match="expected one of en, fr, de, es"):
        i18n.choose_language(["fr"], "ja")
    assert i18n.Formatter("es", "FR").locale.territory == "ES"  # no es_FR in CLDR: Spain's conventions
