"""playbooks/patch.yml on 4 real lab terminals of two sites, against the project's own signed mirror.

Site "open" has a maintenance window open for hours (canary pt-*-01, pilot pt-*-02); site "closing"
has one open for about 15 more minutes (pilot pt-*-03, broad pt-*-04): with a reboot budget of 30 min
its terminals are patched but their reboot waits ("reboot pending") until a run whose budget fits.
The mirror (tools/ipm_tools/aptrepo.py) is a real signed repository served on 127.0.72.250; the
terminals run the factory release 2.3.1, whose ``os`` section holds python3 and ipm-runtime.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import aptrepo_fixture as fx

from ipm_tools import aptrepo

pytestmark = pytest.mark.lab

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SERVER_ADDRESS = "127.0.72.250"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MIRROR = tuple(sorted(("ipm-base-tools", "ipm-openssl-sim", "ipm-kernel-sim", "ipm-runtime", "ipm-broken")))


def env(audit_log: Path) -> dict[str, str]:
    variables = dict(os.environ, ANSIBLE_CONFIG=str(PROJECT_ROOT / "ansible.cfg"), IPM_AUDIT_LOG=str(audit_log))
    variables["PATH"] = f"{BIN}{os.pathsep}{variables.get('PATH', '')}"
    return variables


def window_open_for(minutes_left: int) -> list[dict]:
    """A UTC window that opened an hour ago and closes MINUTES_LEFT minutes from now."""
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=60)
    return [{"days": [DAYS[start.weekday()]], "start": start.strftime("%H:%M"), "duration_minutes": 60 + minutes_left}]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, run_lab_command):
    if os.geteuid() != 0:
        pytest.skip("lab terminals need root")
    directory = tmp_path_factory.mktemp("patch")
    prefix = f"pt-{uuid.uuid4().hex[:5]}-"
    names = [f"{prefix}{index:02d}" for index in range(1, 5)]
    servers = []
    try:
        repository = aptrepo.build_repository(directory / "mirror", include_broken=True)
        untrusted = aptrepo.build_repository(directory / "untrusted", sign_with="other")
        server = aptrepo.RepositoryServer(repository.path, SERVER_ADDRESS, 0).start()
        servers.append(server)
        bad_server = aptrepo.RepositoryServer(untrusted.path, SERVER_ADDRESS, 0).start()
        servers.append(bad_server)
        run_lab_command("up", *names)
        hosts = json.loads(run_lab_command("inventory", *names).stdout)["all"]["children"]["lab"]["hosts"]
        sites = {"open": window_open_for(240), "closing": window_open_for(15)}
        placement = {names[0]: ("open", "canary"), names[1]: ("open", "pilot")}
        placement.update({names[2]: ("closing", "pilot"), names[3]: ("closing", "broad")})
        for name, (site, _ring) in placement.items():
            hosts[name].update(
                ipm_terminal_id=name,
                ipm_customer_id="patchco",
                ipm_site_id=site,
                ipm_release="2.3.1",
                ipm_site_timezone="UTC",
                ipm_site_windows=sites[site],
            )
        rings = {
            ring: {"hosts": {n: {} for n, (_s, r) in placement.items() if r == ring}}
            for ring in ("canary", "pilot", "broad")
        }
        inventory = directory / "inventory.yml"
        document = {
            "all": {
                "vars": {
                    "os_patch_mirror_url": server.url,
                    "os_patch_mirror_keyring": str(repository.keyring),
                    "rollout_bake_s": 2,
                    "rollout_bake_interval_s": 1,
                    "patch_reboot_timeout_s": 120,
                    "patch_health_timeout_s": 60,
                },
                "children": {"lab": {"hosts": hosts}, **{f"ring_{ring}": group for ring, group in rings.items()}},
            }
        }
        inventory.write_text(yaml.safe_dump(document, sort_keys=False))
        fx.prepare_terminals({name: hosts[name]["ansible_host"] for name in names}, repository, server.url)
        yield {
            "names": names,
            "hosts": hosts,
            "inventory": inventory,
            "repository": repository,
            "server": server,
            "bad_url": bad_server.url,
            "audit": directory / "audit.jsonl",
        }
    finally:
        run_lab_command("down", "--missing-ok", *names, check=False)
        for server in servers:
            server.stop()


def addresses(fleet, *indexes: int) -> dict[str, str]:
    chosen = [fleet["names"][i] for i in indexes] if indexes else fleet["names"]
    return {name: fleet["hosts"][name]["ansible_host"] for name in chosen}


def patch(fleet, change: str, *options: str) -> subprocess.CompletedProcess:
    command = [
        str(BIN / "ansible-playbook"),
        "-i",
        str(fleet["inventory"]),
        str(PROJECT_ROOT / "playbooks" / "patch.yml"),
    ]
    result = subprocess.run(
        # The lab's customer has no contract in the registry: the authorization wants the intervention justified.
        [*command, "-e", f"change_id={change}", "-e", "justification=lab test: terminals of no contract", *options],
        capture_output=True,
        text=True,
        env=env(fleet["audit"]),
        cwd=PROJECT_ROOT,
        timeout=900,
        check=False,
    )
    # Ansible's YAML output folds long messages over lines: compare words, not line breaks.
    result.stdout = " ".join(result.stdout.split())
    return result


def on_each(fleet, script: str, *indexes: int) -> dict[str, str]:
    targets = addresses(fleet, *indexes)
    answers = {}
    for name, address in targets.items():
        done = fx.ssh(address, script, timeout=120)
        assert done.returncode == 0, f"{name}: {done.stderr}"
        answers[name] = done.stdout.strip()
    return answers


def versions(fleet) -> dict[str, dict[str, str]]:
    """{terminal: {package: version}} of the mirror's installed packages, held ones included ("hi")."""
    script = (
        f"dpkg-query -W -f '${{Package}} ${{Version}} ${{db:Status-Abbrev}}\\n' {' '.join(MIRROR)} 2>/dev/null; true"
    )
    found = {}
    for name, text in on_each(fleet, script).items():
        rows = [line.split() for line in text.splitlines()]
        found[name] = {row[0]: row[1] for row in rows if len(row) >= 3 and row[2][1:2] == "i"}
    return found


