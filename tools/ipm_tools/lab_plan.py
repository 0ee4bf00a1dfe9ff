"""Pure logic of the lab: terminal ids, the address plan, terminal specifications, the base recipe.

Controller-only (the lab runs on the controller), so it lives with the tools and may use PyYAML.
Nothing here touches the machine: every function takes data and returns data or raises
:class:`LabError` with a one-line message that says what was wrong and what to do.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# Hardware models of docs/development.md, with the peripherals a terminal of that model carries
# when its inventory does not list any.
MODELS = ("PS-200", "PS-300", "TK-110")
DEFAULT_INTERFACES = {
    "PS-200": ("payment", "printer", "barrier"),
    "PS-300": ("payment", "printer", "barrier", "camera"),
    "TK-110": ("payment", "printer", "camera", "barcode_reader"),
}
DEFAULT_MODEL = "PS-300"

# The address plan of terminals booted by name or count: 127.0.100.1 .. 127.0.103.254. Inventories
# may use any other loopback address (the demo fleet has its own block).
PLAN_FIRST_OCTET3 = 100
PLAN_BLOCKS = 4
PLAN_HOSTS_PER_BLOCK = 254
PLAN_CAPACITY = PLAN_BLOCKS * PLAN_HOSTS_PER_BLOCK
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
# 127.0.0.1 is the controller's own loopback (its services listen there); never a terminal.
RESERVED_ADDRESSES = frozenset({"127.0.0.0", "127.0.0.1", "127.255.255.255"})

# A terminal id is its hostname and its nspawn machine name: RFC 1123 labels, at most 64 characters.
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
MAX_TERMINAL_ID = 64
# A peripheral name becomes a file name under /dev/ipm.
_PERIPHERAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# A network namespace name is a file name under /run/netns.
_NETNS = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class LabError(Exception):
    """A user mistake or an unmet precondition: its message is one line, printed as is."""


@dataclass(frozen=True)
class TerminalSpec:
    """What a lab terminal is before it boots: identity, address, hardware and peripherals."""

    terminal_id: str
    address: str
    model: str = DEFAULT_MODEL
    serial_number: str = ""
    interfaces: tuple[dict, ...] = field(default_factory=tuple)
    # A network namespace (``ip netns add NAME``) the terminal boots into; "" = the host's network.
    netns: str = ""

    def to_dict(self) -> dict:
        return {
            "terminal_id": self.terminal_id,
            "address": self.address,
            "model": self.model,
            "serial_number": self.serial_number,
            "interfaces": [dict(item) for item in self.interfaces],
            "netns": self.netns,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> TerminalSpec:
        return cls(
            terminal_id=data["terminal_id"],
            address=data["address"],
            model=data.get("model", DEFAULT_MODEL),
            serial_number=data.get("serial_number", ""),
            interfaces=tuple(dict(item) for item in data.get("interfaces", [])),
            netns=data.get("netns") or "",
        )


def validate_terminal_id(terminal_id: object, where: str = "terminal id") -> str:
    """Return ``terminal_id`` if it is a valid hostname, else raise LabError naming ``where``."""
    if not isinstance(terminal_id, str) or not terminal_id:
        raise LabError(f"{where}: expected a hostname, got {terminal_id!r}")
    if len(terminal_id) > MAX_TERMINAL_ID or not all(_LABEL.match(label) for label in terminal_id.split(".")):
        raise LabError(
            f"{where} {terminal_id!r} is not a valid hostname: use letters, digits and '-' "
            f"(not first or last), dot-separated labels, at most {MAX_TERMINAL_ID} characters"
        )
    return terminal_id


def validate_address(address: object, where: str) -> str:
    """Return ``address`` if it is a usable loopback address (127.0.0.0/8), else raise LabError."""
    try:
        parsed = ipaddress.ip_address(str(address))
    except ValueError:
        raise LabError(f"{where}: {address!r} is not an IPv4 address; lab terminals need one in 127.0.0.0/8") from None
    if parsed not in LOOPBACK:
        raise LabError(
            f"{where}: address {address} is outside 127.0.0.0/8; lab terminals listen on loopback "
            "addresses only (set ansible_host to 127.x.y.z)"
        )
    if str(parsed) in RESERVED_ADDRESSES:
        raise LabError(f"{where}: address {address} is reserved (controller loopback); choose another 127.x.y.z")
    return str(parsed)


def validate_netns(name: object, where: str = "--netns") -> str:
    """Return ``name`` if it can name a network namespace of ``ip netns`` (a file in /run/netns)."""
    if not isinstance(name, str) or not _NETNS.match(name) or name in (".", ".."):
        raise LabError(
            f"{where}: {name!r} is not a network namespace name: use letters, digits, '-', '_' or '.' "
            "(at most 64 characters), as given to `ip netns add`"
        )
    return name


def validate_netns_address(address: object, netns: str, where: str = "--address") -> str:
    """Return ``address`` if it can be a terminal's own address inside network namespace NETNS."""
    if address is None or address == "":
        raise LabError(
            f"{where}: a terminal in network namespace {netns} needs its address there: "
            f"--address ADDR (an IPv4 address on an interface of {netns})"
        )
    try:
        parsed = ipaddress.ip_address(str(address))
    except ValueError:
        raise LabError(f"{where}: {address!r} is not an IPv4 address (the terminal's address in {netns})") from None
    if parsed.version != 4 or parsed.is_unspecified or parsed.is_multicast or str(parsed) == "255.255.255.255":
        raise LabError(f"{where}: {address} cannot be a terminal's own address: give a unicast IPv4 address")
    return str(parsed)


