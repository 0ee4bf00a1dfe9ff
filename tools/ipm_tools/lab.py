"""ipm-lab: real Debian lab terminals (systemd-nspawn containers) on this machine.

Each terminal boots the shared, cached base tree (debootstrap bookworm with systemd and sshd) on
its own copy-on-write overlay layer, with its hostname, its sshd on its own loopback address, its
hardware identity, simulated peripherals and the baseline application. See docs/lab.md.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ipm_tools import PROJECT_ROOT
from ipm_tools.lab_files import HOST_KEY, PERIPHERALS_UNIT, terminal_files
from ipm_tools.lab_plan import (
    BASE_MASKED_UNITS,
    BASE_MIRROR,
    BASE_PACKAGES,
    BASE_SUITE,
    LabError,
    TerminalSpec,
    allocate_addresses,
    base_recipe,
    check_specs,
    count_names,
    recipe_hash,
    spec_for,
    specs_from_inventory,
    validate_terminal_id,
)

STATE_DIR = Path("/var/lib/ipm-lab")
TERMINALS_DIR = STATE_DIR / "terminals"
SSH_DIR = STATE_DIR / "ssh"
LAB_KEY = SSH_DIR / "id_ed25519"
KNOWN_HOSTS = SSH_DIR / "known_hosts"
FAILED_LOGS = STATE_DIR / "failed"
CACHE_DIR = Path("/var/cache/ipm-lab")
DEB_CACHE = CACHE_DIR / "debs"
BASE_MARKER = ".ipm-lab-base.json"
STATE_FILE = "terminal.json"
NSPAWN_PROPAGATE = Path("/run/systemd/nspawn/propagate")
HEALTH_PORT = 8080
# The release every lab terminal has when it leaves the factory.
BASELINE_RELEASE = "2.3.1"
DEFAULT_BOOT_TIMEOUT_S = 180
STOP_TIMEOUT_S = 20

PROG = "ipm-lab"


def ssh_options() -> list[str]:
    """SSH options to reach lab terminals: the lab key, their recorded host keys, no user config."""
    return [
        "-F",
        "/dev/null",
        "-i",
        str(LAB_KEY),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={KNOWN_HOSTS}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "LogLevel=ERROR",
    ]


def _say(message: str) -> None:
    print(message, flush=True)


# --- machine checks ----------------------------------------------------------------------------


def require_root(command: str) -> None:
    if os.geteuid() != 0:
        raise LabError(
            f"`{PROG} {command}` must run as root (it boots and stops systemd-nspawn containers): sudo {PROG} {command}"
        )


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


def raise_host_limits(progress: Callable[[str], None]) -> None:
    """Raise the host's inotify limits to what many terminals need (never lowers them)."""
    for path, minimum in HOST_LIMITS.items():
        try:
            current = int(path.read_text())
            if current < minimum:
                path.write_text(f"{minimum}\n")
                progress(f"raised {path.relative_to('/proc/sys')} from {current} to {minimum} for lab terminals")
        except (OSError, ValueError) as error:
            progress(f"warning: could not raise {path} to {minimum} ({error}); many terminals may fail to boot")


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """Exclusive lock: one `up`/`down` changes the lab at a time (others wait their turn)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def lab_lock() -> contextlib.AbstractContextManager[None]:
    return _flock(STATE_DIR / "lock")


# --- processes ---------------------------------------------------------------------------------


def _proc_state(pid: int) -> str | None:
    """The process state letter, or None if there is no such process (zombies count as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state = stat.rsplit(")", 1)[1].split()[0]
    return None if state in ("Z", "X") else state


def _is_nspawn_of(pid: int, terminal_id: str) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    args = [arg.decode(errors="replace") for arg in argv]
    return bool(args) and args[0].endswith("systemd-nspawn") and terminal_id in args and "-M" in args


def nspawn_alive(state: dict) -> bool:
    pid = state.get("pid")
    return bool(pid) and _proc_state(pid) is not None and _is_nspawn_of(pid, state["terminal_id"])


def container_pids(upper: Path) -> list[int]:
    """Processes that run inside a terminal: those whose root is the overlay with this upper layer.

    Found through /proc/<pid>/mountinfo, so it also finds a terminal whose nspawn was killed.
    """
    needle = f"upperdir={upper},".encode()
    needle_end = f"upperdir={upper}\n".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            info = (entry / "mountinfo").read_bytes()
        except OSError:
            continue
        if (needle in info or needle_end in info) and _proc_state(int(entry.name)) is not None:
            pids.append(int(entry.name))
    return pids


def rss_kib(pids: list[int]) -> int:
    """Sum of VmRSS over ``pids`` (KiB)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == str(path) or point.startswith(prefix):
            mounts.append(point)
    return sorted(mounts, key=len, reverse=True)


# --- state -------------------------------------------------------------------------------------


def terminal_dir(terminal_id: str) -> Path:
    return TERMINALS_DIR / terminal_id


def load_states() -> dict[str, dict]:
    """Every terminal the lab knows of (running or left over), by id."""
    states = {}
    if not TERMINALS_DIR.is_dir():
        return states
    for directory in sorted(TERMINALS_DIR.iterdir()):
        try:
            states[directory.name] = json.loads((directory / STATE_FILE).read_text())
        except (OSError, ValueError):
            states[directory.name] = {"terminal_id": directory.name, "pid": None, "address": None}
    return states


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _known_hosts_update(remove: set[str], add: list[str]) -> None:
    """Drop the lines of addresses in ``remove``, append ``add``; atomic replace."""
    SSH_DIR.mkdir(parents=True, exist_ok=True)
    lines = KNOWN_HOSTS.read_text().splitlines() if KNOWN_HOSTS.exists() else []
    kept = [line for line in lines if line.split(" ", 1)[0] not in remove]
    tmp = KNOWN_HOSTS.with_suffix(".tmp")
    tmp.write_text("".join(f"{line}\n" for line in [*kept, *add]))
    tmp.chmod(0o644)
    tmp.replace(KNOWN_HOSTS)


# --- base tree ---------------------------------------------------------------------------------


def base_path() -> Path:
    return CACHE_DIR / f"base-{recipe_hash(base_recipe())}"


def _adjust_base(tree: Path) -> None:
    """Make a debootstrap tree a base every terminal can share (per-terminal parts go to its layer)."""
    for key in (tree / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # Empty machine-id: each terminal writes its own in its layer.
    (tree / "etc/machine-id").write_text("")
    masked = tree / "etc/systemd/system"
    for unit in BASE_MASKED_UNITS:
        link = masked / unit
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to("/dev/null")
    for wants in masked.glob("*.wants"):
        for link in wants.iterdir():
            if link.name in BASE_MASKED_UNITS or link.name == "e2scrub_reap.service":
                link.unlink()
    for cache in (tree / "var/cache/apt/archives").glob("*.deb"):
        cache.unlink()


def ensure_base(progress: Callable[[str], None]) -> Path:
    """The cached base tree of the current recipe, built once (atomically) if missing."""
    base = base_path()
    if (base / BASE_MARKER).is_file():
        return base
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with _flock(CACHE_DIR / "build.lock"):
        if (base / BASE_MARKER).is_file():
            return base
        # A crash mid-build leaves only a temporary directory, never something named like a base.
        for stale in CACHE_DIR.glob(".base-*.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = CACHE_DIR / f".{base.name}.tmp-{os.getpid()}"
        log = CACHE_DIR / f"{base.name}.build.log"
        DEB_CACHE.mkdir(parents=True, exist_ok=True)
        progress(f"building base tree {base} (debootstrap {BASE_SUITE}, takes a minute or two; log: {log})")
        started = time.monotonic()
        command = [
            "debootstrap",
            "--variant=minbase",
            f"--cache-dir={DEB_CACHE}",
            f"--include={','.join(BASE_PACKAGES)}",
            BASE_SUITE,
            str(tmp),
            BASE_MIRROR,
        ]
        with open(log, "w") as output:
            result = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            last = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            raise LabError(f"debootstrap failed (exit {result.returncode}): {last[0]} (full log: {log})")
        _adjust_base(tmp)
        (tmp / BASE_MARKER).write_text(json.dumps(base_recipe(), indent=2) + "\n")
        tmp.rename(base)
        progress(f"base tree ready in {time.monotonic() - started:.0f}s: {base}")
    return base


def ensure_lab_key() -> str:
    """The lab's SSH key pair (generated once); returns the public key."""
    SSH_DIR.mkdir(parents=True, exist_ok=True)
    SSH_DIR.chmod(0o700)
    if not LAB_KEY.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ipm-lab", "-f", str(LAB_KEY)],
            check=True,
            stdin=subprocess.DEVNULL,
        )
    return LAB_KEY.with_suffix(".pub").read_text().strip()


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


