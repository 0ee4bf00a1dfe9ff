"""Booting lab terminals: what the host needs, each terminal's layer, the nspawn start, and waiting until ready.

A terminal is ready when its systemd says ``running`` or ``degraded`` and a real SSH login with the
lab key works. Terminals boot in parallel; one whose ``systemd-nspawn`` exits early with an empty
console log (seen rarely on a loaded machine) boots again on a fresh layer, up to BOOT_ATTEMPTS in
all; any other failure stops every terminal of that boot and is reported, its console log kept.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ipm_tools.lab_files import HOST_KEY, PERIPHERALS_UNIT, terminal_files
from ipm_tools.lab_plan import LabError, TerminalSpec, in_netns, netns_addresses, netns_loopback_up
from ipm_tools.lab_procs import nspawn_alive, stop_terminals
from ipm_tools.lab_state import (
    BOOTS_FILE,
    CONSOLE_LOG,
    STATE_FILE,
    keep_failed_log,
    known_hosts_update,
    lab_lock,
    log_tail,
    ssh_options,
    terminal_dir,
    write_json,
)
from ipm_tools.release import ReleaseError, factory_install

SUPERVISOR = Path(__file__).with_name("lab_supervisor.py")

# The release every lab terminal has when it leaves the factory.
BASELINE_RELEASE = "2.3.1"
DEFAULT_BOOT_TIMEOUT_S = 180
BOOT_ATTEMPTS = 3
EARLY_EXIT = "exited during boot (empty console log)"

Progress = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


# --- the host ----------------------------------------------------------------------------------


def require_tools() -> None:
    missing = [tool for tool in ("debootstrap", "systemd-nspawn") if shutil.which(tool) is None]
    if missing:
        raise LabError(f"{' and '.join(missing)} not found: apt-get install debootstrap systemd-container")
    missing = [tool for tool in ("ssh", "ssh-keygen") if shutil.which(tool) is None]
    if missing:
        raise LabError(f"{' and '.join(missing)} not found: apt-get install openssh-client")


# Every terminal's systemd, journald, logind and dbus hold inotify instances; the kernel's default of
# 128 per user stops the 20th terminal or so ("Failed to allocate manager object: Too many open files").
HOST_LIMITS = {
    Path("/proc/sys/fs/inotify/max_user_instances"): 8192,
    Path("/proc/sys/fs/inotify/max_user_watches"): 524288,
}


def raise_host_limits(progress: Progress) -> None:
    """Raise the host's inotify limits to what many terminals need (never lowers them)."""
    for path, minimum in HOST_LIMITS.items():
        try:
            current = int(path.read_text())
            if current < minimum:
                path.write_text(f"{minimum}\n")
                progress(f"raised {path.relative_to('/proc/sys')} from {current} to {minimum} for lab terminals")
        except (OSError, ValueError) as error:
            progress(f"warning: could not raise {path} to {minimum} ({error}); many terminals may fail to boot")


# Run inside a network namespace with `ip netns exec`: exit 0 if ADDRESS:PORT accepts a connection.
_PORT_PROBE = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()\n"
    "except OSError:\n"
    "    sys.exit(1)\n"
)


