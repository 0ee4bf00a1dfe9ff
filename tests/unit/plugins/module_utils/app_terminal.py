"""A terminal in a temporary directory, for the delivery and bake tests: no root, no systemd, a real ipm-app.

``terminal(tmp_path)`` lays release 2.3.1 into a temporary root as the factory does, with
``listen_address: 127.0.0.1``; ``AppService`` is the service control that deliver() and rollback()
drive: it starts the release ``current`` points at (its own ``bin/ipm-app``, as the unit's
ExecStart does) on a free port, and stops it. The running process is known by a pid file under the
root, so a restart done by a detached child (deliver_detached, the bake's rollback) is stopped by
the test just the same.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ansible_collections.ipm.fleet.plugins.module_utils.release_switch import DeliveryError
from ipm_tools import release


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def terminal(tmp_path: Path, version: str = "2.3.1", **parameters) -> Path:
    """A root tree with VERSION installed as at the factory (unit, current, parameters), nothing running."""
    root = tmp_path / "terminal"
    root.mkdir()
    release.factory_install(
        root, version, parameters=dict(parameters, transaction_interval_s=0), listen_address="127.0.0.1"
    )
    return root


def built(version: str, out: Path, healthy_for_s: float | None = None) -> release.BuiltRelease:
    """The artifact of VERSION and its sha256, as the controller copies it to a terminal.

    HEALTHY_FOR_S: the seconds a release built broken on purpose (2.4.1) answers healthy after its
    start, instead of its definition's (shorter tests).
    """
    out.mkdir(exist_ok=True)
    releases_dir = release.RELEASES_DIR
    if healthy_for_s is not None:
        releases_dir = out / f"definitions-{version}"
        releases_dir.mkdir(exist_ok=True)
        definition = (release.RELEASES_DIR / f"{version}.yml").read_text()
        assert "\ndefect: health-fails-after-start\n" in definition, f"{version} has no defect to shorten"
        (releases_dir / f"{version}.yml").write_text(
            definition.replace(
                "\ndefect: health-fails-after-start\n",
                "\ndefect: {kind: health-fails-after-start, healthy_for_s: %s}\n" % healthy_for_s,
            )
        )
    return release.build_release(version, out, releases_dir)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has stopped
    except (FileNotFoundError, IndexError):
        return False


class AppService:
    """daemon_reload / reset_failed / restart / stop for ipm-app running from ROOT on 127.0.0.1:PORT."""

    def __init__(self, root: Path, port: int):
        self.root = Path(root)
        self.port = port
        self.pid_file = self.root / "run" / "ipm-app.pid"
        self.reloads = 0

    def daemon_reload(self) -> None:
        self.reloads += 1

    def reset_failed(self) -> None:
        pass

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _running(pid) else None

    def restart(self) -> None:
        self.stop()
        launcher = self.root / "opt/ipm/app/current/bin/ipm-app"
        if not launcher.exists():
            raise DeliveryError(f"no {launcher}: nothing to start")
        log = self.root / "var/log/ipm"
        log.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, str(launcher), "--config", str(self.root / "etc/ipm/app.yml"), "--port", str(self.port),
            "--data-dir", str(self.root / "var/lib/ipm/app"), "--log-file", str(log / "app.log"),
            "--hardware-file", str(self.root / "etc/ipm/hardware.yml"),
        ]  # fmt: skip
        with open(log / "stderr.log", "ab") as stderr:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
            )
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(str(process.pid))

    def stop(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _running(pid):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):  # ours: reap it; started by a detached child: not ours
            os.waitpid(pid, 0)
        self.pid_file.unlink(missing_ok=True)
