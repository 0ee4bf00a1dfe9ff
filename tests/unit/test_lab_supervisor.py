"""The lab terminal's supervisor: runs its command again after exit 133 (a reboot), ends on any other exit or SIGTERM.

Real processes (a small shell script stands in for systemd-nspawn), no root needed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from ipm_tools import lab_supervisor

SCRIPT = Path(lab_supervisor.__file__)


def _start(tmp_path: Path, body: str) -> tuple[subprocess.Popen, Path]:
    record = tmp_path / "boots.json"
    child = tmp_path / "child.sh"
    child.write_text(f"#!/bin/sh\n{body}\n")
    child.chmod(0o755)
    process = subprocess.Popen(
        [sys.executable, "-I", "-S", str(SCRIPT), "--terminal", "lb-unit", "--record", str(record), "--", str(child)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    return process, record


def test_exit_133_boots_again_any_other_exit_ends(tmp_path):
    # Exits 133 twice (two reboots), then 7: three boots in all, the supervisor ends with 7.
    counter = tmp_path / "count"
    process, record = _start(
        tmp_path,
        f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; [ $n -lt 3 ] && exit 133; exit 7",
    )
    output, _stderr = process.communicate(timeout=30)
    assert process.returncode == 7
    data = json.loads(record.read_text())
    assert data["boots"] == 3
    assert data["exits"] == [133, 133, 7]
    assert data["nspawn_pid"] is None
    assert data["supervisor_pid"] == process.pid
    assert "lb-unit rebooted (systemd-nspawn exit 133): boot 2" in output
    assert "boot 3" in output


def test_sigterm_is_forwarded_and_no_new_boot_starts(tmp_path):
    # The child exits 133 when it gets SIGTERM: the supervisor must not take it as a reboot.
    process, record = _start(tmp_path, "trap 'exit 133' TERM\nwhile :; do sleep 0.1; done")
    deadline = time.monotonic() + 20
    while not (record.exists() and json.loads(record.read_text()).get("nspawn_pid")) and time.monotonic() < deadline:
        time.sleep(0.05)
    child_pid = json.loads(record.read_text())["nspawn_pid"]
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=20)
    assert process.returncode == 133
    data = json.loads(record.read_text())
    assert data["boots"] == 1
    assert data["exits"] == [133]
    assert (
        not Path(f"/proc/{child_pid}/cmdline").exists() or Path(f"/proc/{child_pid}/stat").read_text().split()[2] == "Z"
    )


def test_usage_without_terminal_record_or_command():
    for argv in (
        [],
        ["--terminal", "t"],
        ["--terminal", "t", "--record", "r"],
        ["--terminal", "t", "--record", "r", "--"],
    ):
        result = subprocess.run([sys.executable, "-I", "-S", str(SCRIPT), *argv], capture_output=True, text=True)
        assert result.returncode == 1
        assert result.stderr.strip() == lab_supervisor.USAGE
    assert lab_supervisor.parse(["--terminal", "t", "--record", "r", "--", "nspawn", "-M", "t"]) == (
        "t",
        "r",
        ["nspawn", "-M", "t"],
    )