def netns_addresses(ip_json: str) -> list[str]:
    """The IPv4 addresses of every interface in ``ip -j addr show`` output."""
    try:
        links = json.loads(ip_json or "[]")
    except ValueError:
        return []
    found = []
    for link in links if isinstance(links, list) else []:
        for info in link.get("addr_info", []) or []:
            if info.get("family") == "inet" and info.get("local"):
                found.append(str(info["local"]))
    return found


def netns_loopback_up(ip_json: str) -> bool:
    """Whether ``lo`` is up in ``ip -j link show`` output (a namespace's own address is reached over lo)."""
    try:
        links = json.loads(ip_json or "[]")
    except ValueError:
        return False
    for link in links if isinstance(links, list) else []:
        if link.get("ifname") == "lo":
            return "UP" in (link.get("flags") or [])
    return False


def in_netns(netns: str, argv: list[str]) -> list[str]:
    """ARGV run inside network namespace NETNS (``ip netns exec``), or as is for the host's network."""
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def plan_addresses() -> Iterable[str]:
    """Every address of the plan, in order."""
    for block in range(PLAN_BLOCKS):
        for host in range(1, PLAN_HOSTS_PER_BLOCK + 1):
            yield f"127.0.{PLAN_FIRST_OCTET3 + block}.{host}"


def allocate_addresses(count: int, used: Iterable[str]) -> list[str]:
    """Return ``count`` free addresses of the plan, lowest first, or raise LabError if it is too small."""
    taken = set(used)
    free = [address for address in plan_addresses() if address not in taken]
    if count > len(free):
        raise LabError(
            f"{count} terminals requested but the address plan (127.0.{PLAN_FIRST_OCTET3}.1-"
            f"127.0.{PLAN_FIRST_OCTET3 + PLAN_BLOCKS - 1}.{PLAN_HOSTS_PER_BLOCK}) has {len(free)} free of "
            f"{PLAN_CAPACITY}: ask for fewer, or run `ipm-lab down` first"
        )
    return free[:count]


def count_names(count: int, prefix: str = "lab-") -> list[str]:
    """Names of ``count`` terminals: ``lab-01``, ``lab-02``, ... (validated as hostnames)."""
    if count < 1:
        raise LabError(f"--count must be at least 1, got {count}")
    if count > PLAN_CAPACITY:
        raise LabError(
            f"{count} terminals requested but the address plan holds {PLAN_CAPACITY}: ask for at most {PLAN_CAPACITY}"
        )
    width = max(2, len(str(count)))
    return [validate_terminal_id(f"{prefix}{index:0{width}d}", "terminal id") for index in range(1, count + 1)]


