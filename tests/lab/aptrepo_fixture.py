"""Lab terminals on the vendor mirror of ipm-aptrepo: the apt source, its keyring, the baseline packages.

``prepare_terminals(terminals, repository, url)`` writes the deb822 source
``/etc/apt/sources.list.d/ipm-mirror.sources`` and the keyring ``/etc/apt/keyrings/ipm-mirror.gpg``
on each terminal over real SSH (the lab key, host keys checked), runs ``apt-get update`` for that
source only (a terminal's other sources, if any, are not asked) and installs the baseline versions.
``reset_terminals(terminals, repository)`` brings them back to that baseline (downgrades, no holds
on the mirror's packages, no pending reboot), between benchmark rounds or tests. Terminals run in
parallel. TERMINALS is a ``LabTerminals`` (tests/conftest.py) or a mapping of terminal id to address.
"""

from __future__ import annotations

import base64
import shlex
import subprocess
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from ipm_tools.aptrepo import COMPONENT, Repository

SOURCE_FILE = "/etc/apt/sources.list.d/ipm-mirror.sources"
KEYRING_FILE = "/etc/apt/keyrings/ipm-mirror.gpg"
LAB_KEY = "/var/lib/ipm-lab/ssh/id_ed25519"
KNOWN_HOSTS = "/var/lib/ipm-lab/ssh/known_hosts"
# apt-get reading only the mirror's source: a terminal's other sources are not asked (no network here).
MIRROR_ONLY = f"-o Dir::Etc::sourcelist={SOURCE_FILE} -o Dir::Etc::sourceparts=/nonexistent -o APT::Get::List-Cleanup=0"
APT_INSTALL = (
    "DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Options::=--force-confold "
    "--allow-downgrades --allow-change-held-packages"
)


def addresses(terminals) -> dict[str, str]:
    """{terminal id: address} of a LabTerminals or of a mapping (id to address or to inventory variables)."""
    if hasattr(terminals, "hosts") and hasattr(terminals, "names"):
        return {name: terminals.address(name) for name in terminals.names}
    if isinstance(terminals, Mapping):
        return {
            name: value["ansible_host"] if isinstance(value, Mapping) else str(value)
            for name, value in terminals.items()
        }
    raise TypeError("terminals: a LabTerminals or a mapping of terminal id to address")


def ssh(address: str, script: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the shell SCRIPT as root on the terminal at ADDRESS over real SSH (lab key, host key checked)."""
    command = [
        "ssh", "-i", LAB_KEY, "-o", f"UserKnownHostsFile={KNOWN_HOSTS}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR", f"root@{address}", "sh", "-s",
    ]  # fmt: skip
    return subprocess.run(command, input=script, capture_output=True, text=True, timeout=timeout, check=False)


def _on_each(terminals, script_of, what: str) -> dict[str, subprocess.CompletedProcess]:
    """Run script_of(name) on each terminal in parallel; AssertionError naming every terminal that failed."""
    targets = addresses(terminals)
    with ThreadPoolExecutor(max_workers=max(1, min(len(targets), 20))) as pool:
        results = dict(zip(targets, pool.map(lambda name: ssh(targets[name], script_of(name)), targets), strict=True))
    failed = [
        f"{name}: {what} failed ({result.returncode}): {(result.stderr or result.stdout).strip()[-600:]}"
        for name, result in results.items()
        if result.returncode != 0
    ]
    if failed:
        raise AssertionError("\n".join(failed))
    return results


def source_text(repository: Repository, url: str) -> str:
    """The deb822 source of the mirror (every suite, Signed-By the mirror's keyring)."""
    return (
        f"Types: deb\nURIs: {url}\nSuites: {' '.join(repository.suites)}\nComponents: {COMPONENT}\n"
        f"Signed-By: {KEYRING_FILE}\n"
    )


def baseline_script(repository: Repository) -> str:
    """Shell lines that put the mirror's packages back at their baseline versions, unheld, no reboot pending."""
    baseline = repository.baseline()
    names = " ".join(sorted(baseline))
    wanted = " ".join(f"{name}={version}" for name, version in sorted(baseline.items()))
    return (
        # a broken package of an earlier run (ipm-broken's postinst) must not block the downgrade
        "dpkg --configure -a >/dev/null 2>&1 || true\n"
        f"apt-mark unhold {names} >/dev/null\n"
        f"{APT_INSTALL} {wanted} >/dev/null\n"
        "rm -f /var/run/reboot-required /var/run/reboot-required.pkgs\n"
    )


def prepare_terminals(terminals, repository: Repository, url: str) -> None:
    """Point each terminal at the mirror (source and keyring), apt-get update it, install the baseline."""
    keyring = base64.b64encode(repository.keyring.read_bytes()).decode()
    script = (
        "set -e\n"
        "install -d -m 0755 /etc/apt/keyrings /etc/apt/sources.list.d\n"
        f"echo {keyring} | base64 -d > {KEYRING_FILE}.new\n"
        f"chmod 0644 {KEYRING_FILE}.new && mv {KEYRING_FILE}.new {KEYRING_FILE}\n"
        f"printf '%s' {shlex.quote(source_text(repository, url))} > {SOURCE_FILE}\n"
        f"apt-get update -q {MIRROR_ONLY} >/dev/null\n" + baseline_script(repository)
    )
    _on_each(terminals, lambda name: script, "preparing the mirror")


def reset_terminals(terminals, repository: Repository) -> None:
    """Back to the baseline: the mirror's packages downgraded and unheld, /var/run/reboot-required removed.

    apt's package cache is emptied too: an upgrade fetched in an earlier round must not be installed
    from the cache when the test takes it off the mirror (the "mirror lost mid-run" case).
    """
    script = "set -e\n" + baseline_script(repository) + "apt-get clean\n"
    _on_each(terminals, lambda name: script, "resetting to the baseline")


def installed_versions(terminals, repository: Repository) -> dict[str, dict[str, str]]:
    """{terminal: {package: installed version}} of the mirror's packages (dpkg-query), held ones included."""
    names = " ".join(sorted(repository.packages))
    script = f"dpkg-query -W -f '${{Package}} ${{Version}} ${{db:Status-Abbrev}}\\n' {names} 2>/dev/null || true\n"
    results = _on_each(terminals, lambda name: script, "dpkg-query")
    versions: dict[str, dict[str, str]] = {}
    for name, result in results.items():
        versions[name] = {}
        for line in result.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2][1:2] == "i":  # installed (ii, or hi when held)
                versions[name][parts[0]] = parts[1]
    return versions
