# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""WireGuard on a terminal and on the hub: keys, wg-quick files, live changes without dropping tunnels.

The rules, once for the modules ``ipm.fleet.wg_key``, ``ipm.fleet.wg_config``, ``ipm.fleet.wg_hub``
and ``ipm.fleet.wg_status`` (all run on the machine that owns the interface; standard library only):

- **Keys** are born where they are used and never leave it: :func:`generate_key` runs ``wg genkey``
  under umask 077 and writes the file atomically with mode 0600 (owner root); only the public key
  (``wg pubkey``) is ever returned. :func:`key_file_problem` refuses a key file that others could
  have read (any group/other permission, or not owned by root): such a key is not trusted, and it
  is not silently repaired either - the message says to rotate it (``vpn_rotate=true``).
- **Rotation** keeps the tunnel up: the next key is staged beside the key (``<key>.next``), then
  the interface switches to it (:func:`switch_key`, the old key kept as ``<key>.previous`` until
  the new one has a handshake), and the hub takes the new public key over for the terminal's
  address, carrying the old peer's endpoint over (:func:`sync_input`) so that it can start the
  handshake at once. Between the switch and the hub's change WireGuard queues the packets (up to
  128 per peer): nothing is lost.
- **Configuration files** (:func:`render`) never hold a private key: ``PostUp = wg set %i
  private-key <key file>``; they are written atomically (:func:`write_atomic`) and applied to a
  running interface with ``wg syncconf`` (:func:`apply_live`): peers that did not change keep
  their sessions. Only a change of the interface itself (address, key file, hooks) needs a
  restart of ``wg-quick@<interface>``.
- **Peers** are checked before anything is written (:func:`peer_problems`): a public key used by
  two peers, a peer without an allowed address, overlapping allowed addresses. The hub's peers
  come from the terminals (:func:`hub_peers`): a terminal that reported no key this run keeps the
  key its peer has on the hub, revoked and retired terminals are removed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
import os
import re
import socket
import stat
import subprocess
import tempfile
import time

KEY_MODE = 0o600
KEEPALIVE_S = 25
HEADER = "# Managed by ipm.fleet ({who}); changes made here are replaced on the next run.\n"
_NAME_LINE = re.compile(r"^#\s*ipm:\s*name=(?P<name>\S+)(?:\s+(?P<note>.*))?$")
# wg-quick's own keys (what `wg-quick strip` removes): a change of these needs a restart.
WG_QUICK_KEYS = ("Address", "DNS", "MTU", "Table", "PreUp", "PostUp", "PreDown", "PostDown", "SaveConfig")


class WireGuardError(Exception):
    """A fault the caller reports as one line (the message names the file or peer and the fix)."""