def default_serial_number(model: str, terminal_id: str) -> str:
    """A stable, readable serial number for a lab terminal that has none in its inventory."""
    digest = hashlib.sha256(terminal_id.encode()).hexdigest()[:8].upper()
    return f"{model.replace('-', '')}-LAB-{digest}"


def default_model(index: int) -> str:
    """Models rotate over the fleet booted by count, so tests see more than one model."""
    return (DEFAULT_MODEL, "TK-110", "PS-200")[index % 3]


def normalize_interfaces(value: object, where: str) -> tuple[dict, ...]:
    """Peripherals as a tuple of ``{name, type}`` dicts (plus any extra keys) from inventory data.

    Accepts a list of names, a list of mappings with ``name`` and/or ``type``, or a mapping of name to
    type or to a mapping: whatever shape the inventory uses, the terminal gets the same files.
    """
    if value is None:
        return ()
    items: list[dict] = []
    if isinstance(value, Mapping):
        for name, body in value.items():
            if isinstance(body, Mapping):
                items.append({"name": name, **{k: v for k, v in body.items() if k != "name"}})
            else:
                items.append({"name": name, "type": body if isinstance(body, str) else name})
    elif isinstance(value, list):
        for index, entry in enumerate(value):
            if isinstance(entry, str):
                items.append({"name": entry, "type": entry})
            elif isinstance(entry, Mapping) and (entry.get("name") or entry.get("type")):
                items.append({"name": entry.get("name") or entry.get("type"), **dict(entry)})
            else:
                raise LabError(f"{where}[{index}]: expected a peripheral name or a mapping with 'name', got {entry!r}")
    else:
        raise LabError(f"{where}: expected a list or a mapping of peripherals, got {type(value).__name__}")
    normalized = []
    seen = set()
    for item in items:
        name = str(item["name"])
        if not _PERIPHERAL.match(name):
            raise LabError(
                f"{where}: peripheral name {name!r} must be letters, digits, '-', '_' or '.', starting with a "
                f"letter or digit (it becomes /dev/ipm/{name})"
            )
        if name in seen:
            raise LabError(f"{where}: peripheral {name!r} is listed twice")
        seen.add(name)
        item["name"] = name
        item.setdefault("type", name)
        normalized.append(item)
    return tuple(normalized)


def spec_for(
    terminal_id: str, address: str, index: int = 0, hostvars: Mapping | None = None, where: str = "", netns: str = ""
) -> TerminalSpec:
    """A terminal spec from optional inventory host variables (``ipm_model``, ...), with lab defaults.

    ``netns``: the network namespace it boots into ("" = the host's network).
    """
    hostvars = hostvars or {}
    where = where or f"terminal {terminal_id}"
    model = str(hostvars.get("ipm_model") or default_model(index))
    serial_number = str(hostvars.get("ipm_serial_number") or default_serial_number(model, terminal_id))
    interfaces = normalize_interfaces(hostvars.get("ipm_interfaces"), f"{where}: ipm_interfaces")
    if not interfaces:
        interfaces = normalize_interfaces(list(DEFAULT_INTERFACES.get(model, DEFAULT_INTERFACES[DEFAULT_MODEL])), where)
    return TerminalSpec(terminal_id, address, model, serial_number, interfaces, netns)


def _inventory_hosts(data: Mapping) -> list[str]:
    """Every host of an ``ansible-inventory --list`` document, in a stable order."""
    hosts: dict[str, None] = {}
    for host in data.get("_meta", {}).get("hostvars", {}):
        hosts[host] = None
    for group_name, group in data.items():
        if group_name != "_meta" and isinstance(group, Mapping):
            for host in group.get("hosts", []) or []:
                hosts[host] = None
    return sorted(hosts)


