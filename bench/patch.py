"""Benchmark: playbooks/patch.yml against a plain parallel ``ssh root@T apt-get -y upgrade`` (the floor).

    sudo .venv/bin/python bench/patch.py [--terminals 20] [--rounds 2]

Builds the lab's signed vendor mirror (``ipm-aptrepo``), serves it on 127.0.73.250, boots N lab
terminals (``pb-<random>-NN``; stopped again at the end, also on failure) and puts them on the
mirror at the baseline versions (tests/lab/aptrepo_fixture.py). Each round installs the same set of
updates on all of them four times, resetting the terminals to the baseline in between (not timed),
the order reversed every other round:

- ansible: ``ansible-playbook playbooks/patch.yml -e change_id=CHG-BENCH -e patch_scope=all``
  (one ring in one wave, a window open all day, no bake, forks N);
- floor: one thread per terminal, one ssh command each (with a control master, as Ansible's
  ControlPersist): ``apt-mark hold`` the packages release 2.3.1 declares (its ``os`` section, what
  patch.yml holds), ``apt-get update``, ``apt-get -y upgrade``;
- two references, not contenders, with forks N, the same inventory and ansible.cfg:
  ansible_adhoc, ``ansible all -m ansible.builtin.shell -a <the floor's command>`` (one Ansible module
  per terminal, no rings, gate, holds check, health or ledger), and ansible_raw, the same command with
  ``-m ansible.builtin.raw`` (no module at all: Ansible's SSH connections and workers only). Their
  ratios to the floor show how much of the goal's margin Ansible itself takes on this machine, where
  the controller and the N terminals share the same cores.

All four end with the newest version of every package of the mirror on every terminal, the held
ipm-runtime aside (checked after each run, not timed). No run reboots: the kernel package's reboot
is left pending by the playbook (``patch_reboot_budget_s`` above what the window has left), as the
floor leaves it. Prints each round, the medians and the references' ratios; last line
``patch terminals=<N> ansible_s=<s> floor_s=<s> ratio=<r>`` (goal: ratio 1.5 or less).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "collections"))
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests" / "lab"))
from aptrepo_fixture import installed_versions, prepare_terminals, reset_terminals  # noqa: E402

from ipm_tools import aptrepo  # noqa: E402
from ipm_tools.lab import ssh_options  # noqa: E402

ADDRESS = "127.0.73.250"
PLAYBOOK = ROOT / "playbooks" / "patch.yml"
SSH_OPTIONS = [
    *ssh_options(),
    "-o",
    "ControlMaster=auto",
    "-o",
    "ControlPersist=60s",
    "-o",
    "ControlPath=/tmp/bench-patch-%C",
]
RELEASE = "2.3.1"  # the release lab terminals run (factory_install)
# The packages the release declares (its os section): patch.yml holds them, so the floor holds them too.
HELD = sorted(yaml.safe_load((ROOT / "app" / "releases" / f"{RELEASE}.yml").read_text()).get("os") or {})
FLOOR = (
    f"apt-mark hold {' '.join(HELD)} >/dev/null && apt-get update -q >/dev/null && "
    "DEBIAN_FRONTEND=noninteractive apt-get -y -q upgrade >/dev/null"
)
# More seconds than any window has left: patch.yml leaves the kernel package's reboot pending, as the
# floor does (a reboot is not an update; bench/patch.py compares installing the same updates).
REBOOT_BUDGET_S = 200000
ALWAYS = [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00", "duration_minutes": 1440}]


def env() -> dict[str, str]:
    variables = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        IPM_AUDIT_LOG=str(Path(tempfile.gettempdir()) / "bench-patch-audit.jsonl"),
    )
    # The playbooks check an authorization policy first: the test suite's (root, any customer) unless one is named.
    variables.setdefault("IPM_POLICY_FILE", str(ROOT / "tests" / "policy.yml"))
    variables["PATH"] = f"{BIN}{os.pathsep}{variables.get('PATH', '')}"
    return variables


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, env=env(), check=False, **kwargs)
    if result.returncode != 0:
        sys.exit(
            f"bench/patch: `{' '.join(command[:4])} ...` failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}{result.stderr[-2000:]}"
        )
    return result


def ssh(address: str, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", *SSH_OPTIONS, f"root@{address}", command], capture_output=True, text=True, check=False, timeout=600
    )


def inventory_for(hosts: dict[str, dict], path: Path, repository: aptrepo.Repository, url: str) -> None:
    """A static inventory with what patch.yml reads: one ring, a window open all day, the mirror, no bake."""
    for name, variables in hosts.items():
        variables.update(
            ipm_terminal_id=name, ipm_customer_id="bench", ipm_site_id="bench", ipm_ring="broad", ipm_release=RELEASE
        )
    document = {
        "all": {
            "vars": {
                "ipm_site_timezone": "UTC",
                "ipm_site_windows": ALWAYS,
                "os_patch_mirror_url": url,
                "os_patch_mirror_keyring": str(repository.keyring),
                "patch_reboot_budget_s": REBOOT_BUDGET_S,
                # As the demo inventory (and a real fleet's): Debian's python3, no interpreter discovery round.
                "ansible_python_interpreter": "/usr/bin/python3",
            },
            "children": {"ring_broad": {"hosts": hosts}},
        }
    }
    path.write_text(yaml.safe_dump(document))


def floor(addresses: dict[str, str]) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(len(addresses)) as pool:
        results = dict(zip(addresses, pool.map(lambda name: ssh(addresses[name], FLOOR), addresses), strict=True))
    elapsed = time.perf_counter() - started
    failed = [f"{name}: {result.stderr.strip()[-300:]}" for name, result in results.items() if result.returncode]
    if failed:
        sys.exit("bench/patch: the floor failed on\n" + "\n".join(failed))
    return elapsed


def ansible_adhoc(inventory: Path, forks: int, module: str = "ansible.builtin.shell") -> float:
    """The floor's own command through ad-hoc Ansible (MODULE shell or raw): what Ansible alone adds."""
    command = [str(BIN / "ansible"), "all", "-i", str(inventory), "-f", str(forks), "-m", module, "-a", FLOOR]
    started = time.perf_counter()
    run(command, cwd=ROOT, timeout=3600)
    return time.perf_counter() - started


