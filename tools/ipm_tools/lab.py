"""ipm-lab: the command line of the lab (real Debian terminals as systemd-nspawn containers on this machine).

This module parses the commands (up, down, status, ssh, inventory) and says what happens; the
work is done by the other ``lab_*`` modules, one job each: ``lab_plan`` (terminal ids, addresses,
specifications: pure logic), ``lab_files`` (the files of a terminal's layer), ``lab_peripherals``
(the simulated peripherals), ``lab_state`` (the lab's files on the controller, the SSH key and host
keys, the lock), ``lab_base`` (the cached base tree), ``lab_procs`` (a terminal's processes,
stopping and cleaning), ``lab_boot`` (layers, start, readiness). See docs/lab.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ansible_collections.ipm.fleet.plugins.module_utils.app_health import health_url
from ipm_tools import PROJECT_ROOT
from ipm_tools.lab_base import ensure_base
from ipm_tools.lab_boot import (
    DEFAULT_BOOT_TIMEOUT_S,
    check_netns,
    port_open,
    raise_host_limits,
    require_tools,
    start_terminals,
    wait_all_ready,
)
from ipm_tools.lab_plan import (
    LabError,
    TerminalSpec,
    allocate_addresses,
    check_specs,
    count_names,
    in_netns,
    spec_for,
    specs_from_inventory,
    validate_address,
    validate_netns,
    validate_netns_address,
    validate_terminal_id,
)
from ipm_tools.lab_procs import (
    boot_count,
    clean_leftovers,
    container_init,
    container_pids,
    nspawn_alive,
    nspawn_pid,
    rss_kib,
    stop_terminals,
    system_state,
)
from ipm_tools.lab_state import (
    KNOWN_HOSTS,
    LAB_KEY,
    ensure_lab_key,
    lab_lock,
    load_states,
    ssh_options,
    terminal_dir,
)

# Names other code imported from this module before the split (bench/rollout.py: ssh_options).
__all__ = [
    "KNOWN_HOSTS",
    "LAB_KEY",
    "LabError",
    "TerminalSpec",
    "boot_terminals",
    "build_parser",
    "container_pids",
    "ensure_base",
    "load_states",
    "main",
    "nspawn_alive",
    "rss_kib",
    "spec_for",
    "ssh_options",
    "stop_terminals_named",
    "terminal_dir",
]

PROG = "ipm-lab"


def _say(message: str) -> None:
    print(message, flush=True)


def require_root(command: str) -> None:
    if os.geteuid() != 0:
        raise LabError(
            f"`{PROG} {command}` must run as root (it boots and stops systemd-nspawn containers): sudo {PROG} {command}"
        )


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


def _check_single(args: argparse.Namespace) -> None:
    """--netns and --address boot one terminal per call, named on the command line."""
    option = "--netns" if args.netns else "--address"
    if args.count is not None or args.inventory or len(args.names) != 1:
        raise LabError(f"{option} boots one terminal per call: ipm-lab up NAME --netns NS --address ADDR")
    if args.netns:
        validate_netns(args.netns)
        validate_netns_address(args.address, args.netns)
        return
    try:
        validate_address(args.address, "--address")
    except LabError as error:
        raise LabError(
            f"{str(error).split(';')[0]}; a terminal on the host's network needs a 127.x.y.z address "
            "(another address: boot it into a network namespace with --netns NS)"
        ) from None


def requested_specs(args: argparse.Namespace, running: dict[str, dict]) -> list[TerminalSpec]:
    """The terminals `up` was asked for, with addresses (reusing those of running terminals)."""
    if args.inventory:
        return _read_inventory(args.inventory)
    if getattr(args, "netns", "") or getattr(args, "address", None):
        (name,) = args.names
        validate_terminal_id(name, "terminal id")
        netns = args.netns or ""
        address = validate_netns_address(args.address, netns) if netns else validate_address(args.address, "--address")
        spec = spec_for(name, address, netns=netns)
        if name in running and (running[name].get("netns") or "") != netns:
            raise LabError(
                f"terminal {name} already runs in {running[name].get('netns') or 'the host network'}, "
                f"not {netns or 'the host network'}: run `ipm-lab down {name}` first"
            )
        return [spec]
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


def _up(requested, timeout: float, progress) -> list[dict]:
    """Clean left-overs, boot what ``requested(running)`` asks for that is not up yet, wait until ready.

    Returns the states of all requested terminals (those already up included).
    """
    started_at = time.monotonic()
    with lab_lock():
        running = clean_leftovers(progress)
        specs = requested(running)
        check_specs(specs, {terminal: state["address"] for terminal, state in running.items()})
        for spec in specs:
            if spec.terminal_id in running:
                continue
            check_netns(spec)
            if port_open(spec.address, 22, spec.netns):
                where = f" in network namespace {spec.netns}" if spec.netns else ""
                raise LabError(
                    f"terminal {spec.terminal_id}: {spec.address}:22{where} is already in use by something that "
                    "is not a lab terminal: free that address or choose another"
                )
        base = ensure_base(progress)
        public_key = ensure_lab_key()
        raise_host_limits(progress)
        to_start = [spec for spec in specs if spec.terminal_id not in running]
        for spec in specs:
            if spec.terminal_id in running:
                progress(f"{spec.terminal_id}: already up on {spec.address}")
        started = start_terminals(to_start, base, public_key, progress)
    if started:
        wait_all_ready(started, to_start, base, public_key, timeout, started_at, progress)
        progress(f"{len(started)} terminal(s) ready in {time.monotonic() - started_at:.1f}s")
    by_id = {state["terminal_id"]: state for state in started}
    return [by_id.get(spec.terminal_id) or running[spec.terminal_id] for spec in specs]


def boot_terminals(specs: list[TerminalSpec], timeout: float = DEFAULT_BOOT_TIMEOUT_S, progress=_say) -> list[dict]:
    """Python API of `ipm-lab up`: boot SPECS (as root) and wait until each one is ready.

    A spec with ``netns`` boots into that existing network namespace with ``address`` its own
    address there (see docs/lab.md). Terminals already up are left as they are; if one does not
    come up, all started here are stopped and LabError says why. Returns each terminal's state
    (``terminal.json``: terminal_id, address, netns, pid, ...). Stop them with stop_terminals_named.
    """
    require_root("up")
    require_tools()
    for spec in specs:
        validate_terminal_id(spec.terminal_id, "terminal id")
        if spec.netns:
            validate_netns(spec.netns, f"terminal {spec.terminal_id}: netns")
            validate_netns_address(spec.address, spec.netns, f"terminal {spec.terminal_id}: address")
        else:
            validate_address(spec.address, f"terminal {spec.terminal_id}: address")
    return _up(lambda _running: list(specs), timeout, progress)


def stop_terminals_named(names: list[str], missing_ok: bool = True, progress=_say) -> None:
    """Python API of `ipm-lab down NAMES` (``--missing-ok`` by default)."""
    require_root("down")
    with lab_lock():
        states = _selected(names, missing_ok)
        if states:
            stop_terminals(states, progress)


def command_up(args: argparse.Namespace) -> int:
    require_root("up")
    require_tools()
    if args.count is not None and args.count < 1:
        raise LabError(f"--count must be at least 1, got {args.count}")
    if args.count is not None:
        count_names(args.count, args.prefix)
    if args.netns or args.address:
        _check_single(args)
    _up(lambda running: requested_specs(args, running), args.timeout, _say)
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


# Run inside a network namespace with `ip netns exec`: print the body of GET URL.
_HEALTH_PROBE = (
    "import sys, urllib.request\n"
    "with urllib.request.urlopen(sys.argv[1], timeout=2) as response:\n"
    "    sys.stdout.write(response.read().decode())\n"
)


def app_health(address: str, netns: str = "") -> dict | None:
    """The application's /health answer, or None if it does not answer."""
    if netns:
        probe = in_netns(netns, [sys.executable, "-I", "-S", "-c", _HEALTH_PROBE, health_url(address)])
        try:
            result = subprocess.run(probe, capture_output=True, text=True, timeout=10, check=False)
            return json.loads(result.stdout) if result.returncode == 0 else None
        except (subprocess.TimeoutExpired, ValueError):
            return None
    try:
        with urllib.request.urlopen(health_url(address), timeout=2) as response:
            return json.loads(response.read().decode())
    except (OSError, ValueError):
        return None


