# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a terminal is and runs, read from its files: the ``ipm_terminal`` fact.

Each section (hardware, os, application, parameters, interfaces) is collected on its own; a section
that cannot be read carries ``unknown: <reason>`` and the others are still returned, so a terminal
with a missing identity file or a corrupt apt list is described as far as it can be, never failed.

Everything is read under ``root`` (``/`` on a terminal) so that the parsers can be tested on a tree.
Standard library only (python3-yaml when present): this runs on terminals.
"""

from __future__ import annotations

import contextlib
import datetime
import glob
import hashlib
import json
import os
import re
import subprocess

from ansible_collections.ipm.fleet.plugins.module_utils import (
    app_health,
    os_patch_rules,
    release_manifest,
    secret_values,
)

SECTIONS = ("hardware", "os", "application", "parameters", "interfaces")
RELEASES_DIR = "opt/ipm/app/releases"
CURRENT_LINK = "opt/ipm/app/current"


def _path(root, relative):
    return os.path.join(root, relative)


def _read_text(root, relative):
    with open(_path(root, relative), encoding="utf-8") as handle:
        return handle.read()


def _load_mapping(root, relative):
    """A YAML mapping file; ValueError with the reason when it is missing, unreadable or not a mapping."""
    try:
        text = _read_text(root, relative)
    except FileNotFoundError:
        raise ValueError("/%s is missing" % relative) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError("/%s is unreadable: %s" % (relative, exc)) from None
    try:
        data = release_manifest.load_yaml_text(text, "/" + relative)
    except release_manifest.ReleaseError as exc:
        raise ValueError(str(exc)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError("/%s: expected a mapping, found %s" % (relative, type(data).__name__))
    return data


# --- hardware ---------------------------------------------------------------------------------


def collect_hardware(root):
    facts = {"model": None, "serial_number": None}
    try:
        identity = _load_mapping(root, "etc/ipm/hardware.yml")
        facts["model"] = identity.get("model")
        facts["serial_number"] = identity.get("serial_number")
        if not facts["model"] or not facts["serial_number"]:
            facts["unknown"] = "/etc/ipm/hardware.yml lacks model or serial_number"
    except ValueError as exc:
        facts["unknown"] = str(exc)
    try:
        cpuinfo = _read_text(root, "proc/cpuinfo")
        models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
        facts["cpu"] = {
            "model": models[0].strip() if models else None,
            "count": len(re.findall(r"^processor\s*:", cpuinfo, re.M)),
        }
    except OSError:
        facts["cpu"] = None
    try:
        meminfo = dict(re.findall(r"^(\w+):\s+(\d+) kB$", _read_text(root, "proc/meminfo"), re.M))
        facts["memory_mib"] = int(meminfo["MemTotal"]) // 1024
        facts["memory_available_mib"] = int(meminfo.get("MemAvailable", 0)) // 1024
    except (OSError, KeyError):
        facts["memory_mib"] = None
    target = _path(root, "opt/ipm") if os.path.isdir(_path(root, "opt/ipm")) else root
    stat = os.statvfs(target)
    facts["disk_free_mib"] = stat.f_bavail * stat.f_frsize // (1024 * 1024)
    facts["disk_total_mib"] = stat.f_blocks * stat.f_frsize // (1024 * 1024)
    return facts


# --- OS and packages --------------------------------------------------------------------------


def _order(char):
    """Debian's ordering of one character of a version part (~ sorts before everything, even the end)."""
    if char == "~":
        return -1
    if char.isdigit():
        return 0
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_part(left, right):
    while left or right:
        left_text = re.match(r"^\D*", left).group(0)
        right_text = re.match(r"^\D*", right).group(0)
        for index in range(max(len(left_text), len(right_text)) + 1):
            a = _order(left_text[index]) if index < len(left_text) else 0
            b = _order(right_text[index]) if index < len(right_text) else 0
            if a != b:
                return -1 if a < b else 1
        left, right = left[len(left_text) :], right[len(right_text) :]
        left_number = re.match(r"^\d*", left).group(0)
        right_number = re.match(r"^\d*", right).group(0)
        if int(left_number or 0) != int(right_number or 0):
            return -1 if int(left_number or 0) < int(right_number or 0) else 1
        left, right = left[len(left_number) :], right[len(right_number) :]
    return 0


def compare_debian_versions(left, right):
    """-1, 0 or 1 as Debian (dpkg --compare-versions) orders two package versions."""

    def split(version):
        epoch, rest = version.split(":", 1) if ":" in version else ("0", version)
        upstream, revision = rest.rsplit("-", 1) if "-" in rest else (rest, "0")
        return int(epoch or 0), upstream, revision

    left_epoch, left_upstream, left_revision = split(left)
    right_epoch, right_upstream, right_revision = split(right)
    if left_epoch != right_epoch:
        return -1 if left_epoch < right_epoch else 1
    return _compare_part(left_upstream, right_upstream) or _compare_part(left_revision, right_revision)