def boot_ids(fleet) -> dict[str, str]:
    return on_each(fleet, "cat /proc/sys/kernel/random/boot_id")


def ledger(fleet, change: str) -> dict[str, dict]:
    """The latest patch entry of each terminal under CHANGE (a bake entry replaces its delivery)."""
    command = [str(BIN / "ipm-audit"), "--log", str(fleet["audit"]), "deliveries", "--kind", "patch", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    entries = {}
    for entry in json.loads(result.stdout):
        if entry["change_id"] == change and entry["result"] != "baked":
            entries[entry["terminal"]] = entry
    return entries


BASELINE = {
    "ipm-base-tools": "1.0",
    "ipm-broken": "1.0",
    "ipm-kernel-sim": "1.0",
    "ipm-openssl-sim": "1.0",
    "ipm-runtime": "1.0",
}
SECURITY = dict(BASELINE, **{"ipm-kernel-sim": "1.1", "ipm-openssl-sim": "1.0+sec1"})


def test_1_check_mode_lists_the_upgrades_and_changes_nothing(fleet):
    lists_before = on_each(fleet, "ls -l --time-style=full-iso /var/lib/apt/lists; apt-mark showhold")
    result = patch(fleet, "CHG-9101", "-e", "patch_scope=all", "--check", "--diff")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "+++ after: packages after (would be)" in result.stdout
    for line in ("-ipm-base-tools 1.0", "+ipm-base-tools 1.1", "-ipm-openssl-sim 1.0", "+ipm-openssl-sim 1.1"):
        assert line in result.stdout
    assert "ipm-runtime 2.0" not in result.stdout  # held: never even proposed
    assert versions(fleet) == {name: BASELINE for name in fleet["names"]}
    assert on_each(fleet, "ls -l --time-style=full-iso /var/lib/apt/lists; apt-mark showhold") == lists_before
    assert ledger(fleet, "CHG-9101") == {}  # a --check run records nothing in the ledger


def test_2_security_scope_takes_only_security_updates_and_reboots_only_inside_the_window(fleet):
    before = boot_ids(fleet)
    result = patch(fleet, "CHG-9102", "-e", "patch_scope=security", "-e", "patch_reboot_budget_s=1800")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert versions(fleet) == {name: SECURITY for name in fleet["names"]}
    after = boot_ids(fleet)
    open_site, closing_site = fleet["names"][:2], fleet["names"][2:]
    assert all(after[name] != before[name] for name in open_site), "the open site's terminals rebooted"
    assert all(after[name] == before[name] for name in closing_site), "15 min left < 30 min budget: no reboot"
    pending = on_each(fleet, "test -e /var/run/reboot-required && echo pending || echo none")
    assert {name: pending[name] for name in closing_site} == {name: "pending" for name in closing_site}
    assert {name: pending[name] for name in open_site} == {name: "none" for name in open_site}
    entries = ledger(fleet, "CHG-9102")
    for name in open_site:
        assert entries[name]["result"] == "delivered", entries[name]
        assert "ipm-kernel-sim 1.0 -> 1.1" in entries[name]["reason"]
        assert "rebooted, ipm-app healthy" in entries[name]["reason"]
    for name in closing_site:
        assert entries[name]["result"] == "reboot_pending", entries[name]
        assert "patch_reboot_budget_s" in entries[name]["reason"]
    holds = on_each(fleet, "apt-mark showhold")
    assert all(set(text.split()) == {"ipm-runtime", "python3"} for text in holds.values()), holds
    health = on_each(fleet, "systemctl is-active ipm-app")
    assert set(health.values()) == {"active"}


def test_3_a_second_run_changes_nothing(fleet):
    before = boot_ids(fleet)
    result = patch(fleet, "CHG-9103", "-e", "patch_scope=security", "-e", "patch_reboot_budget_s=1800")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    for name in fleet["names"]:
        assert f"{name} : ok=" in result.stdout and f"{name} : " in result.stdout
        recap = result.stdout.split(f"{name} : ", 1)[1].split(" rescued=")[0]
        assert "changed=0" in recap, recap
    assert boot_ids(fleet) == before
    entries = ledger(fleet, "CHG-9103")
    assert [entries[name]["result"] for name in fleet["names"]] == [
        "already_current",
        "already_current",
        "reboot_pending",
        "reboot_pending",
    ]


def test_4_the_next_run_with_time_in_the_window_does_the_pending_reboot(fleet):
    before = boot_ids(fleet)
    result = patch(fleet, "CHG-9104", "-e", "patch_scope=security", "-e", "patch_reboot_budget_s=60")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    after = boot_ids(fleet)
    open_site, closing_site = fleet["names"][:2], fleet["names"][2:]
    assert all(after[name] == before[name] for name in open_site)
    assert all(after[name] != before[name] for name in closing_site)
    entries = ledger(fleet, "CHG-9104")
    for name in closing_site:
        assert entries[name]["result"] == "delivered"
        assert "the reboot pending since an earlier run" in entries[name]["reason"]
    assert set(on_each(fleet, "test -e /var/run/reboot-required && echo pending || echo none").values()) == {"none"}


def test_5_a_failing_postinst_leaves_dpkg_consistent_and_a_held_package_stays(fleet):
    name = fleet["names"][1]
    on_each(fleet, "apt-mark unhold ipm-runtime", 1)  # drift: someone released the release's hold
    result = patch(fleet, "CHG-9105", "-e", "patch_scope=all", "-e", f"patch_hosts={name}")
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr
    assert "ROLLOUT HALTED in ring pilot" in result.stdout
    (state,) = on_each(fleet, "dpkg --audit; echo audit=$?; apt-mark showhold; systemctl is-active ipm-app", 1).values()
    assert state.split() == ["audit=0", "ipm-runtime", "python3", "active"]
    installed = versions(fleet)[name]
    assert installed["ipm-broken"] == "1.0"  # its failed upgrade was put back
    assert installed["ipm-runtime"] == "1.0"  # held: 2.0 is in the mirror, never installed
    assert installed["ipm-base-tools"] == "1.1" and installed["ipm-openssl-sim"] == "1.1"
    entry = ledger(fleet, "CHG-9105")[name]
    assert entry["result"] == "failed"
    assert "dpkg: error processing package ipm-broken (--configure)" in entry["reason"]
    assert "post-installation script subprocess returned error exit status 1" in entry["reason"]
    assert "dpkg --audit clean" in entry["reason"] and "ipm-broken back on 1.0" in entry["reason"]
    assert "hold drift: ipm-runtime was no longer held (release 2.3.1 needs >=1.0,<2.0): held again" in entry["reason"]


def test_6_an_unknown_scope_stops_before_anything(fleet):
    before = versions(fleet)
    result = patch(fleet, "CHG-9106", "-e", "patch_scope=everything")
    assert result.returncode != 0
    assert "patch_scope: expected one of security, all, found 'everything'" in result.stdout + result.stderr
    assert "TASK [ipm.fleet.os_patch" not in result.stdout
    assert versions(fleet) == before
    assert ledger(fleet, "CHG-9106") == {}


def test_7_a_repository_that_does_not_answer_loses_a_package_or_is_wrongly_signed_installs_nothing(fleet):
    name = fleet["names"][0]
    fx.reset_terminals(addresses(fleet, 0), fleet["repository"])
    fleet["server"].stop()
    try:
        down = patch(fleet, "CHG-9107", "-e", f"patch_hosts={name}")
    finally:
        fleet["server"].start()
    assert down.returncode == 2
    assert versions(fleet)[name] == BASELINE
    entry = ledger(fleet, "CHG-9107")[name]
    assert entry["result"] == "failed" and "the package repository did not answer" in entry["reason"], entry
    assert "nothing was installed" in entry["reason"]

    # The mirror's lists answer, then one of its packages is gone (the mirror lost mid-run): every
    # package is downloaded before dpkg runs, so nothing is installed.
    package = fleet["repository"].path / "pool" / "bookworm-ipm-security" / "main" / "ipm-kernel-sim_1.1_all.deb"
    package.rename(package.with_suffix(".away"))
    try:
        lost = patch(fleet, "CHG-9110", "-e", f"patch_hosts={name}")
    finally:
        package.with_suffix(".away").rename(package)
    assert lost.returncode == 2
    assert versions(fleet)[name] == BASELINE
    entry = ledger(fleet, "CHG-9110")[name]
    assert entry["result"] == "failed" and "could not be downloaded" in entry["reason"], entry
    assert "nothing was installed" in entry["reason"]
    assert on_each(fleet, "dpkg --audit; echo $?", 0)[name] == "0"

    bad = patch(fleet, "CHG-9108", "-e", f"patch_hosts={name}", "-e", f"os_patch_mirror_url={fleet['bad_url']}")
    assert bad.returncode == 2
    assert versions(fleet)[name] == BASELINE
    entry = ledger(fleet, "CHG-9108")[name]
    assert entry["result"] == "failed" and "signature was refused" in entry["reason"], entry
    assert "nothing was installed" in entry["reason"]
    # Back on the trusted mirror, the same terminal patches again.
    again = patch(fleet, "CHG-9109", "-e", f"patch_hosts={name}", "-e", "patch_reboot_budget_s=60")
    assert again.returncode == 0, again.stdout[-3000:]
    assert versions(fleet)[name] == SECURITY


def module(fleet, index: int, arguments: str) -> dict:
    """ipm.fleet.os_patch run alone (ad hoc) on one terminal; its result (ansible --tree writes it as JSON)."""
    name = fleet["names"][index]
    tree = fleet["audit"].parent / f"tree-{uuid.uuid4().hex[:6]}"
    command = [str(BIN / "ansible"), "-i", str(fleet["inventory"]), name, "-m", "ipm.fleet.os_patch"]
    subprocess.run(
        [*command, "-a", arguments, "-t", str(tree)],
        capture_output=True,
        text=True,
        env=env(fleet["audit"]),
        timeout=300,
        check=False,
    )
    return json.loads((tree / name).read_text())


def hold_dpkg_lock(seconds: int) -> str:
    """Shell lines that hold dpkg's frontend lock for SECONDS in the background (its pid in /run/p2-lock.pid)."""
    program = (
        "import fcntl,time; f=open('/var/lib/dpkg/lock-frontend','w'); "
        f"fcntl.lockf(f, fcntl.LOCK_EX); time.sleep({seconds})"
    )
    return f'nohup python3 -c "{program}" >/dev/null 2>&1 & echo $! > /run/p2-lock.pid; sleep 0.5'


def test_8_the_module_waits_for_the_dpkg_lock_and_repairs_an_interrupted_dpkg(fleet):
    name = fleet["names"][3]
    on_each(fleet, hold_dpkg_lock(4), 3)
    waited = module(fleet, 3, "lock_timeout=30 update=false")
    assert "msg" not in waited, waited
    assert waited["lock_waited_s"] >= 2
    on_each(fleet, hold_dpkg_lock(60), 3)
    try:
        refused = module(fleet, 3, "lock_timeout=1 update=false")
    finally:
        on_each(fleet, "kill $(cat /run/p2-lock.pid) 2>/dev/null; sleep 0.3; true", 3)
    assert "the package lock /var/lib/dpkg/lock-frontend is held by pid" in refused.get("msg", ""), refused
    assert "python3" in refused["msg"]
    # An interrupted dpkg: a package unpacked, never configured.
    unpack = "cd /tmp && apt-get download -q ipm-base-tools=1.1 >/dev/null && dpkg --unpack ipm-base-tools_1.1_all.deb"
    on_each(fleet, unpack + " >/dev/null", 3)
    assert on_each(fleet, "dpkg --audit | head -1", 3)[name]
    repaired = module(fleet, 3, "update=false")
    assert "msg" not in repaired, repaired
    assert repaired["repaired"][0].startswith("dpkg --configure -a")
    assert on_each(fleet, "dpkg --audit; echo $?", 3)[name] == "0"