def terminal_status(state: dict) -> dict:
    """One row of `status`: terminal, address, state, pid, boots, app health."""
    row = {
        "terminal": state["terminal_id"],
        "address": state.get("address"),
        "pid": state.get("pid"),
        "nspawn_pid": nspawn_pid(state),
        "boots": boot_count(state),
        "model": state.get("model"),
        "netns": state.get("netns") or "",
        "state": "stopped",
        "app": None,
    }
    if not nspawn_alive(state):
        row["state"] = "stale (run ipm-lab up or down to clean)"
        return row
    if container_init(state) is None:
        # The supervisor runs but no systemd yet: between two boots, or early in a boot.
        row["state"] = "rebooting" if row["boots"] > 1 or row["nspawn_pid"] is None else "booting"
        return row
    row["state"] = system_state(state)
    if not port_open(state["address"], 22, row["netns"]):
        row["state"] += " (sshd not answering)"
    row["app"] = app_health(state["address"], row["netns"])
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
    table = [("TERMINAL", "ADDRESS", "STATE", "PID", "BOOTS", "APP")]
    table += [
        (r["terminal"], r["address"] or "-", r["state"], str(r["pid"] or "-"), str(r["boots"]), _app_cell(r["app"]))
        for r in rows
    ]
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
        if state.get("netns"):
            # Reachable from a controller inside a namespace that routes to it (ip netns exec ... ansible).
            hosts[state["terminal_id"]]["ipm_lab_netns"] = state["netns"]
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
    argv = in_netns(state.get("netns") or "", argv)  # a terminal in a namespace: ssh from inside it
    sys.stdout.flush()
    os.execvp(argv[0], argv)
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
        "--netns",
        default="",
        metavar="NS",
        help="boot the one terminal named into this existing network namespace (ip netns add NS) instead "
        "of the host's network; needs --address",
    )
    up.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="the one terminal's address: with --netns an address on an interface of NS, else a 127.x.y.z",
    )
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
        help="table of terminals: address, state, pid, boots, app health",
        description="Show each lab terminal: address, systemd state (read inside the container; `rebooting` "
        "between two boots), the pid of its supervisor, how many times it booted (1 + reboots), "
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
