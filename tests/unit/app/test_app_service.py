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

from ipm_tools import release


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """Each release built and unpacked as on a terminal: version -> release directory."""
    out = tmp_path_factory.mktemp("releases")
    directories = {}
    for version in ("2.3.1", "2.4.0", "2.4.1", "3.0.0"):
        built = release.build_release(version, out)
        target = out / version
        with tarfile.open(built.artifact) as tar:
            tar.extractall(target, filter="data")
        directories[version] = target
    return directories


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RunningApp:
    def __init__(self, process: subprocess.Popen, port: int, data_dir: Path, log_file: Path):
        self.process = process
        self.port = port
        self.data_dir = data_dir
        self.log_file = log_file

    def get(self, path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
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
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("ipm-app did not listen in time")


@pytest.fixture
def start_app(installed, tmp_path):
    """start_app(version, parameters) -> RunningApp; every process is stopped at teardown."""
    processes = []

    def start(version: str, parameters: dict, hardware: dict | None = None) -> RunningApp:
        config = tmp_path / f"app-{len(processes)}.yml"
        config.write_text(yaml.safe_dump(parameters))
        hardware_file = tmp_path / "hardware.yml"
        if hardware is not None:
            hardware_file.write_text(yaml.safe_dump(hardware))
        port = free_port()
        data_dir = tmp_path / "data"
        log_file = tmp_path / "log" / "app.log"
        command = [
            sys.executable, str(installed[version] / "bin" / "ipm-app"),
            "--config", str(config), "--listen-address", "127.0.0.1", "--port", str(port),
            "--data-dir", str(data_dir), "--log-file", str(log_file), "--hardware-file", str(hardware_file),
        ]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        processes.append(process)
        return RunningApp(process, port, data_dir, log_file)

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


def test_release_2_4_1_turns_unhealthy_after_start(start_app):
    app = start_app("2.4.1", {"transaction_interval_s": 0})
    app.wait_until_serving()
    status, health = app.get("/health")
    # Healthy during its first seconds (this machine may be slow to ask: then uptime tells).
    assert health["version"] == "2.4.1"
    assert health["uptime_s"] > 5 or (status, health["status"]) == (200, "ok")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and status == 200:
        time.sleep(0.5)
        status, health = app.get("/health")
    assert (status, health["status"]) == (503, "failing")
    assert app.process.poll() is None  # still running: only the health check tells
    assert "health check failing" in app.log_file.read_text()


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