def is_public_key(text) -> bool:
    """True for a WireGuard key: base64 of 32 bytes (44 characters ending in '=')."""
    if not isinstance(text, str) or len(text) != 44 or not text.endswith("="):
        return False
    try:
        return len(base64.b64decode(text, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


# ---------------------------------------------------------------------------------------- keys


def key_file_problem(path) -> str | None:
    """Why the private key file PATH cannot be trusted (None when it can, or when it does not exist)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return f"{path}: expected a regular file holding the WireGuard private key, found something else; remove it and run again"
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077 or info.st_uid != 0:
        return (
            f"{path}: the WireGuard private key has mode {mode:04o} and owner uid {info.st_uid}, expected mode "
            f"0600 and owner root: others may have read it, so it is not used. Rotate it: run again with "
            f"-e vpn_rotate=true (a new key is generated on the terminal and the hub learns it), or, only if you "
            f"know nobody read it, `chmod 0600 {path}; chown root:root {path}`"
        )
    return None


def write_atomic(path, text, mode=0o600) -> None:
    """Write TEXT to PATH through a temporary file in the same directory and a rename (never half a file)."""
    directory = os.path.dirname(path) or "."
    old = os.umask(0o077)
    try:
        handle, temporary = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
    finally:
        os.umask(old)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.rename(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def generate_key(path, run) -> None:
    """A new private key in PATH (mode 0600, root), made by ``wg genkey`` on this machine."""
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700)
    old = os.umask(0o077)
    try:
        rc, out, err = run(["wg", "genkey"])
    finally:
        os.umask(old)
    if rc != 0 or not is_public_key(out.strip()):
        raise WireGuardError(
            f"`wg genkey` failed ({rc}): {err.strip() or 'no key printed'}; is wireguard-tools installed?"
        )
    write_atomic(path, out.strip() + "\n", KEY_MODE)


def public_key(path, run) -> str:
    """The public key of the private key in PATH (``wg pubkey``); the private key is not returned."""
    with open(path) as stream:
        private = stream.read()
    rc, out, err = run(["wg", "pubkey"], data=private)
    key = out.strip()
    if rc != 0 or not is_public_key(key):
        raise WireGuardError(
            f"{path}: not a WireGuard private key (wg pubkey: {err.strip() or 'no key'}): remove the file and run "
            "again with -e vpn_rotate=true to make a new one"
        )
    return key


def key_paths(path) -> dict:
    return {"key": path, "next": path + ".next", "previous": path + ".previous"}


def interface_exists(interface) -> bool:
    """Whether INTERFACE exists in this network namespace (``ip link``; /sys may show another namespace's)."""
    try:
        result = subprocess.run(["ip", "link", "show", "dev", interface], capture_output=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return os.path.exists(f"/sys/class/net/{interface}")
    return result.returncode == 0


def set_live_key(interface, path, run) -> bool:
    """Give the running INTERFACE the private key in PATH; False when the interface is not up."""
    if not interface_exists(interface):
        return False
    rc, _out, err = run(["wg", "set", interface, "private-key", path])
    if rc != 0:
        raise WireGuardError(f"wg set {interface} private-key {path} failed ({rc}): {err.strip()}")
    return True


def switch_key(path, interface, run) -> bool:
    """Make the staged ``<path>.next`` the key (the old one kept as ``<path>.previous``); False when none is staged."""
    paths = key_paths(path)
    if not os.path.exists(paths["next"]):
        return False
    if os.path.exists(path):
        os.replace(path, paths["previous"])
    os.replace(paths["next"], path)
    set_live_key(interface, path, run)
    return True


def revert_key(path, interface, run) -> bool:
    """Put ``<path>.previous`` back as the key (a rotation the hub did not take); False when there is none."""
    paths = key_paths(path)
    if not os.path.exists(paths["previous"]):
        return False
    os.replace(paths["previous"], path)
    set_live_key(interface, path, run)
    return True


# ---------------------------------------------------------------------------------------- files


def _network(text, what):
    try:
        return ipaddress.ip_network(str(text), strict=False)
    except ValueError:
        raise WireGuardError(f"{what}: expected an IP address or CIDR network, found {text!r}") from None


def normalise_peer(peer, index=0) -> dict:
    """A peer mapping with its fields in one form (allowed_ips as sorted CIDR strings)."""
    name = str(peer.get("name") or f"peer #{index + 1}")
    allowed = peer.get("allowed_ips") or []
    if isinstance(allowed, str):
        allowed = [item.strip() for item in allowed.split(",") if item.strip()]
    networks = sorted({str(_network(item, f"peer {name}: allowed_ips")) for item in allowed})
    keepalive = peer.get("persistent_keepalive")
    return {
        "name": name,
        "public_key": peer.get("public_key") or "",
        "allowed_ips": networks,
        "endpoint": peer.get("endpoint") or None,
        "persistent_keepalive": int(keepalive) if keepalive not in (None, "", 0, "0", "off") else None,
        "note": peer.get("note") or "",
    }


def peer_problems(peers) -> list[str]:
    """Faults of a peer list, one line each naming the peer(s): nothing may be applied while there are any."""
    problems = []
    by_key, by_name, taken = {}, {}, []
    for peer in peers:
        name = peer["name"]
        if name in by_name:
            problems.append(f"peer {name} is listed twice")
        by_name[name] = peer
        key = peer["public_key"]
        if not is_public_key(key):
            problems.append(f"peer {name}: public_key {key!r} is not a WireGuard public key (44 characters of base64)")
        elif key in by_key:
            problems.append(
                f"public key {key} is used by both {by_key[key]} and {name}: a key belongs to one terminal (a cloned "
                f"disk image?); rotate the key of one of them (-e vpn_rotate=true --limit {name})"
            )
        else:
            by_key[key] = name
        if not peer["allowed_ips"]:
            problems.append(f"peer {name} has no address (allowed_ips is empty): give it one in the VPN plan")
        for network in peer["allowed_ips"]:
            net = ipaddress.ip_network(network)
            for other_name, other in taken:
                if other_name != name and net.overlaps(other):
                    problems.append(
                        f"peers {other_name} and {name} both claim {net if net.prefixlen >= other.prefixlen else other}"
                    )
            taken.append((name, net))
    return problems


def render(interface, peers, who="role vpn_terminal", wg_only=False) -> str:
    """The wg-quick file of INTERFACE (or, with WG_ONLY, what ``wg-quick strip`` makes of it) with PEERS.

    INTERFACE: ``address`` (list of CIDRs), ``listen_port``, ``key_file``, ``post_up``/``post_down``
    (lists of commands), ``mtu``. The private key is never written: PostUp loads it from key_file.
    """
    lines = (
        [] if wg_only else [HEADER.format(who=who).rstrip("\n"), f"# The private key stays in {interface['key_file']}."]
    )
    lines.append("[Interface]")
    if not wg_only:
        for address in interface.get("address") or []:
            lines.append(f"Address = {address}")
        if interface.get("mtu"):
            lines.append(f"MTU = {interface['mtu']}")
    if interface.get("listen_port"):
        lines.append(f"ListenPort = {interface['listen_port']}")
    if not wg_only:
        lines.append(f"PostUp = wg set %i private-key {interface['key_file']}")
        for command in interface.get("post_up") or []:
            lines.append(f"PostUp = {command}")
        for command in interface.get("post_down") or []:
            lines.append(f"PostDown = {command}")
    for peer in sorted(peers, key=lambda item: item["name"]):
        lines.append("")
        lines.append("[Peer]")
        if not wg_only:
            lines.append(f"# ipm: name={peer['name']}" + (f" {peer['note']}" if peer.get("note") else ""))
        lines.append(f"PublicKey = {peer['public_key']}")
        if peer.get("endpoint"):
            lines.append(f"Endpoint = {peer['endpoint']}")
        lines.append("AllowedIPs = " + ", ".join(peer["allowed_ips"]))
        if peer.get("persistent_keepalive"):
            lines.append(f"PersistentKeepalive = {peer['persistent_keepalive']}")
    return "\n".join(lines) + "\n"


def parse(text) -> tuple[dict, list[dict]]:
    """The interface settings (wg-quick keys as lists) and peers of a wg-quick file written by :func:`render`."""
    interface: dict = {}
    peers: list[dict] = []
    section = None
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line:
            continue
        match = _NAME_LINE.match(line)
        if match and section is not None and section is not interface:
            section["name"] = match.group("name")
            section["note"] = match.group("note") or ""
            continue
        if line.startswith("#"):
            continue
        if line.lower() == "[interface]":
            section = interface
            continue
        if line.lower() == "[peer]":
            section = {"name": "", "public_key": "", "allowed_ips": []}
            peers.append(section)
            continue
        if section is None or "=" not in line:
            continue
        key, _sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if section is interface:
            interface.setdefault(key, []).append(value)
        elif key == "PublicKey":
            section["public_key"] = value
        elif key == "AllowedIPs":
            section["allowed_ips"] += [item.strip() for item in value.split(",") if item.strip()]
        elif key == "Endpoint":
            section["endpoint"] = value
        elif key == "PersistentKeepalive":
            section["persistent_keepalive"] = value
    for index, peer in enumerate(peers):
        if not peer["name"]:
            peer["name"] = peer["public_key"] or f"peer #{index + 1}"
    return interface, peers


def read_text(path) -> str | None:
    try:
        with open(path) as stream:
            return stream.read()
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------------------------------- live


def live_peers(interface, run) -> dict | None:
    """The running interface's peers by public key (``wg show dump``); None when it is not up."""
    if not interface_exists(interface):
        return None
    rc, out, err = run(["wg", "show", interface, "dump"])
    if rc != 0:
        raise WireGuardError(f"wg show {interface} dump failed ({rc}): {err.strip()}")
    peers = {}
    now = time.time()
    for number, line in enumerate(out.splitlines()):
        fields = line.split("\t")
        if number == 0 or len(fields) < 8:
            continue
        key, _psk, endpoint, allowed, handshake, rx, tx, keepalive = fields[:8]
        peers[key] = {
            "public_key": key,
            "endpoint": None if endpoint == "(none)" else endpoint,
            "allowed_ips": sorted(item for item in allowed.split(",") if item and item != "(none)"),
            "latest_handshake": int(handshake),
            "handshake_age_s": round(now - int(handshake), 1) if int(handshake) else None,
            "rx_bytes": int(rx),
            "tx_bytes": int(tx),
            "persistent_keepalive": None if keepalive == "off" else int(keepalive),
        }
    return peers


def live_differs(peers, live) -> bool:
    """Whether the running peers differ from PEERS in anything the file sets."""
    if set(live) != {peer["public_key"] for peer in peers}:
        return True
    for peer in peers:
        now = live[peer["public_key"]]
        if now["allowed_ips"] != peer["allowed_ips"] or now["persistent_keepalive"] != peer["persistent_keepalive"]:
            return True
        if (
            peer.get("endpoint")
            and now["endpoint"] != peer["endpoint"]
            and not _same_endpoint(peer["endpoint"], now["endpoint"])
        ):
            return True
    return False


def _same_endpoint(wanted, live) -> bool:
    # The file may name the hub by host name; the interface shows the address it resolved to.
    if not live:
        return False
    return wanted.rsplit(":", 1)[-1] == live.rsplit(":", 1)[-1] and not re.match(r"^[0-9.]+:\d+$", wanted)


def carried_endpoints(peers, live) -> dict:
    """Endpoints to give new peers that take over another live peer's addresses (a rotated key).

    The terminal sits behind NAT: the hub only learns where it is from its packets. A new key for
    the same address gets the old peer's endpoint, so the hub can start the handshake at once.
    """
    carried = {}
    for peer in peers:
        if peer.get("endpoint") or peer["public_key"] in live:
            continue
        for other in live.values():
            if other["endpoint"] and set(other["allowed_ips"]) & set(peer["allowed_ips"]):
                carried[peer["public_key"]] = other["endpoint"]
                break
    return carried


def sync_input(interface, peers, live) -> tuple[str, dict]:
    """What ``wg syncconf`` is given: the file as ``wg-quick strip`` makes it, plus carried endpoints."""
    carried = carried_endpoints(peers, live or {})
    synced = [dict(peer, endpoint=peer.get("endpoint") or carried.get(peer["public_key"])) for peer in peers]
    return render(interface, synced, wg_only=True), carried


def apply_live(name, interface, peers, run) -> dict:
    """``wg syncconf NAME`` to PEERS (one change of the interface; unchanged peers keep their sessions)."""
    live = live_peers(name, run)
    if live is None:
        return {"applied": False, "carried_endpoints": {}}
    text, carried = sync_input(interface, peers, live)
    # wg syncconf clears a private key its input does not set: the key file's key goes in through the
    # pipe (it stays on this machine; the file on disk and every result keep only the public key).
    private = read_text(interface["key_file"])
    if private and private.strip():
        text = text.replace("[Interface]\n", f"[Interface]\nPrivateKey = {private.strip()}\n", 1)
    rc, _out, err = run(["wg", "syncconf", name, "/dev/stdin"], data=text)
    if rc != 0:
        raise WireGuardError(f"wg syncconf {name} failed ({rc}): {err.strip()}")
    routes = _ensure_routes(name, interface, peers, run)
    return {"applied": True, "carried_endpoints": carried, "routes_added": routes}


def _ensure_routes(name, interface, peers, run) -> list[str]:
    """Routes through NAME for allowed addresses its own address prefixes do not cover (as wg-quick does at up)."""
    own = [ipaddress.ip_interface(item).network for item in interface.get("address") or []]
    wanted = sorted({network for peer in peers for network in peer["allowed_ips"]})
    rc, out, _err = run(["ip", "-4", "route", "show", "dev", name])
    present = {line.split()[0] for line in out.splitlines() if line.strip()} if rc == 0 else set()
    added = []
    for network in wanted:
        net = ipaddress.ip_network(network)
        if any(net.subnet_of(item) for item in own if item.version == net.version) or network in present:
            continue
        if net.prefixlen == 32 and network.split("/")[0] in present:
            continue
        rc, _out, err = run(["ip", "-4", "route", "replace", network, "dev", name])
        if rc != 0:
            raise WireGuardError(f"ip route replace {network} dev {name} failed ({rc}): {err.strip()}")
        added.append(network)
    return added


def interface_changed(old_text, interface) -> bool:
    """Whether the wg-quick part of the file (address, key file, hooks, MTU) differs: a restart is needed."""
    if old_text is None:
        return False
    old_interface, _peers = parse(old_text)
    new_interface, _peers = parse(render(interface, []))
    return _wg_quick_part(old_interface) != _wg_quick_part(new_interface)


def _wg_quick_part(section) -> dict:
    return {key: section.get(key, []) for key in WG_QUICK_KEYS}


# ---------------------------------------------------------------------------------------- hub


def hub_peers(terminals, current, revoked=(), keepalive=None) -> dict:
    """The hub's peers from the terminals (and the peers it has now), with what changes and what is wrong.

    TERMINALS: ``{name, address, public_key, status, customer}`` for every terminal of the inventory
    (``public_key`` only for those that reported one this run). CURRENT: the peers of the hub's
    file (:func:`parse`). A terminal keeps its current key when it reported none; revoked (listed in
    REVOKED) and retired terminals, and peers of terminals the inventory no longer has, are removed.
    Returns ``peers``, ``added``, ``removed`` ({name: why}), ``rotated``, ``pending`` (no key yet) and
    ``problems`` (one line each; nothing may be applied while there are any).
    """
    revoked = set(revoked or ())
    known = {peer["name"]: peer for peer in current}
    peers, problems, pending, added, rotated = [], [], [], [], []
    removed = {}
    names = set()
    for index, terminal in enumerate(sorted(terminals, key=lambda item: str(item.get("name")))):
        name = str(terminal.get("name") or f"terminal #{index + 1}")
        names.add(name)
        if name in revoked:
            if name in known:
                removed[name] = "revoked"
            continue
        if terminal.get("status") == "retired":
            if name in known:
                removed[name] = "retired"
            continue
        reported = terminal.get("public_key") or None
        key = reported or (known[name]["public_key"] if name in known else None)
        if not key:
            pending.append(name)
            continue
        address = terminal.get("address")
        if not address:
            problems.append(
                f"terminal {name} has a public key but no address in the VPN plan: run `ipm-registry addresses "
                "--assign` and commit vpn-plan.yml (or revoke it with vpn_revoked)"
            )
            continue
        try:
            allowed = [str(ipaddress.ip_network(f"{str(address).split('/', maxsplit=1)[0]}/32"))]
        except ValueError:
            problems.append(f"terminal {name}: VPN address {address!r} is not an IPv4 address")
            continue
        note = f"customer={terminal['customer']}" if terminal.get("customer") else ""
        peers.append(
            {
                "name": name,
                "public_key": key,
                "allowed_ips": allowed,
                "endpoint": None,
                "persistent_keepalive": keepalive,
                "note": note,
            }
        )
        if name not in known:
            added.append(name)
        elif known[name]["public_key"] != key:
            rotated.append(name)
    for name in known:
        if name not in names:
            removed[name] = "not in the inventory any more"
    problems += peer_problems(peers)
    return {
        "peers": peers,
        "added": added,
        "removed": removed,
        "rotated": rotated,
        "pending": pending,
        "problems": problems,
    }


def wait_handshakes(interface, keys, timeout, run, probe=None, max_age=180) -> dict:
    """Wait until each peer of KEYS has a handshake younger than MAX_AGE; PROBE (address) is sent a packet first."""
    deadline = time.time() + timeout
    while True:
        live = live_peers(interface, run) or {}
        missing = [
            key
            for key in keys
            if not (
                live.get(key) and live[key]["handshake_age_s"] is not None and live[key]["handshake_age_s"] <= max_age
            )
        ]
        if not missing or time.time() >= deadline:
            return {"peers": live, "missing": missing}
        if probe:
            _nudge(probe)
        time.sleep(0.5)


def _nudge(address) -> None:
    """One UDP packet to ADDRESS (discard port) through the tunnel: WireGuard starts a handshake for it."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"ipm", (address, 9))
    except OSError:
        pass


# ---------------------------------------------------------------------------------------- converge


def converge(name, path, interface, peers, run, check_mode=False, who="role vpn_terminal") -> dict:
    """Make the file PATH and the running interface NAME hold INTERFACE and PEERS; the result of a module.

    Checks the peers first (:func:`peer_problems`: raises with every problem, nothing written);
    writes the file atomically only when its text differs; syncs a running interface whose peers
    differ from the file (also when only the live state drifted). If ``wg syncconf`` fails the
    previous file is put back and the interface synced to it again, so nothing is left half-applied.
    ``restart_needed`` says the interface part changed (address, key file, hooks): the caller
    restarts ``wg-quick@NAME``.
    """
    problems = peer_problems(peers)
    if problems:
        raise WireGuardError("; ".join(problems))
    old_text = read_text(path)
    new_text = render(interface, peers, who=who)
    live = live_peers(name, run)
    file_changed = old_text != new_text
    live_changed = live is not None and (live_differs(peers, live) or _live_key_differs(name, interface, run))
    restart_needed = interface_changed(old_text, interface) and live is not None
    result = {
        "changed": file_changed or live_changed,
        "file_changed": file_changed,
        "live_changed": live_changed,
        "restart_needed": restart_needed,
        "running": live is not None,
        "applied": False,
        "carried_endpoints": {},
        "path": path,
        "diff": {"before": old_text or "", "after": new_text, "before_header": path, "after_header": path},
    }
    if check_mode:
        return result
    if file_changed:
        directory = os.path.dirname(path)
        if directory and not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700)
        write_atomic(path, new_text, 0o600)
    if live_changed and not restart_needed:
        try:
            result.update(apply_live(name, interface, peers, run))
        except WireGuardError as error:
            if file_changed:
                if old_text is None:
                    os.unlink(path)
                else:
                    write_atomic(path, old_text, 0o600)
                _interface, old_peers = parse(old_text or "")
                with contextlib.suppress(WireGuardError):
                    apply_live(
                        name, interface, [normalise_peer(peer, index) for index, peer in enumerate(old_peers)], run
                    )
            raise WireGuardError(f"{error}; {path} and {name} were left as they were") from None
    return result


def _live_key_differs(name, interface, run) -> bool:
    """Whether the running interface lacks the key file's key (someone changed it by hand, or a sync lost it)."""
    if not os.path.exists(interface["key_file"]):
        return False
    rc, out, _err = run(["wg", "show", name, "public-key"])
    return rc != 0 or out.strip() != public_key(interface["key_file"], run)


def kernel_wireguard(run) -> bool:
    """Whether this machine's kernel has the WireGuard module (a test interface can be made)."""
    probe = "ipmwgprobe0"
    rc, _out, _err = run(["ip", "link", "add", "dev", probe, "type", "wireguard"])
    if rc == 0:
        run(["ip", "link", "del", "dev", probe])
        return True
    return False