def _instant(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def task_spans(audit_log: Path, offset: int) -> list[tuple[float, str]]:
    """(seconds from the first start to the last end over all terminals, "play / task") of the run after OFFSET."""
    spans: dict[str, list[float]] = {}
    with audit_log.open("rb") as stream:
        stream.seek(offset)
        for line in stream:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            data = record.get("data") or {}
            if record.get("kind") != "task" or not data.get("ended"):
                continue
            ended = _instant(data["ended"])
            started = _instant(data["started"]) if data.get("started") else ended - (data.get("duration_s") or 0)
            task = "%s / %s" % (data.get("play") or "?", data.get("task") or data.get("module") or "?")
            span = spans.setdefault(task, [started, ended])
            span[0], span[1] = min(span[0], started), max(span[1], ended)
    return sorted(((end - start, task) for task, (start, end) in spans.items()), reverse=True)


def ansible(inventory: Path, forks: int, round_number: int) -> float:
    command = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(PLAYBOOK), "-f", str(forks)]
    # Play keywords (serial) see extra vars only, not the inventory's: one wave of all terminals, no bake.
    command += ["-e", f"change_id=CHG-BENCH-{round_number}", "-e", "patch_scope=all"]
    command += ["-e", "rollout_serial_broad=100%", "-e", "rollout_bake_s=0"]
    command += ["-e", "justification=bench: lab terminals of no customer contract"]
    audit_log = Path(env()["IPM_AUDIT_LOG"])
    offset = audit_log.stat().st_size if audit_log.exists() else 0
    started = time.perf_counter()
    run(command, cwd=ROOT, timeout=3600)
    elapsed = time.perf_counter() - started
    spans = task_spans(audit_log, offset) if audit_log.exists() else []
    print(
        f"  ansible round {round_number}: {elapsed:.1f} s; longest tasks (first start to last end over the terminals): "
        + "; ".join(f"{task} {seconds:.1f} s" for seconds, task in spans[:4]),
        flush=True,
    )
    return elapsed


