"""ipm-report against hostile input and faults: bad periods and languages, output paths that cannot be
written, a full disk, audit logs that are missing, empty, truncated, tampered or random bytes.

Every case is one clear line (exit 2), or a report that says the log FAILED verification (exit 1); a
report is written to a temporary name and renamed, so a failed write leaves the previous file whole and
no stray file. Real audit logs (the collection's AuditWriter), the demo registry; no root, no terminals.
"""

from __future__ import annotations

import datetime
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import generate_key, load_key
from ipm_tools import PROJECT_ROOT
from ipm_tools.report.cli import build_parser, main

sys.path.insert(0, str(Path(__file__).parent / "tools"))  # the shared log writer
from report_log import write_log

REGISTRY = str(PROJECT_ROOT / "registry" / "demo")
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    base = tmp_path_factory.mktemp("report-hostile")
    key_file = base / "audit.key"
    generate_key(str(key_file))
    good = base / "good.jsonl"
    write_log(
        str(good), load_key(str(key_file)), start=datetime.datetime(2027, 1, 4, 6, tzinfo=datetime.UTC), runs=4,
        terminals_per_run=2,
    )  # fmt: skip
    data = good.read_bytes()
    head = Path(str(good) + ".head").read_bytes()
    variants = {
        "good": data,
        "empty": b"",
        "truncated": data[: len(data) * 2 // 3],
        "tampered": data.replace(b'"delivered"', b'"failed"', 1),
        "random": os.urandom(4096),
    }
    paths = {}
    for name, content in variants.items():
        path = base / f"{name}.jsonl"
        path.write_bytes(content)
        if name not in ("empty", "random"):
            Path(str(path) + ".head").write_bytes(head)
        paths[name] = str(path)
    paths["key"] = str(key_file)
    paths["base"] = base
    return paths


@pytest.fixture
def report(logs, capsys, monkeypatch):
    for name in ("IPM_SUPPORT_DIR", "IPM_HISTORY_STORE"):
        monkeypatch.delenv(name, raising=False)

    def report(*argv, log="good"):
        code = main([*argv, "--log", logs.get(log, log), "--key-file", logs["key"], "--registry", REGISTRY])
        out, err = capsys.readouterr()
        return code, out, err

    return report


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    assert err.count("\n") == 1 and err.startswith("ipm-report"), err
    return err


MAINTENANCE = ("maintenance", "--customer", "parkcite")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((*MAINTENANCE, "--period", "2027-13"), "period '2027-13': expected a month YYYY-MM"),
        ((*MAINTENANCE, "--period", ""), "period '': expected"),
        ((*MAINTENANCE, "--period", "2027-01-31..2027-01-01"), "period '2027-01-31..2027-01-01'"),
        ((*MAINTENANCE, "--period", "../../etc"), "period '../../etc'"),
        ((*MAINTENANCE, "--period", "2027-01", "--lang", "xx"), "--lang 'xx': no report catalog for it"),
        (
            ("maintenance", "--customer", "park/cite", "--period", "2027-01"),
            "--customer 'park/cite': not in the registry",
        ),
        (("maintenance", "--customer", "' OR 1=1 --", "--period", "2027-01"), "not in the registry"),
        (("audit", "--period", "2027-00"), "period '2027-00'"),
        (("site", "--site", "../paris-gare-de-lyon"), "--site '../paris-gare-de-lyon': no such site"),
        (("site", "--site", "paris-gare-de-lyon", "--date", "2027-13-01"), "--date: date '2027-13-01'"),
    ],
)
def test_bad_arguments_are_one_line(report, argv, message):
    code, out, err = report(*argv)
    assert code == 2 and out == "" and message in one_line(err)


@pytest.mark.parametrize("rate", ["-1", "nan", "inf", "-inf", "lots", "1e999"])
def test_hourly_rate_must_be_a_price(report, capsys, rate):
    with pytest.raises(SystemExit) as exited:
        report(*MAINTENANCE, "--period", "2027-01", f"--hourly-rate={rate}")
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "expected a price of 0 or more" in err and "Traceback" not in err