def install_application(spec: TerminalSpec, upper: Path) -> str | None:
    """Lay the baseline release into the layer, when the application's release tool exists."""
    try:
        from ipm_tools.release import ReleaseError, factory_install
    except ModuleNotFoundError as error:
        if error.name != "ipm_tools.release":
            raise
        return None
    try:
        factory_install(upper, BASELINE_RELEASE, listen_address=spec.address)
    except ReleaseError as error:
        raise LabError(f"terminal {spec.terminal_id}: baseline release {BASELINE_RELEASE}: {error}") from None
    return BASELINE_RELEASE


def start_terminal(spec: TerminalSpec, base: Path) -> dict:
    """Boot the terminal in the background (its own session) and record its state."""
    directory = terminal_dir(spec.terminal_id)
    upper = directory / "upper"
    command = [
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
    with open(directory / "console.log", "w") as log:
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
    _write_json(directory / STATE_FILE, state)
    return state


def container_init(state: dict) -> int | None:
    """Host pid of the terminal's systemd (PID 1 inside): the child of its systemd-nspawn."""
    pid = state.get("pid")
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        status = Path(f"/proc/{children[0]}/status").read_text()
    except (OSError, IndexError):
        return None
    nspid = [line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")]
    return int(children[0]) if nspid and nspid[0][-1] == "1" else None


def system_state(state: dict) -> str:
    """`systemctl is-system-running` inside the terminal, entered with nsenter (no SSH handshake)."""
    init = container_init(state)
    if init is None:
        return "unknown (no systemd found in the container)"
    try:
        result = subprocess.run(
            ["nsenter", "-t", str(init), "-m", "-p", "-u", "-i", "systemctl", "is-system-running"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "unknown (systemctl did not answer)"
    return result.stdout.strip() or f"unknown ({result.stderr.strip() or 'no answer'})"


def _ssh(address: str, command: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", *ssh_options(), f"root@{address}", command],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def wait_ready(state: dict, timeout_s: float) -> tuple[str, list[str]]:
    """Wait until the terminal's systemd is `running` or `degraded` and sshd lets us in.

    Returns (system state, failed units); raises LabError on timeout or if nspawn exits.
    """
    terminal, address = state["terminal_id"], state["address"]
    deadline = time.monotonic() + timeout_s
    last = "sshd not answering yet"
    while time.monotonic() < deadline:
        if not nspawn_alive(state):
            raise LabError(f"terminal {terminal}: systemd-nspawn exited during boot ({_log_tail(terminal)})")
        if not _port_open(address, 22):
            time.sleep(0.3)
            continue
        remaining = max(1.0, deadline - time.monotonic())
        try:
            result = _ssh(
                address,
                "systemctl is-system-running --wait; systemctl list-units --failed --plain --no-legend",
                timeout=remaining,
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
    raise LabError(f"terminal {terminal} ({address}) not ready after {timeout_s:.0f}s: {last}")


def _log_tail(terminal: str) -> str:
    log = terminal_dir(terminal) / "console.log"
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no console log"
    return f"last console line: {lines[-1].strip()}" if lines else "empty console log"


def _keep_failed_log(terminal: str) -> Path | None:
    log = terminal_dir(terminal) / "console.log"
    if not log.exists():
        return None
    FAILED_LOGS.mkdir(parents=True, exist_ok=True)
    kept = FAILED_LOGS / f"{terminal}-{time.strftime('%Y%m%dT%H%M%S')}.log"
    shutil.copyfile(log, kept)
    return kept


def stop_terminals(states: list[dict], progress: Callable[[str], None]) -> None:
    """SIGTERM every nspawn, wait, kill what is left, unmount, remove layers and known hosts."""
    for state in states:
        if nspawn_alive(state):
            os.kill(state["pid"], signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for state in states:
        while nspawn_alive(state) and time.monotonic() < deadline:
            time.sleep(0.1)
        if nspawn_alive(state):
            os.kill(state["pid"], signal.SIGKILL)
    for state in states:
        terminal = state["terminal_id"]
        directory = terminal_dir(terminal)
        # An nspawn killed hard leaves its container running: kill what still runs on the layer.
        for _attempt in range(50):
            pids = container_pids(directory / "upper")
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for mount in _mounts_under(directory):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)
        # nspawn leaves this behind when /run is not a tmpfs (it refuses to delete on a disk file system).
        propagate = NSPAWN_PROPAGATE / terminal
        if propagate.is_dir() and not _mounts_under(propagate):
            shutil.rmtree(propagate, ignore_errors=True)
        progress(f"{terminal}: stopped")
    addresses = {state["address"] for state in states if state.get("address")}
    if addresses:
        _known_hosts_update(addresses, [])


def clean_leftovers(progress: Callable[[str], None]) -> dict[str, dict]:
    """Remove terminals whose nspawn is gone (after a crash); return the running ones."""
    running: dict[str, dict] = {}
    stale: dict[str, dict] = {}
    for terminal, state in load_states().items():
        (running if nspawn_alive(state) else stale).__setitem__(terminal, state)
    if stale:
        progress(f"cleaning {len(stale)} left-over terminal(s): {', '.join(sorted(stale))}")
        stop_terminals(list(stale.values()), lambda _message: None)
    return running


# --- commands ----------------------------------------------------------------------------------


def _read_inventory(path: str) -> list[TerminalSpec]:
    source = Path(path)
    if not source.exists():
        raise LabError(f"inventory {path} does not exist: give a file or directory Ansible can read")
    tool = Path(sys.executable).with_name("ansible-inventory")
    executable = str(tool) if tool.exists() else shutil.which("ansible-inventory")
    if executable is None:
        raise LabError("ansible-inventory not found: install the project (pip install -e .) or ansible-core")
    env = dict(os.environ)
    if "ANSIBLE_CONFIG" not in env and not Path("ansible.cfg").exists():
        env["ANSIBLE_CONFIG"] = str(PROJECT_ROOT / "ansible.cfg")
    result = subprocess.run([executable, "-i", path, "--list"], capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise LabError(f"ansible-inventory -i {path} --list failed: {detail}")
    try:
        data = json.loads(result.stdout)
    except ValueError:
        raise LabError(f"ansible-inventory -i {path} --list did not print JSON") from None
    return specs_from_inventory(data, path)


def requested_specs(args: argparse.Namespace, running: dict[str, dict]) -> list[TerminalSpec]:
    """The terminals `up` was asked for, with addresses (reusing those of running terminals)."""
    if args.inventory:
        return _read_inventory(args.inventory)
    names = args.names or count_names(args.count or 1, args.prefix)
    names = [validate_terminal_id(name, "terminal id") for name in names]
    used = {state["address"] for state in running.values() if state.get("address")}
    new = [name for name in names if name not in running]
    addresses = iter(allocate_addresses(len(new), used))
    specs = []
    for index, name in enumerate(names):
        if name in running:
            specs.append(TerminalSpec.from_dict(running[name]))
        else:
            specs.append(spec_for(name, next(addresses), index))
    return specs


BOOT_ATTEMPTS = 3


def _boot_again_after_early_exit(error, state, specs_by_id, base, public_key, timeout):
    """Boot a terminal again when systemd-nspawn exited early with an empty console log.

    Seen rarely on a loaded machine while many terminals boot at once (nspawn dies before the
    container prints anything); a second boot on a fresh layer succeeds. Any other failure, or a
    terminal that keeps failing, is reported. Returns (new state, wait_ready's answer) or None.
    """
    if "exited during boot (empty console log)" not in str(error):
        return None
    spec = specs_by_id.get(state["terminal_id"])
    if spec is None:
        return None
    for attempt in range(2, BOOT_ATTEMPTS + 1):
        _say(f"{spec.terminal_id}: systemd-nspawn exited early with an empty log; booting again (attempt {attempt})")
        with lab_lock():
            stop_terminals([state], lambda _message: None)
            known = prepare_layer(spec, base, public_key)
            _known_hosts_update({spec.address}, [known])
            state = start_terminal(spec, base)
        try:
            return state, wait_ready(state, timeout)
        except LabError as again:
            if "exited during boot (empty console log)" not in str(again):
                kept = _keep_failed_log(state["terminal_id"])  # before the stop removes the terminal's directory
                with lab_lock():
                    stop_terminals([state], lambda _message: None)
                raise LabError(f"{again}; console log kept at {kept}") from None
    with lab_lock():
        stop_terminals([state], lambda _message: None)
    return None


def command_up(args: argparse.Namespace) -> int:
    require_root("up")
    require_tools()
    if args.count is not None and args.count < 1:
        raise LabError(f"--count must be at least 1, got {args.count}")
    if args.count is not None:
        count_names(args.count, args.prefix)
    started_at = time.monotonic()
    with lab_lock():
        running = clean_leftovers(_say)
        specs = requested_specs(args, running)
        check_specs(specs, {terminal: state["address"] for terminal, state in running.items()})
        for spec in specs:
            if spec.terminal_id not in running and _port_open(spec.address, 22):
                raise LabError(
                    f"terminal {spec.terminal_id}: {spec.address}:22 is already in use by something that is "
                    "not a lab terminal: free that address or choose another"
                )
        base = ensure_base(_say)
        public_key = ensure_lab_key()
        raise_host_limits(_say)
        to_start = [spec for spec in specs if spec.terminal_id not in running]
        for spec in specs:
            if spec.terminal_id in running:
                _say(f"{spec.terminal_id}: already up on {spec.address}")
        started: list[dict] = []
        try:
            known = [prepare_layer(spec, base, public_key) for spec in to_start]
            _known_hosts_update({spec.address for spec in to_start}, known)
            for spec in to_start:
                started.append(start_terminal(spec, base))
            _say(f"booting {len(started)} terminal(s): {', '.join(s['terminal_id'] for s in started) or 'none'}")
        except BaseException:
            by_id = {state["terminal_id"]: state for state in started}
            stop_terminals([by_id.get(s.terminal_id, s.to_dict()) for s in to_start], lambda _message: None)
            raise
    if not started:
        return 0
    failures: list[str] = []
    specs_by_id = {spec.terminal_id: spec for spec in to_start}
    try:
        with ThreadPoolExecutor(max_workers=min(32, len(started))) as pool:
            futures = {pool.submit(wait_ready, state, args.timeout): state for state in started}
            for future, state in futures.items():
                try:
                    system_state, failed = future.result()
                except LabError as error:
                    kept = _keep_failed_log(state["terminal_id"])  # a boot again would remove the directory
                    retried = _boot_again_after_early_exit(error, state, specs_by_id, base, public_key, args.timeout)
                    if retried is None:
                        failures.append(str(error))
                        _say(f"{state['terminal_id']}: FAILED ({error}; console log kept at {kept})")
                        continue
                    started[started.index(state)] = retried[0]
                    state, (system_state, failed) = retried
                detail = f" (failed units: {', '.join(failed)})" if failed else ""
                elapsed = time.monotonic() - started_at
                _say(f"{state['terminal_id']}: ready on {state['address']}, {system_state}{detail}, {elapsed:.1f}s")
    except BaseException:
        with lab_lock():
            stop_terminals(started, _say)
        raise
    if failures:
        with lab_lock():
            stop_terminals(started, _say)
        raise LabError(f"{len(failures)} of {len(started)} terminal(s) did not boot, all stopped: {failures[0]}")
    _say(f"{len(started)} terminal(s) ready in {time.monotonic() - started_at:.1f}s")
    return 0


def _selected(names: list[str], missing_ok: bool = False) -> list[dict]:
    states = load_states()
    if missing_ok:
        names = [name for name in names if name in states]
        if not names:
            return []
    for name in names:
        if name not in states:
            known = ", ".join(states) or "none"
            raise LabError(f"no lab terminal named {name!r} (lab terminals: {known})")
    return [states[name] for name in names] if names else list(states.values())


def command_down(args: argparse.Namespace) -> int:
    require_root("down")
    with lab_lock():
        states = _selected(args.names, args.missing_ok)
        if not states:
            _say("no lab terminal to stop")
            return 0
        stop_terminals(states, _say)
    return 0


def app_health(address: str) -> dict | None:
    """The application's /health answer, or None if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{address}:{HEALTH_PORT}/health", timeout=2) as response:
            return json.loads(response.read().decode())
    except (OSError, ValueError):
        return None


def terminal_status(state: dict) -> dict:
    """One row of `status`: terminal, address, state, pid, app health."""
    row = {
        "terminal": state["terminal_id"],
        "address": state.get("address"),
        "pid": state.get("pid"),
        "model": state.get("model"),
        "state": "stopped",
        "app": None,
    }
    if not nspawn_alive(state):
        row["state"] = "stale (run ipm-lab up or down to clean)"
        return row
    row["state"] = system_state(state)
    if not _port_open(state["address"], 22):
        row["state"] += " (sshd not answering)"
    row["app"] = app_health(state["address"])
    return row


def _app_cell(health: dict | None) -> str:
    if health is None:
        return "-"
    return f"{health.get('status', '?')} {health.get('version', '?')}"


def command_status(args: argparse.Namespace) -> int:
    require_root("status")
    states = _selected(args.names)
    with ThreadPoolExecutor(max_workers=16) as pool:
        rows = list(pool.map(terminal_status, states))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        _say("no lab terminal (start some with: ipm-lab up --count 2)")
        return 0
    table = [("TERMINAL", "ADDRESS", "STATE", "PID", "APP")]
    table += [(r["terminal"], r["address"] or "-", r["state"], str(r["pid"] or "-"), _app_cell(r["app"])) for r in rows]
    widths = [max(len(row[column]) for row in table) for column in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def inventory_document(states: list[dict]) -> dict:
    """An Ansible inventory (YAML/JSON) of running lab terminals, ready to use with StrictHostKeyChecking."""
    hosts = {}
    for state in states:
        hosts[state["terminal_id"]] = {
            "ansible_host": state["address"],
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(LAB_KEY),
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={KNOWN_HOSTS} -o StrictHostKeyChecking=yes",
            "ipm_model": state.get("model"),
            "ipm_serial_number": state.get("serial_number"),
        }
    return {"all": {"children": {"lab": {"hosts": hosts}}}}


def command_inventory(args: argparse.Namespace) -> int:
    require_root("inventory")
    # Running terminals only: a stale record (its nspawn gone) has nothing to connect to.
    running = [state for state in _selected(args.names) if nspawn_alive(state)]
    print(json.dumps(inventory_document(running), indent=2))
    return 0


def command_ssh(args: argparse.Namespace) -> int:
    require_root("ssh")
    validate_terminal_id(args.terminal, "terminal id")
    (state,) = _selected([args.terminal])
    if not nspawn_alive(state):
        raise LabError(f"terminal {args.terminal} is not running: ipm-lab up {args.terminal}")
    argv = ["ssh", *ssh_options(), "-o", "BatchMode=no", f"root@{state['address']}", *args.command]
    if sys.stdin.isatty() and not args.command:
        argv.insert(1, "-t")
    sys.stdout.flush()
    os.execvp("ssh", argv)
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Real Debian lab terminals (systemd-nspawn containers with sshd) on this machine. See docs/lab.md.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up",
        help="boot terminals (by count, names or inventory) and wait until they are ready",
        description="Boot lab terminals and wait until each one's systemd is running (or degraded) and sshd "
        "answers. Terminals already up are left as they are; left-overs of a crash are cleaned first.",
    )
    which = up.add_mutually_exclusive_group()
    which.add_argument("--count", type=int, metavar="N", help="boot N terminals named PREFIX01.. (default: 1)")
    which.add_argument(
        "--inventory",
        metavar="PATH",
        help="boot exactly the hosts of this Ansible inventory (ansible_host = address; ipm_model, "
        "ipm_serial_number, ipm_interfaces when present)",
    )
    which.add_argument("names", nargs="*", default=[], metavar="TERMINAL", help="terminal ids to boot")
    up.add_argument("--prefix", default="lab-", help="name prefix with --count (default: lab-)")
    up.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_BOOT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"give up on a terminal not ready after this long (default: {DEFAULT_BOOT_TIMEOUT_S})",
    )
    up.set_defaults(handler=command_up)

    down = commands.add_parser(
        "down",
        help="stop terminals (all, or the named ones) and remove their layers",
        description="Stop lab terminals (SIGTERM, systemd halts inside), then remove their overlay layers and "
        "host keys: nothing is left running or mounted.",
    )
    down.add_argument("names", nargs="*", metavar="TERMINAL", help="terminals to stop (default: all)")
    down.add_argument(
        "--missing-ok", action="store_true", help="named terminals that are not up are not an error (for cleanups)"
    )
    down.set_defaults(handler=command_down)

    status = commands.add_parser(
        "status",
        help="table of terminals: address, state, pid, app health",
        description="Show each lab terminal: address, systemd state (read inside the container), nspawn pid, "
        "application health (GET /health on port 8080).",
    )
    status.add_argument("names", nargs="*", metavar="TERMINAL", help="terminals to show (default: all)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(handler=command_status)

    ssh = commands.add_parser(
        "ssh",
        help="open a shell, or run a command, on a terminal over SSH",
        description="SSH into a lab terminal as root with the lab key (host key checked).",
    )
    ssh.add_argument("terminal", metavar="TERMINAL", help="terminal id")
    ssh.add_argument("command", nargs=argparse.REMAINDER, help="command to run (default: a login shell)")
    ssh.set_defaults(handler=command_ssh)

    inventory = commands.add_parser(
        "inventory",
        help="print an Ansible inventory (JSON) of running terminals",
        description="Print an Ansible inventory of lab terminals with the SSH settings to reach them.",
    )
    inventory.add_argument("names", nargs="*", metavar="TERMINAL", help="terminals to include (default: all)")
    inventory.set_defaults(handler=command_inventory)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except LabError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