def check(addresses: dict[str, str], repository: aptrepo.Repository, who: str) -> None:
    """Every terminal has the newest version of every package of the mirror but the held ones (the same updates)."""
    wanted = dict(
        repository.newest(), **{name: repository.baseline()[name] for name in HELD if name in repository.packages}
    )
    wrong = {name: found for name, found in installed_versions(addresses, repository).items() if found != wanted}
    if wrong:
        sys.exit(f"bench/patch: after {who}, terminals miss updates (wanted {wanted}): {wrong}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--terminals", type=int, default=20, help="lab terminals (default 20)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds, medians reported (default 2)")
    args = parser.parse_args()
    if args.terminals < 1 or args.rounds < 1:
        parser.error("--terminals and --rounds: expected 1 or more")
    if os.geteuid() != 0:
        parser.error("lab terminals need root: sudo .venv/bin/python bench/patch.py")
    prefix = f"pb-{uuid.uuid4().hex[:4]}-"
    names = [f"{prefix}{index:02d}" for index in range(1, args.terminals + 1)]
    times: dict[str, list[float]] = {"ansible": [], "floor": [], "ansible_adhoc": [], "ansible_raw": []}
    with tempfile.TemporaryDirectory(prefix="bench-patch-") as scratch:
        repository = aptrepo.build_repository(Path(scratch) / "mirror")
        inventory = Path(scratch) / "inventory.yml"
        with aptrepo.serve_repository(repository, ADDRESS) as server:
            try:
                print(f"mirror {server.url}; booting {len(names)} lab terminals ...", flush=True)
                started = time.perf_counter()
                run([str(BIN / "ipm-lab"), "up", *names], timeout=1800)
                document = json.loads(run([str(BIN / "ipm-lab"), "inventory", *names]).stdout)
                hosts = document["all"]["children"]["lab"]["hosts"]
                addresses = {name: hosts[name]["ansible_host"] for name in names}
                inventory_for(hosts, inventory, repository, server.url)
                prepare_terminals(addresses, repository, server.url)
                print(f"ready in {time.perf_counter() - started:.1f} s, on the baseline", flush=True)
                contenders = {
                    "ansible": lambda number: ansible(inventory, len(names), number),
                    "floor": lambda number: floor(addresses),
                    "ansible_adhoc": lambda number: ansible_adhoc(inventory, len(names)),
                    "ansible_raw": lambda number: ansible_adhoc(inventory, len(names), "ansible.builtin.raw"),
                }
                if not PLAYBOOK.exists():
                    print("playbooks/patch.yml does not exist yet: timing the floor only", flush=True)
                    contenders.pop("ansible")
                for number in range(1, args.rounds + 1):
                    order = list(contenders) if number % 2 else list(reversed(contenders))
                    for key in order:
                        times[key].append(contenders[key](number))
                        check(addresses, repository, key)
                        reset_terminals(addresses, repository)
                    print(
                        f"round {number}: " + " ".join(f"{key}={times[key][-1]:.1f}s" for key in contenders),
                        flush=True,
                    )
            finally:
                subprocess.run(
                    [str(BIN / "ipm-lab"), "down", "--missing-ok", *names],
                    capture_output=True,
                    text=True,
                    env=env(),
                    check=False,
                )
    floor_s = statistics.median(times["floor"])
    if not times["ansible"]:
        print(f"floor median over {args.rounds} rounds: {floor_s:.1f} s on {len(names)} terminals")
        print("bench/patch: no playbooks/patch.yml, no ratio", file=sys.stderr)
        return 1
    ansible_s = statistics.median(times["ansible"])
    adhoc_s, raw_s = statistics.median(times["ansible_adhoc"]), statistics.median(times["ansible_raw"])
    print(f"median over {args.rounds} rounds, {len(names)} terminals")
    print(
        f"references, the floor's command through ad-hoc ansible: -m raw {raw_s:.1f} s (ratio {raw_s / floor_s:.2f}), "
        f"-m shell {adhoc_s:.1f} s (ratio {adhoc_s / floor_s:.2f}); patch.yml {ansible_s / adhoc_s:.2f} times the shell's"
    )
    print(
        f"patch terminals={len(names)} ansible_s={ansible_s:.1f} floor_s={floor_s:.1f} ratio={ansible_s / floor_s:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