def parse_dpkg_status(text):
    """{package: version} of the packages dpkg lists as installed."""
    installed = {}
    for stanza in text.split("\n\n"):
        fields = dict(re.findall(r"^(Package|Status|Version): (.*)$", stanza, re.M))
        if fields.get("Status", "").endswith(" installed") and "Package" in fields and "Version" in fields:
            installed[fields["Package"]] = fields["Version"]
    return installed


_HOLD = re.compile(r"^Package: (\S+)\n(?:[^\n]+\n)*?Status: hold ", re.M)


def parse_dpkg_holds(text):
    """Sorted names of the packages dpkg keeps on hold (``Status: hold ...``, what ``apt-mark hold`` sets)."""
    return sorted(set(_HOLD.findall(text if text.endswith("\n") else text + "\n")))


REBOOT_REQUIRED = "var/run/reboot-required"


def reboot_required(root):
    """Whether the terminal waits for a reboot: ``/var/run/reboot-required`` (Debian's reboot-notifier).

    ``required``, ``packages`` (from ``/var/run/reboot-required.pkgs``, in order, once each) and
    ``since`` (the file's modification time, UTC, ISO 8601), None when no reboot is required.
    """
    try:
        stat = os.stat(_path(root, REBOOT_REQUIRED))
    except (FileNotFoundError, NotADirectoryError):
        return {"required": False, "packages": [], "since": None}
    packages = []
    with contextlib.suppress(OSError, UnicodeDecodeError):
        lines = _read_text(root, REBOOT_REQUIRED + ".pkgs").splitlines()
        packages = list(dict.fromkeys(line.strip() for line in lines if line.strip()))
    since = datetime.datetime.fromtimestamp(int(stat.st_mtime), datetime.timezone.utc)
    return {"required": True, "packages": packages, "since": since.strftime("%Y-%m-%dT%H:%M:%SZ")}


