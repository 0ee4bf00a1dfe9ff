"""Languages of the reports: gettext catalogs read from their .po files, formats from Babel (CLDR).

The catalogs live in ``locale/<lang>/LC_MESSAGES/ipm_report.po`` beside this file (installed as package
data); they are read with Babel's .po reader and compiled in memory, so no build step and no .mo in git.
Dates, times, numbers, currency amounts and plurals follow the locale; times are shown in the zone of the
site they happened at, with their UTC offset.
"""

from __future__ import annotations

import datetime
import functools
import gettext
import io
from pathlib import Path

from babel import Locale, UnknownLocaleError, dates, numbers
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

DOMAIN = "ipm_report"
LANGUAGES = ("en", "fr", "de", "es")
DEFAULT_LANGUAGE = "en"
LOCALE_DIR = Path(__file__).parent / "locale"
# The country each language's formats are taken from when the registry gives no country.
DEFAULT_TERRITORY = {"en": "GB", "fr": "FR", "de": "DE", "es": "ES"}


class LanguageError(ValueError):
    """A language the reports have no catalog for."""


def po_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / (DOMAIN + ".po")


@functools.lru_cache(maxsize=8)
def catalog(language: str):
    """The Babel catalog of LANGUAGE, read from its .po file."""
    path = po_path(language)
    with open(path, "rb") as handle:
        return read_po(handle, locale=language, domain=DOMAIN)


@functools.lru_cache(maxsize=8)
def translations(language: str) -> gettext.GNUTranslations:
    buffer = io.BytesIO()
    write_mo(buffer, catalog(language), use_fuzzy=False)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


def choose_language(preferred, override: str | None = None) -> str:
    """OVERRIDE when given (it must have a catalog), else the first of PREFERRED that has one, else English."""
    if override:
        code = override.split("_")[0].split("-")[0].lower()
        if code not in LANGUAGES:
            raise LanguageError(
                "--lang %r: no report catalog for it; expected one of %s" % (override, ", ".join(LANGUAGES))
            )
        return code
    for code in preferred or ():
        if isinstance(code, str) and code.lower() in LANGUAGES:
            return code.lower()
    return DEFAULT_LANGUAGE


class Formatter:
    """Messages and formats of one language (and the country whose conventions it uses)."""

    def __init__(self, language: str, country: str | None = None):
        if language not in LANGUAGES:
            raise LanguageError("language %r: expected one of %s" % (language, ", ".join(LANGUAGES)))
        self.language = language
        territory = country if country and _has_locale(language, country) else DEFAULT_TERRITORY[language]
        self.locale = Locale.parse("%s_%s" % (language, territory))
        self._t = translations(language)

    def _(self, message: str) -> str:
        return self._t.gettext(message)

    def n_(self, singular: str, plural: str, count: int) -> str:
        return self._t.ngettext(singular, plural, count) % {"num": self.number(count)}

    def number(self, value) -> str:
        if isinstance(value, int):
            return numbers.format_decimal(value, locale=self.locale)
        return numbers.format_decimal(value, format="#,##0.0#", locale=self.locale)

    def percent(self, value: float) -> str:
        return numbers.format_percent(value, locale=self.locale)

    def currency(self, amount: float, code: str) -> str:
        return numbers.format_currency(amount, code, locale=self.locale)

    def date(self, value: datetime.date) -> str:
        return dates.format_date(value, format="long", locale=self.locale)

    def moment(self, stamp: str | None, zone_name: str | None) -> str:
        """A UTC record time in the zone ZONE_NAME, with its UTC offset (``UTC`` when no zone is known)."""
        if not stamp:
            return "-"
        moment = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        zone = dates.get_timezone(zone_name or "UTC")
        local = moment.astimezone(zone)
        text = dates.format_datetime(local, format="medium", tzinfo=zone, locale=self.locale)
        offset = local.strftime("%z")
        return "%s (UTC%s:%s)" % (text, offset[:3], offset[3:])


@functools.lru_cache(maxsize=64)
def _has_locale(language: str, country: str) -> bool:
    try:
        Locale.parse("%s_%s" % (language, country))
    except (UnknownLocaleError, ValueError, LookupError):
        return False
    return True