def test_output_in_a_missing_dir_a_directory_or_under_a_file(report, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    cases = [
        (tmp_path / "missing" / "r.html", "does not exist; create it or write elsewhere"),
        (tmp_path, "a directory; give a file name"),
        (blocker / "r.html", "is a file, not a directory"),
    ]
    for output, message in cases:
        code, _out, err = report(*MAINTENANCE, "--period", "2027-01", "-o", str(output))
        assert code == 2 and message in one_line(err)
    assert blocker.read_text() == "keep me" and not (tmp_path / "missing").exists()


def test_history_or_support_dir_that_is_a_file(report, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _out, err = report(*MAINTENANCE, "--period", "2027-01", "--history", str(blocker))
    assert code == 2 and "--history" in one_line(err) and "not a directory" in err
    code, _out, err = report(*MAINTENANCE, "--period", "2027-01", "--support-dir", str(blocker))
    assert code == 2 and "--support-dir" in one_line(err) and "not a directory" in err


def test_a_report_replaces_the_old_one_whole(report, tmp_path):
    output = tmp_path / "r.html"
    output.write_text("the previous report")
    code, _out, err = report(*MAINTENANCE, "--period", "2027-01", "-o", str(output))
    assert code == 0 and "written to" in err
    assert output.read_text().lstrip().lower().startswith("<!doctype html")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]  # no temporary left


def _limited(size):
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


def test_full_disk_keeps_the_previous_report(logs, tmp_path):
    output = tmp_path / "r.html"
    output.write_text("the previous report")
    result = subprocess.run(
        [str(BIN / "ipm-report"), *MAINTENANCE, "--period", "2027-01", "--log", logs["good"], "--key-file",
         logs["key"], "--registry", REGISTRY, "-o", str(output)],
        capture_output=True, text=True, preexec_fn=_limited(2048), timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "cannot write the report" in one_line(result.stderr) and "nothing was written there" in result.stderr
    assert output.read_text() == "the previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


def test_missing_log_is_one_line(report, tmp_path):
    code, _out, err = report("audit", "--period", "2027-01", log=str(tmp_path / "nowhere.jsonl"))
    assert code == 2 and "no audit log there" in one_line(err)


def test_unusable_key_file_is_one_line(logs, capsys, tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("not hex")
    for key in (str(bad), str(tmp_path / "missing.key")):
        code = main(["audit", "--period", "2027-01", "--log", logs["good"], "--key-file", key])
        err = capsys.readouterr().err
        assert code == 2 and "--no-key" in one_line(err)


def test_empty_log_is_a_report_of_nothing(report):
    code, out, err = report("audit", "--period", "2027-01", "--format", "json", log="empty")
    assert (code, err) == (0, "") and '"ok": true' in out


@pytest.mark.parametrize(("log", "why"), [("truncated", "partial last line"), ("tampered", "record altered"),
                                          ("random", "not an audit record")])  # fmt: skip
@pytest.mark.parametrize("command", [("audit", "--period", "2027-01"), (*MAINTENANCE, "--period", "2027-01")])
def test_a_log_failing_verification_says_so_at_the_top(report, tmp_path, log, why, command):
    output = tmp_path / "r.html"
    code, _out, err = report(*command, "-o", str(output), log=log)
    assert code == 1 and "FAILED verification" in err and why in err and "Traceback" not in err
    html = output.read_text()
    top = html[html.index("<body") :][:3000]  # before any table or chart
    assert 'class="status failed"' in top and why in top


def _commands(parser, prefix=()):
    yield prefix
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield from _commands(sub, (*prefix, name))


def test_help_of_every_subcommand(capsys):
    commands = list(_commands(build_parser()))
    assert {("maintenance",), ("audit",), ("site",)} <= set(commands)
    for command in commands:
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args([*command, "--help"])
        out, err = capsys.readouterr()
        assert exited.value.code == 0 and out.startswith("usage: ipm-report") and err == "", command