def specs_from_inventory(data: Mapping, source: str) -> list[TerminalSpec]:
    """Terminal specs for every host of an ``ansible-inventory --list`` JSON document.

    ``ansible_host`` is the terminal's address (required, in 127.0.0.0/8); ``ipm_model``,
    ``ipm_serial_number`` and ``ipm_interfaces`` are used when present. A host with
    ``ipm_lab_netns`` (as ``ipm-lab inventory`` writes it) boots into that network namespace, its
    ``ansible_host`` the address there (any unicast IPv4 address).
    """
    hostvars = data.get("_meta", {}).get("hostvars", {})
    specs = []
    by_address: dict[str, str] = {}
    for index, host in enumerate(_inventory_hosts(data)):
        where = f"{source}: host {host}"
        validate_terminal_id(host, f"{source}: host name")
        variables = hostvars.get(host, {}) or {}
        if "ansible_host" not in variables:
            raise LabError(f"{where}: no ansible_host; set it to the terminal's lab address (127.x.y.z)")
        netns = variables.get("ipm_lab_netns") or ""
        if netns:
            validate_netns(netns, f"{where}: ipm_lab_netns")
            address = validate_netns_address(variables["ansible_host"], netns, f"{where}: ansible_host")
        else:
            address = validate_address(variables["ansible_host"], f"{where}: ansible_host")
        if address in by_address:
            raise LabError(f"{where}: ansible_host {address} is also the address of {by_address[address]}")
        by_address[address] = host
        specs.append(spec_for(host, address, index, variables, where, netns))
    if not specs:
        raise LabError(f"{source}: the inventory has no hosts; nothing to boot")
    return specs


def check_specs(specs: list[TerminalSpec], running: Mapping[str, str]) -> None:
    """Refuse duplicate ids or addresses, and clashes with running terminals (``running``: id -> address)."""
    ids: set[str] = set()
    addresses: dict[str, str] = {}
    running_by_address = {address: terminal for terminal, address in running.items()}
    for spec in specs:
        if spec.terminal_id in ids:
            raise LabError(f"terminal {spec.terminal_id} is requested twice")
        ids.add(spec.terminal_id)
        if spec.address in addresses:
            raise LabError(f"terminals {addresses[spec.address]} and {spec.terminal_id} both want {spec.address}")
        addresses[spec.address] = spec.terminal_id
        if spec.terminal_id in running and running[spec.terminal_id] != spec.address:
            raise LabError(
                f"terminal {spec.terminal_id} already runs on {running[spec.terminal_id]}, not {spec.address}: "
                f"run `ipm-lab down {spec.terminal_id}` first"
            )
        other = running_by_address.get(spec.address)
        if other and other != spec.terminal_id:
            raise LabError(
                f"terminal {spec.terminal_id}: address {spec.address} is in use by running terminal {other}: "
                f"run `ipm-lab down {other}` first"
            )


# The base tree: what debootstrap installs and how it is adjusted. Any change here changes the
# recipe's hash, hence the cached tree's name, hence a rebuild on the next `up`.
BASE_SUITE = "bookworm"
BASE_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-yaml",
    "python3-apt",  # ansible.builtin.apt on the terminal (OS patches)
    "iproute2",
    "procps",
    "sqlite3",  # inspect the application's data store
    "tzdata",  # the site's time zone
    "gpgv",  # apt checks the signature of the project's own package repository (signed-by)
    "wireguard-tools",  # wg: the site VPN
    "wireguard-go",  # WireGuard in userspace (a container has no kernel module to load)
    "nftables",  # the terminal's firewall
    "iputils-ping",  # reachability checks across the VPN
)
# Units a lab terminal does not need: periodic jobs that would burn the shared CPU at random times.
BASE_MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "fstrim.timer",
    "e2scrub_all.timer",
    "systemd-networkd-wait-online.service",
)
BASE_RECIPE_VERSION = 2  # bump when the base adjustments in lab_base.py change


def base_recipe() -> dict:
    """Everything that determines the content of the base tree."""
    return {
        "version": BASE_RECIPE_VERSION,
        "suite": BASE_SUITE,
        "mirror": BASE_MIRROR,
        "variant": "minbase",
        "packages": list(BASE_PACKAGES),
        "masked_units": list(BASE_MASKED_UNITS),
    }


def recipe_hash(recipe: Mapping) -> str:
    """Short, stable hash of a recipe: the cached base tree's name."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
