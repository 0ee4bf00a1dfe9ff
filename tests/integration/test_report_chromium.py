"""ipm-report pages opened in a real headless Chromium: rendered (a screenshot that is not blank) and read back.

Each language's maintenance report of a generated month (the collection's AuditWriter, records as the
audit callback writes them) is opened with ``chromium --headless``: ``--dump-dom`` gives the page as the
browser built it, whose tables are parsed and checked against what was written (row counts, totals in
the language's number format); ``--screenshot`` must give a PNG with many distinct colours. A report of a
log that fails verification says so before any section. About 30 s here (Chromium starts 9 times).
"""

from __future__ import annotations

import datetime
import html.parser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from babel.numbers import parse_decimal

from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import generate_key, load_key
from ipm_tools import PROJECT_ROOT
from ipm_tools.report.cli import main

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "tools"))  # --import-mode=importlib: shared writer
from report_log import write_log

CHROMIUM = shutil.which("chromium")
# The report formats numbers in the language as spoken in the customer's country (parkcite: FR; CLDR has no de_FR nor es_FR: then de_DE, es_ES).
LOCALES = {"fr": "fr_FR", "en": "en_FR", "de": "de_DE", "es": "es_ES"}
TITLES = {
    "fr": "Rapport de maintenance",
    "en": "Maintenance report",
    "de": "Wartungsbericht",
    "es": "Informe de mantenimiento",
}

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")


def chromium(tmp_path, *args, timeout=120):
    profile = tmp_path / "chromium-profile"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
        "--user-data-dir=%s" % profile, *args,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


class Tables(html.parser.HTMLParser):
    """Tables of a DOM by id: header cells, body rows, footer cells; the status banner's text."""

    def __init__(self):
        super().__init__()
        self.tables, self.order = {}, []
        self._table = self._part = self._row = self._cell = None
        self._status = False
        self.status = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id"), {"head": [], "body": [], "foot": []})
        elif tag in ("thead", "tbody", "tfoot") and self._table is not None:
            self._part = {"thead": "head", "tbody": "body", "tfoot": "foot"}[tag]
        elif tag == "tr" and self._part:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "div" and attrs.get("id") == "status":
            self._status = True
        if tag in ("section", "div") and attrs.get("id"):
            self.order.append(attrs["id"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self._table[self._part].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = self._part = None
        elif tag == "div":
            self._status = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._status:
            self.status += data


def parse(dom: str) -> Tables:
    parser = Tables()
    parser.feed(dom)
    return parser


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    base = tmp_path_factory.mktemp("report-chromium")
    generate_key(str(base / "audit.key"))
    log = base / "audit.jsonl"
    expected = write_log(
        str(log), load_key(str(base / "audit.key")), start=datetime.datetime(2027, 1, 11, 7, tzinfo=datetime.UTC),
        runs=40, terminals_per_run=5,
    )  # fmt: skip
    return {"base": base, "log": log, "key": base / "audit.key", "expected": expected["parkcite"]}


def report(written, language, out, log=None):
    code = main(
        [
            "maintenance", "--customer", "parkcite", "--period", "2027-01", "--lang", language,
            "--log", str(log or written["log"]), "--key-file", str(written["key"]),
            "--registry", str(PROJECT_ROOT / "registry" / "demo"), "--history", str(written["base"] / "no-history"),
            "--hourly-rate", "85", "-o", str(out),
        ]
    )  # fmt: skip
    return code


def number(text, language):
    return parse_decimal(text, locale=LOCALES[language], strict=False)


@pytest.mark.parametrize("language", ["fr", "en", "de", "es"])
def test_page_tables_match_the_log(written, tmp_path, language):
    page = tmp_path / f"maintenance-{language}.html"
    assert report(written, language, page) == 0
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert f'<html lang="{language}"' in dom and TITLES[language] in dom
    tables = parse(dom).tables
    expected = written["expected"]
    for table_id, count in (
        ("table-deliveries", expected["release"]),
        ("table-parameter_changes", expected["parameters"]),
        ("table-patches", expected["patch"]),
        ("table-backups", expected["backups"]),
    ):
        table = tables[table_id]
        assert len(table["body"]) == count, table_id
        assert int(number(table["foot"][0][1], language)) == count, table_id
    effort = tables["table-effort"]
    total = effort["foot"][0]
    assert int(number(total[1], language)) == expected["runs"]
    assert int(number(total[2], language)) == len(expected["terminals"])
    assert sum(int(number(row[1], language)) for row in effort["body"]) == expected["runs"]
    hours = float(number(total[4], language))
    assert hours == pytest.approx(expected["seconds"] / 3600, abs=0.01)
    assert "€" in total[5]  # parkcite pays in EUR
    # The site's zone with its offset: parkcite's sites are in Europe/Paris (UTC+01:00 in January).
    assert all(row[0].endswith("(UTC+01:00)") for row in tables["table-deliveries"]["body"])


def test_screenshot_is_not_blank(written, tmp_path):
    from PIL import Image

    page = tmp_path / "maintenance.html"
    assert report(written, "fr", page) == 0
    shot = tmp_path / "shot.png"
    chromium(tmp_path, "--screenshot=%s" % shot, "--window-size=1280,2000", "--hide-scrollbars", page.as_uri())
    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200, "a page with text, tables and charts has many colours"
    most = max(count for count, _colour in colours)
    assert most < 0.9 * 1280 * 2000  # not one flat colour


def test_failed_verification_is_said_at_the_top(written, tmp_path):
    bad = tmp_path / "audit.jsonl"
    bad.write_bytes(written["log"].read_bytes().replace(b'"status":"ok"', b'"status":"failed"', 1))
    (tmp_path / "audit.jsonl.head").write_bytes(Path(str(written["log"]) + ".head").read_bytes())
    page = tmp_path / "bad.html"
    assert report(written, "de", page, log=bad) == 1
    parsed = parse(chromium(tmp_path, "--dump-dom", page.as_uri()))
    assert parsed.order[0] == "status"
    assert parsed.status.startswith("PRÜFUNG DES AUDIT-PROTOKOLLS FEHLGESCHLAGEN")
    assert "record altered" in parsed.status