def port_open(address: str, port: int, netns: str = "") -> bool:
    """Whether ADDRESS:PORT accepts a TCP connection, seen from the host's network or from NETNS."""
    if netns:
        probe = in_netns(netns, [sys.executable, "-I", "-S", "-c", _PORT_PROBE, address, str(port)])
        try:
            return subprocess.run(probe, capture_output=True, timeout=10, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


# --- network namespaces -------------------------------------------------------------------------

NETNS_DIR = Path("/run/netns")
TUN_DEVICE = Path("/dev/net/tun")


def _ip_json(netns: str, *args: str) -> str:
    result = subprocess.run(["ip", "-n", netns, "-j", *args], capture_output=True, text=True, check=False, timeout=20)
    return result.stdout if result.returncode == 0 else ""


def check_netns(spec: TerminalSpec) -> None:
    """A terminal booted into a network namespace: the namespace exists, has its address, lo is up."""
    if not spec.netns:
        return
    netns, address = spec.netns, spec.address
    if not (NETNS_DIR / netns).exists():
        raise LabError(f"network namespace {netns} does not exist: create it with `ip netns add {netns}`")
    if shutil.which("ip") is None:
        raise LabError("ip not found (terminals in network namespaces need it): apt-get install iproute2")
    present = netns_addresses(_ip_json(netns, "addr", "show"))
    if address not in present:
        raise LabError(
            f"terminal {spec.terminal_id}: address {address} is not on any interface of network namespace "
            f"{netns} (its addresses: {', '.join(present) or 'none'}): add it first, e.g. "
            f"`ip -n {netns} addr add {address}/24 dev IFACE`"
        )
    if not netns_loopback_up(_ip_json(netns, "link", "show")):
        raise LabError(
            f"network namespace {netns}: lo is down (the terminal's own address is reached over it): "
            f"`ip -n {netns} link set lo up`"
        )
    if not TUN_DEVICE.exists():
        raise LabError(f"{TUN_DEVICE} is missing (WireGuard in userspace needs it): modprobe tun")


# --- one terminal ------------------------------------------------------------------------------


def _mkdirs_like(base: Path, upper: Path, directory: str) -> Path:
    """Create ``directory`` in the layer with each component's mode and owner as in the base."""
    current_upper, current_base = upper, base
    for part in Path(directory).relative_to("/").parts:
        current_upper, current_base = current_upper / part, current_base / part
        if not current_upper.exists():
            current_upper.mkdir()
            if current_base.is_dir():
                info = current_base.stat()
                os.chmod(current_upper, info.st_mode & 0o7777)
                os.chown(current_upper, info.st_uid, info.st_gid)
    return current_upper


def prepare_layer(spec: TerminalSpec, base: Path, public_key: str) -> str:
    """Write the terminal's overlay layer; return its known_hosts line."""
    directory = terminal_dir(spec.terminal_id)
    if directory.exists():
        shutil.rmtree(directory)
    upper = directory / "upper"
    upper.mkdir(parents=True)
    upper.chmod(0o755)
    for item in terminal_files(spec, public_key, uuid.uuid4().hex):
        target = _mkdirs_like(base, upper, str(Path(item.path).parent)) / Path(item.path).name
        target.write_text(item.content, encoding="utf-8")
        target.chmod(item.mode)
    (_mkdirs_like(base, upper, "/root/.ssh")).chmod(0o700)
    wants = _mkdirs_like(base, upper, "/etc/systemd/system/multi-user.target.wants")
    (wants / PERIPHERALS_UNIT).symlink_to(f"/etc/systemd/system/{PERIPHERALS_UNIT}")
    host_key = upper / HOST_KEY.lstrip("/")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{spec.terminal_id}", "-f", str(host_key)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    install_application(spec, upper)
    key_type, key = host_key.with_suffix(".pub").read_text().split()[:2]
    return f"{spec.address} {key_type} {key} ipm-lab:{spec.terminal_id}"


def install_application(spec: TerminalSpec, upper: Path) -> str:
    """Lay the baseline release into the layer, as the factory does; returns its version."""
    try:
        factory_install(upper, BASELINE_RELEASE, listen_address=spec.address)
    except ReleaseError as error:
        raise LabError(f"terminal {spec.terminal_id}: baseline release {BASELINE_RELEASE}: {error}") from None
    return BASELINE_RELEASE


def start_terminal(spec: TerminalSpec, base: Path) -> dict:
    """Boot the terminal in the background and record its state.

    The terminal's process is its supervisor (lab_supervisor.py, its own session): it runs the
    nspawn command, and runs it again whenever the system inside reboots (exit status 133).
    """
    directory = terminal_dir(spec.terminal_id)
    upper = directory / "upper"
    nspawn = [
        "systemd-nspawn",
        "--boot",
        "--register=no",
        "--keep-unit",
        "--console=passive",
        "--link-journal=no",
        "-M",
        spec.terminal_id,
        f"--overlay={base}:{upper}:/",
        "-D",
        str(base),
    ]
    if spec.netns:
        # Its own network: WireGuard in userspace (wireguard-go: /dev/net/tun) and nftables need
        # CAP_NET_ADMIN, which then acts on the namespace only, never on the host's network.
        nspawn[1:1] = [
            f"--network-namespace-path={NETNS_DIR / spec.netns}",
            f"--bind={TUN_DEVICE}",
            "--capability=CAP_NET_ADMIN",
        ]
    # -I -S: the standard library only, no site packages (less memory, nothing of the venv needed).
    command = [
        sys.executable,
        "-I",
        "-S",
        str(SUPERVISOR),
        "--terminal",
        spec.terminal_id,
        "--record",
        str(directory / BOOTS_FILE),
        "--",
        *nspawn,
    ]
    with open(directory / CONSOLE_LOG, "w") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            cwd="/",
        )
    state = {**spec.to_dict(), "pid": process.pid, "base": str(base), "started_at": time.time()}
    write_json(directory / STATE_FILE, state)
    return state


