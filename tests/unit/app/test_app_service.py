"""ipm-app really running: a built release started as a subprocess on 127.0.0.1 and a free port."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from ansible_collections.ipm.fleet.plugins.module_utils import app_health
from ansible_collections.ipm.fleet.plugins.module_utils import release_manifest as rm
from ipm_tools import release

# A test release whose definition sets the defect's time: 2.4.1 (healthy for the default 5 s) with
# healthy_for_s: 2, defined in a releases directory of the test's own.
QUICK_DEFECT = "2.4.9"
QUICK_DEFECT_S = 2.0


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """Each release built and unpacked as on a terminal: version -> release directory."""
    out = tmp_path_factory.mktemp("releases")
    definitions = tmp_path_factory.mktemp("definitions")
    quick = yaml.safe_load((release.RELEASES_DIR / "2.4.1.yml").read_text())
    quick.update(version=QUICK_DEFECT, defect={"kind": "health-fails-after-start", "healthy_for_s": QUICK_DEFECT_S})
    (definitions / f"{QUICK_DEFECT}.yml").write_text(yaml.safe_dump(quick, sort_keys=False))
    directories = {}
    for version, releases_dir in [(v, release.RELEASES_DIR) for v in ("2.3.1", "2.4.0", "2.4.1", "3.0.0")] + [
        (QUICK_DEFECT, definitions)
    ]:
        built = release.build_release(version, out, releases_dir)
        target = out / version
        with tarfile.open(built.artifact) as tar:
            tar.extractall(target, filter="data")
        directories[version] = target
    return directories


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


class RunningApp:
    def __init__(self, process: subprocess.Popen, port: int, data_dir: Path, log_file: Path, host: str = "127.0.0.1"):
        self.process = process
        self.port = port
        self.data_dir = data_dir
        self.log_file = log_file
        self.host = host  # where to ask it (app_health's rule for its listen address)

    def url(self, path: str, host: str | None = None) -> str:
        host = host or self.host
        return f"http://{'[%s]' % host if ':' in host else host}:{self.port}{path}"

    def get(self, path: str, host: str | None = None) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.url(path, host), timeout=30) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.url(path),
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    def wait_until_serving(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"ipm-app exited {self.process.returncode}: {self.process.stderr.read()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("ipm-app did not listen in time")


@pytest.fixture
def start_app(installed, tmp_path):
    """start_app(version, parameters) -> RunningApp; every process is stopped at teardown."""
    processes = []

    def start(
        version: str, parameters: dict, hardware: dict | None = None, listen_address: str | None = "127.0.0.1"
    ) -> RunningApp:
        """LISTEN_ADDRESS: --listen-address; None binds the listen_address parameter, as on a terminal."""
        config = tmp_path / f"app-{len(processes)}.yml"
        config.write_text(yaml.safe_dump(parameters))
        hardware_file = tmp_path / "hardware.yml"
        if hardware is not None:
            hardware_file.write_text(yaml.safe_dump(hardware))
        bound = listen_address if listen_address is not None else parameters.get("listen_address", "0.0.0.0")
        host = app_health.health_host(bound)
        port = free_port(host)
        data_dir = tmp_path / "data"
        log_file = tmp_path / "log" / "app.log"
        command = [
            sys.executable, str(installed[version] / "bin" / "ipm-app"),
            "--config", str(config), "--port", str(port),
            "--data-dir", str(data_dir), "--log-file", str(log_file), "--hardware-file", str(hardware_file),
        ]  # fmt: skip
        if listen_address is not None:
            command += ["--listen-address", listen_address]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        processes.append(process)
        return RunningApp(process, port, data_dir, log_file, host)

    yield start
    for process in processes:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        process.stdout.close()
        process.stderr.close()


def run_app(installed, version: str, *arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(installed[version] / "bin" / "ipm-app"), *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_health_reports_release_version_and_parameters_digest(installed, start_app, tmp_path):
    app = start_app("2.3.1", {"currency": "CHF", "transaction_interval_s": 0})
    app.wait_until_serving()
    status, health = app.get("/health")
    assert status == 200
    assert health["version"] == "2.3.1"
    assert health["status"] == "ok"
    assert health["uptime_s"] >= 0
    digest = run_app(installed, "2.3.1", "--print-digest", str(tmp_path / "app-0.yml"))
    assert digest.returncode == 0
    assert health["parameters_sha256"] == digest.stdout.strip()
    assert run_app(installed, "2.4.0", "--version").stdout == "2.4.0\n"


def test_transactions_are_written_to_sqlite(start_app):
    app = start_app("2.4.0", {"currency": "EUR", "transaction_interval_s": 1, "contactless_enabled": False})
    app.wait_until_serving()
    status, created = app.post("/transactions", {"amount": 4.2, "method": "card"})
    assert status == 201
    assert created["currency"] == "EUR"
    assert app.post("/transactions", {"amount": 999.0, "method": "card"})[0] == 422  # above max_amount 200
    assert app.post("/transactions", {"amount": 1.0, "method": "contactless"})[0] == 422  # switched off
    assert app.post("/transactions", {"amount": -1, "method": "card"})[0] == 400
    deadline = time.monotonic() + 30
    rows = []
    while time.monotonic() < deadline:  # the simulated writer adds one per second
        with sqlite3.connect(app.data_dir / "transactions.sqlite3") as db:
            rows = db.execute("SELECT amount, currency, method, source, release FROM transactions").fetchall()
        if any(row[3] == "simulated" for row in rows):
            break
        time.sleep(0.2)
    assert (4.2, "EUR", "card", "api", "2.4.0") in rows
    assert any(row[3] == "simulated" for row in rows)
    assert "transaction 1: 4.20 EUR by card (api)" in app.log_file.read_text()


def test_invalid_parameters_refuse_to_start_and_say_why(start_app):
    app = start_app("2.4.0", {"timeout": 30, "idle_timeout_s": 3, "currency": "JPY"})
    assert app.process.wait(timeout=60) == 78
    err = app.process.stderr.read()
    assert "refusing to start" in err
    assert "timeout: expected idle_timeout_s (renamed in 2.4.0), found the old name" in err
    assert "idle_timeout_s: expected an integer between 5 and 600, found 3 (int)" in err
    assert "currency: expected one of EUR, AUD, USD, GBP, CHF, found 'JPY' (str)" in err
    assert "Traceback" not in err


def test_release_refuses_a_hardware_model_it_does_not_support(start_app):
    app = start_app("3.0.0", {}, hardware={"model": "PS-200", "serial_number": "PS2-0001"})
    assert app.process.wait(timeout=60) == 78
    assert (
        "model PS-200 is not supported by release 3.0.0 (expected one of PS-300, TK-110)" in app.process.stderr.read()
    )


def test_check_config_validates_a_file(installed, tmp_path):
    good = tmp_path / "good.yml"
    good.write_text("idle_timeout_s: 30\nreceipt_mode: always\n")
    bad = tmp_path / "bad.yml"
    bad.write_text("receipt_mode: sometimes\n")
    broken = tmp_path / "broken.yml"
    broken.write_text("receipt_mode: [\n")
    ok = run_app(installed, "2.4.0", "--check-config", str(good))
    assert ok.returncode == 0, ok.stderr
    refused = run_app(installed, "2.4.0", "--check-config", str(bad))
    assert refused.returncode == 1
    assert "receipt_mode: expected one of always, on_request, never, found 'sometimes' (str)" in refused.stderr
    unreadable = run_app(installed, "2.4.0", "--check-config", str(broken))
    assert unreadable.returncode == 1
    assert "broken.yml: not valid YAML" in unreadable.stderr
    assert "Traceback" not in refused.stderr + unreadable.stderr
    # Each release checks against its own schema: idle_timeout_s is 2.4.0's name.
    older = run_app(installed, "2.3.1", "--check-config", str(good))
    assert older.returncode == 1
    assert "idle_timeout_s: expected a parameter of release 2.3.1, found unknown key" in older.stderr


def watch_health(app: RunningApp, until_s: float) -> list[tuple[float, int, dict]]:
    """(monotonic time, status, body) of /health asked every 0.1 s, up to the first 503 or UNTIL_S seconds."""
    answers = []
    deadline = time.monotonic() + until_s
    while time.monotonic() < deadline:
        status, body = app.get("/health")
        answers.append((time.monotonic(), status, body))
        if status != 200:
            break
        time.sleep(0.1)
    return answers


@pytest.mark.parametrize(
    ("version", "healthy_for_s"),
    [("2.4.1", rm.DEFAULT_DEFECT_HEALTHY_FOR_S), (QUICK_DEFECT, QUICK_DEFECT_S)],
    ids=["plain-defect-5s", "healthy_for_s-2"],
)
def test_a_defective_release_answers_healthy_for_its_time_then_fails(start_app, version, healthy_for_s):
    app = start_app(version, {"transaction_interval_s": 0})
    app.wait_until_serving()
    answers = watch_health(app, healthy_for_s + 30)
    oks = [(when, body) for when, status, body in answers if status == 200]
    when_failed, status, failing = answers[-1]
    assert (status, failing["status"], failing["version"]) == (503, "failing", version), answers[-1]
    assert oks, "no healthy answer before the failure: the machine was too slow to ask in time"
    assert all(body["status"] == "ok" and body["uptime_s"] <= healthy_for_s for _, body in oks)
    # It fails once its time is up, not much later: by its own clock and by ours.
    assert healthy_for_s <= failing["uptime_s"] < healthy_for_s + 1.5, failing
    first_ok_at, first_ok = oks[0]
    assert abs((when_failed - first_ok_at) - (failing["uptime_s"] - first_ok["uptime_s"])) < 0.5
    assert app.process.poll() is None  # still running: only the health check tells
    assert "health check failing" in app.log_file.read_text()


def test_the_defect_of_the_definition_is_in_the_built_manifest(installed):
    quick = {"kind": "health-fails-after-start", "healthy_for_s": QUICK_DEFECT_S}
    inside = rm.load_definition(str(installed[QUICK_DEFECT] / "manifest.yml"))  # what ipm-app reads
    beside = rm.load_definition(str(installed[QUICK_DEFECT].parent / f"ipm-app-{QUICK_DEFECT}.manifest.yml"))
    assert rm.defect_of(inside) == rm.defect_of(beside) == quick
    assert rm.load_definition(str(installed["2.4.1"] / "manifest.yml"))["defect"] == "health-fails-after-start"


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1) to bind")
@pytest.mark.parametrize("listen_address", ["::1", "[::1]", "::"])
def test_an_ipv6_listen_address_is_bound(start_app, listen_address):
    # The parameter, as on a terminal (no --listen-address); asked where app_health says it answers.
    app = start_app("2.4.0", {"transaction_interval_s": 0, "listen_address": listen_address}, listen_address=None)
    assert app.host == "::1"
    app.wait_until_serving()
    status, health = app.get("/health")
    assert (status, health["status"]) == (200, "ok")
    if listen_address == "::":  # a wildcard: IPv4 clients too
        assert app.get("/health", host="127.0.0.1")[0] == 200
    shown = "[::]" if listen_address == "::" else "[::1]"
    assert f"started on {shown}:{app.port}" in app.log_file.read_text()


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--port", "99999", "cannot listen on 127.0.0.1:99999"),
        ("--data-dir", "/proc/nope", "cannot open the transaction store"),
    ],
)
def test_a_bad_port_or_data_directory_is_one_line_not_a_traceback(installed, tmp_path, option, value, words):
    config = tmp_path / "app.yml"
    config.write_text("{}\n")
    arguments = {
        "--config": str(config),
        "--listen-address": "127.0.0.1",
        "--port": str(free_port()),
        "--data-dir": str(tmp_path / "data"),
        "--log-file": str(tmp_path / "app.log"),
        "--hardware-file": str(tmp_path / "hardware.yml"),
        option: value,
    }
    result = run_app(installed, "2.4.0", *[item for pair in arguments.items() for item in pair])
    assert result.returncode == 1
    assert words in result.stderr and "Traceback" not in result.stderr, result.stderr