def parse_packages_index(data, wanted, source):
    """{package: version} from an apt Packages index (bytes or text), for the WANTED names only.

    The index is scanned as bytes with str.find, and only the stanzas of wanted packages are read
    further, so a 50 MB index costs about 0.2 s instead of a second or more of decoding and
    line splitting. Raises ValueError naming SOURCE when the index is corrupt (a package without a
    version).
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    data = b"\n" + data
    packages = data.count(b"\nPackage: ")
    versions = data.count(b"\nVersion: ")
    if packages != versions:
        raise ValueError("%s: corrupt index, %d packages but %d versions" % (source, packages, versions))
    wanted_bytes = {name.encode("utf-8") for name in wanted}
    found = {}
    find = data.find
    position = 0
    while True:
        start = find(b"\nPackage: ", position)
        if start < 0:
            break
        end_of_line = find(b"\n", start + 10)
        if end_of_line < 0:
            end_of_line = len(data)
        name = data[start + 10 : end_of_line].strip()
        position = end_of_line
        if name not in wanted_bytes:
            continue
        end_of_stanza = find(b"\n\n", end_of_line)
        if end_of_stanza < 0:
            end_of_stanza = len(data)
        version_at = find(b"\nVersion: ", end_of_line - 1, end_of_stanza)
        if version_at < 0:
            raise ValueError("%s: corrupt index, package %s has no Version" % (source, name.decode("utf-8", "replace")))
        version_end = find(b"\n", version_at + 10)
        candidate = (
            data[version_at + 10 : version_end if version_end >= 0 else len(data)].strip().decode("utf-8", "replace")
        )
        package = name.decode("utf-8")
        if package not in found or compare_debian_versions(candidate, found[package]) > 0:
            found[package] = candidate
    return found


def _read_index(path):
    """Bytes of an apt Packages index, plain or compressed the ways the standard library can read."""
    if path.endswith(".gz"):
        import gzip

        with gzip.open(path, "rb") as handle:
            return handle.read()
    if path.endswith(".xz"):
        import lzma

        with lzma.open(path, "rb") as handle:
            return handle.read()
    if path.endswith((".lz4", ".zst", ".bz2")):
        raise ValueError("%s is compressed in a format this reader does not open" % path)
    with open(path, "rb") as handle:
        return handle.read()


def _os_release(root):
    release = {}
    for relative in ("etc/os-release", "usr/lib/os-release"):
        try:
            for line in _read_text(root, relative).splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    release[key.strip()] = value.strip().strip('"')
            return release
        except OSError:
            continue
    raise ValueError("neither /etc/os-release nor /usr/lib/os-release is readable")


def os_identity(root):
    """(id such as debian-12, the os-release fields); ValueError when os-release is unreadable."""
    release = _os_release(root)
    major = release.get("VERSION_ID", "").split(".")[0]
    return ("%s-%s" % (release.get("ID", "unknown"), major) if major else release.get("ID")), release


UPDATES_CACHE = "run/ipm/facts-updates.json"


def _pending_updates(installed, lists):
    """(pending, security, problems) from the apt lists: the packages with a newer candidate."""
    pending, security, problems = {}, {}, []
    for path in lists:
        name = os.path.basename(path)
        try:
            candidates = parse_packages_index(_read_index(path), installed, "/var/lib/apt/lists/" + name)
        except (OSError, EOFError, ValueError) as exc:
            problems.append("/var/lib/apt/lists/%s: %s" % (name, exc) if not isinstance(exc, ValueError) else str(exc))
            continue
        for package, version in candidates.items():
            if compare_debian_versions(version, installed[package]) > 0:
                update = {"installed": installed[package], "candidate": version}
                if package not in pending or compare_debian_versions(version, pending[package]["candidate"]) > 0:
                    pending[package] = update
                if os_patch_rules.is_security_list(name):
                    security[package] = update
    return pending, security, problems


def _cached_updates(root, installed, lists):
    """_pending_updates, remembered in /run/ipm (volatile) until dpkg's status or an apt list changes.

    Reading the lists costs about 0.2 s per 50 MB on a terminal; they change when apt-get update
    runs, not between two facts runs. The key is each file's path, size and modification time.
    """
    key = []
    for path in [_path(root, "var/lib/dpkg/status"), *lists]:
        with contextlib.suppress(OSError):
            stat = os.stat(path)
            key.append([os.path.basename(path), stat.st_size, stat.st_mtime_ns])
    cache = _path(root, UPDATES_CACHE)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        with open(cache, encoding="utf-8") as handle:
            cached = json.load(handle)
        if cached["key"] == key:
            return cached["pending"], cached["security"], cached["problems"]
    pending, security, problems = _pending_updates(installed, lists)
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(cache), mode=0o755, exist_ok=True)
        temporary = "%s.%d" % (cache, os.getpid())
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump({"key": key, "pending": pending, "security": security, "problems": problems}, handle)
        os.rename(temporary, cache)
    return pending, security, problems


def collect_os(root, include_packages=True):
    facts = {}
    try:
        os_id, release = os_identity(root)
        facts.update(
            id=os_id,
            distribution=release.get("PRETTY_NAME"),
            version=release.get("VERSION_ID"),
            codename=release.get("VERSION_CODENAME"),
        )
        with contextlib.suppress(OSError):
            facts["point_release"] = _read_text(root, "etc/debian_version").strip()
    except ValueError as exc:
        facts["unknown"] = str(exc)
    facts["kernel"] = os.uname().release
    facts["reboot_required"] = reboot_required(root)
    try:
        status = _read_text(root, "var/lib/dpkg/status")
    except OSError as exc:
        facts["packages_unknown"] = "/var/lib/dpkg/status unreadable: %s" % exc
        return facts
    installed = parse_dpkg_status(status)
    facts["held_packages"] = parse_dpkg_holds(status)
    facts["package_count"] = len(installed)
    if include_packages:
        facts["packages"] = installed
    lists = sorted(p for p in glob.glob(_path(root, "var/lib/apt/lists/*_Packages*")) if not p.endswith(".diff_Index"))
    pending, security, problems = _cached_updates(root, installed, lists)
    facts["apt_lists"] = len(lists)
    if problems:
        facts["updates_unknown"] = "; ".join(problems)
    elif not lists:
        facts["updates_unknown"] = "no apt lists under /var/lib/apt/lists (run apt-get update)"
    facts["pending_updates"] = pending
    facts["pending_security_updates"] = security
    return facts


# --- application ------------------------------------------------------------------------------


def _version_key(version):
    parsed = release_manifest.version_tuple(version)
    return (0, parsed, "") if parsed else (1, (), version)


def _service_state(unit):
    try:
        output = subprocess.run(
            ["systemctl", "show", unit, "--property=ActiveState,SubState,UnitFileState,NRestarts,MainPID"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"unknown": "systemctl show %s failed: %s" % (unit, exc)}
    values = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    if not values.get("ActiveState"):
        return {"unknown": "systemctl show %s gave no state (is systemd running?)" % unit}
    return {
        "active": values.get("ActiveState"),
        "sub": values.get("SubState"),
        "enabled": values.get("UnitFileState"),
        "restarts": int(values.get("NRestarts") or 0),
        "main_pid": int(values.get("MainPID") or 0),
    }


def _health(address, port, timeout):
    """ipm-app's answer on /health, asked where app_health says an application bound to ADDRESS answers."""
    # http.client rather than urllib or Ansible's open_url: one plain request to the terminal itself,
    # without loading the TLS, proxy and cookie machinery on every facts run.
    import http.client

    url = app_health.health_url(address, port)
    connection = http.client.HTTPConnection(app_health.health_host(address), port, timeout=timeout)
    try:
        connection.request("GET", app_health.HEALTH_PATH)
        response = connection.getresponse()
        body = response.read()
        try:
            answer = json.loads(body.decode("utf-8"))
        except ValueError:
            answer = {}
        return dict(answer if isinstance(answer, dict) else {}, http_status=response.status, url=url)
    except (OSError, http.client.HTTPException) as exc:
        return {"unknown": "no health answer from %s: %s" % (url, exc), "url": url}
    finally:
        connection.close()