def _ssh(address: str, command: str, timeout: float, netns: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        in_netns(netns, ["ssh", *ssh_options(), f"root@{address}", command]),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def wait_ready(state: dict, timeout_s: float) -> tuple[str, list[str]]:
    """Wait until the terminal's systemd is `running` or `degraded` and sshd lets us in.

    Returns (system state, failed units); raises LabError on timeout or if nspawn exits.
    """
    terminal, address, netns = state["terminal_id"], state["address"], state.get("netns") or ""
    deadline = time.monotonic() + timeout_s
    last = "sshd not answering yet"
    while time.monotonic() < deadline:
        if not nspawn_alive(state):
            raise LabError(f"terminal {terminal}: systemd-nspawn exited during boot ({log_tail(terminal)})")
        if not port_open(address, 22, netns):
            time.sleep(0.3)
            continue
        remaining = max(1.0, deadline - time.monotonic())
        try:
            result = _ssh(
                address,
                "systemctl is-system-running --wait; systemctl list-units --failed --plain --no-legend",
                timeout=remaining,
                netns=netns,
            )
        except subprocess.TimeoutExpired:
            last = "systemctl is-system-running --wait did not return"
            break
        lines = result.stdout.split("\n")
        system_state = lines[0].strip() if lines else ""
        if result.returncode == 255:
            last = f"ssh: {result.stderr.strip() or 'connection failed'}"
            time.sleep(0.5)
            continue
        if system_state in ("running", "degraded"):
            failed = [line.split()[0] for line in lines[1:] if line.strip()]
            return system_state, failed
        last = f"systemd state {system_state or '?'}"
        time.sleep(0.5)
    where = f"{address} in network namespace {netns}" if netns else address
    raise LabError(f"terminal {terminal} ({where}) not ready after {timeout_s:.0f}s: {last}")


# --- many terminals ----------------------------------------------------------------------------


def start_terminals(specs: list[TerminalSpec], base: Path, public_key: str, progress: Progress) -> list[dict]:
    """Write every layer, record the host keys, start every nspawn; returns their states.

    The caller holds the lab lock. If anything fails, whatever was started or written is stopped
    and removed again before the error goes on.
    """
    started: list[dict] = []
    try:
        known = [prepare_layer(spec, base, public_key) for spec in specs]
        known_hosts_update({spec.address for spec in specs}, known)
        for spec in specs:
            started.append(start_terminal(spec, base))
        progress(f"booting {len(started)} terminal(s): {', '.join(s['terminal_id'] for s in started) or 'none'}")
    except BaseException:
        by_id = {state["terminal_id"]: state for state in started}
        stop_terminals([by_id.get(s.terminal_id, s.to_dict()) for s in specs], _quiet)
        raise
    return started


def _boot_again_after_early_exit(
    error: LabError,
    state: dict,
    specs_by_id: dict[str, TerminalSpec],
    base: Path,
    public_key: str,
    timeout: float,
    progress: Progress,
) -> tuple[dict, tuple[str, list[str]]] | None:
    """Boot a terminal again when systemd-nspawn exited early with an empty console log.

    Seen rarely on a loaded machine while many terminals boot at once (nspawn dies before the
    container prints anything); a second boot on a fresh layer succeeds. Any other failure, or a
    terminal that keeps failing, is reported. Returns (new state, wait_ready's answer) or None.
    """
    if EARLY_EXIT not in str(error):
        return None
    spec = specs_by_id.get(state["terminal_id"])
    if spec is None:
        return None
    for attempt in range(2, BOOT_ATTEMPTS + 1):
        progress(
            f"{spec.terminal_id}: systemd-nspawn exited early with an empty log; booting again (attempt {attempt})"
        )
        with lab_lock():
            stop_terminals([state], _quiet)
            known = prepare_layer(spec, base, public_key)
            known_hosts_update({spec.address}, [known])
            state = start_terminal(spec, base)
        try:
            return state, wait_ready(state, timeout)
        except LabError as again:
            if EARLY_EXIT not in str(again):
                kept = keep_failed_log(state["terminal_id"])  # before the stop removes the terminal's directory
                with lab_lock():
                    stop_terminals([state], _quiet)
                raise LabError(f"{again}; console log kept at {kept}") from None
    with lab_lock():
        stop_terminals([state], _quiet)
    return None


def wait_all_ready(
    started: list[dict],
    specs: list[TerminalSpec],
    base: Path,
    public_key: str,
    timeout: float,
    started_at: float,
    progress: Progress,
) -> None:
    """Wait for every started terminal in parallel, each printing a line when ready.

    A terminal that does not come up (after its boots again, see the module docstring) has its
    console log kept under FAILED_LOGS; then all of STARTED are stopped and LabError says why.
    STARTED is updated in place with the states of terminals booted again.
    """
    failures: list[str] = []
    specs_by_id = {spec.terminal_id: spec for spec in specs}
    try:
        with ThreadPoolExecutor(max_workers=min(32, len(started))) as pool:
            futures = {pool.submit(wait_ready, state, timeout): state for state in started}
            for future, state in futures.items():
                try:
                    system_state, failed = future.result()
                except LabError as error:
                    kept = keep_failed_log(state["terminal_id"])  # a boot again would remove the directory
                    retried = _boot_again_after_early_exit(
                        error, state, specs_by_id, base, public_key, timeout, progress
                    )
                    if retried is None:
                        failures.append(str(error))
                        progress(f"{state['terminal_id']}: FAILED ({error}; console log kept at {kept})")
                        continue
                    started[started.index(state)] = retried[0]
                    state, (system_state, failed) = retried
                detail = f" (failed units: {', '.join(failed)})" if failed else ""
                elapsed = time.monotonic() - started_at
                progress(f"{state['terminal_id']}: ready on {state['address']}, {system_state}{detail}, {elapsed:.1f}s")
    except BaseException:
        with lab_lock():
            stop_terminals(started, progress)
        raise
    if failures:
        with lab_lock():
            stop_terminals(started, progress)
        raise LabError(f"{len(failures)} of {len(started)} terminal(s) did not boot, all stopped: {failures[0]}")