def collect_application(root, health_timeout=2.0, query_service=True):
    releases_dir = _path(root, RELEASES_DIR)
    facts = {"releases": [], "current": None}
    try:
        facts["releases"] = sorted(
            (d for d in os.listdir(releases_dir) if os.path.isdir(os.path.join(releases_dir, d))), key=_version_key
        )
    except FileNotFoundError:
        facts["unknown"] = "no application installed (/%s missing)" % RELEASES_DIR
    link = _path(root, CURRENT_LINK)
    if os.path.islink(link):
        facts["current"] = os.path.basename(os.readlink(link).rstrip("/"))
        if facts["current"] not in facts["releases"]:
            facts["unknown"] = "/%s points at %s, which is not installed" % (CURRENT_LINK, os.readlink(link))
    if query_service:
        facts["service"] = _service_state("ipm-app.service")
        address = None
        with contextlib.suppress(ValueError):
            address = _load_mapping(root, "etc/ipm/app.yml").get("listen_address")
        facts["health"] = _health(address, app_health.HEALTH_PORT, health_timeout)
    return facts


# --- parameters -------------------------------------------------------------------------------


def _current_definition(root):
    try:
        return release_manifest.load_definition(_path(root, CURRENT_LINK + "/manifest.yml"))
    except Exception:  # any unreadable manifest: parameters are then redacted by key name only
        return None


def redact_parameters(values, definition):
    """VALUES with every secret masked: by the release DEFINITION's schema, or by name when there is none."""
    return secret_values.mask_parameters(values, (definition or {}).get("parameters"))


def collect_parameters(root):
    facts = {}
    try:
        values = _load_mapping(root, "etc/ipm/app.yml")
    except ValueError as exc:
        return {"unknown": str(exc), "values": None, "sha256": None}
    definition = _current_definition(root)
    effective = values
    if definition:
        try:
            effective = release_manifest.effective_parameters(definition, values)
        except release_manifest.ReleaseError as exc:
            facts["invalid"] = str(exc)
    facts["values"] = redact_parameters(effective, definition)
    facts["sha256"] = release_manifest.parameters_digest(effective)
    facts["file_sha256"] = hashlib.sha256(_read_text(root, "etc/ipm/app.yml").encode("utf-8")).hexdigest()
    return facts


# --- interfaces -------------------------------------------------------------------------------


def collect_interfaces(root):
    try:
        configured = _load_mapping(root, "etc/ipm/interfaces.yml").get("interfaces") or []
    except ValueError as exc:
        return {"unknown": str(exc)}
    if not isinstance(configured, list):
        return {"unknown": "/etc/ipm/interfaces.yml: interfaces must be a list"}
    devices = {}
    for entry in configured:
        if not isinstance(entry, dict) or not entry.get("name"):
            continue
        device = entry.get("device") or "/dev/ipm/%s" % entry["name"]
        devices[entry["name"]] = {
            "type": entry.get("type"),
            "device": device,
            "present": os.path.exists(_path(root, device.lstrip("/"))),
            "settings": {k: v for k, v in entry.items() if k not in ("name", "type", "device")},
        }
    return {"devices": devices, "count": len(devices)}


# --- all --------------------------------------------------------------------------------------


def collect(root="/", sections=SECTIONS, include_packages=True, health_timeout=2.0, query_service=True):
    """The ``ipm_terminal`` fact: every requested section, each with ``unknown`` where it could not be read."""
    collectors = {
        "hardware": lambda: collect_hardware(root),
        "os": lambda: collect_os(root, include_packages),
        "application": lambda: collect_application(root, health_timeout, query_service),
        "parameters": lambda: collect_parameters(root),
        "interfaces": lambda: collect_interfaces(root),
    }
    facts = {}
    for section in sections:
        try:
            facts[section] = collectors[section]()
        except Exception as exc:  # a section never fails the terminal: it is reported as unknown
            facts[section] = {"unknown": "%s: %s" % (type(exc).__name__, exc)}
    return facts
