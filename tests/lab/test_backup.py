"""playbooks/backup.yml and playbooks/restore.yml on real lab terminals (prefix bk-).

Two terminals of a registry generated here (Paris and Sydney) and, for the replacement, a new box
booted under the first one's id with another serial number. The tests run in order and share them.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from ansible_collections.ipm.fleet.plugins.plugin_utils import backup_store as bs

pytestmark = pytest.mark.lab

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
TARGETS = {s: {"response_hours": 4, "repair_hours": 24} for s in ("critical", "major", "minor", "temporary")}
RESTORED = (
    "var/lib/ipm/app/transactions.sqlite3",
    "etc/ipm/app.yml",
    "etc/ipm/interfaces.yml",
    "etc/ipm/payment-module.yml",
)
DB = "/var/lib/ipm/app/transactions.sqlite3"


def write_registry(directory: Path, tag: str, octet: int) -> tuple[Path, dict]:
    registry = directory / "registry"
    (registry / "customers").mkdir(parents=True)
    catalog = yaml.safe_load((PROJECT_ROOT / "registry" / "demo" / "catalog.yml").read_text())
    catalog["releases_dir"] = str(PROJECT_ROOT / "app" / "releases")
    (registry / "catalog.yml").write_text(yaml.safe_dump(catalog, sort_keys=False))
    terminals = {
        "src": {"id": f"bk-{tag}-src", "model": "PS-300", "zone": "Europe/Paris", "site": f"paris-{tag}"},
        "oth": {"id": f"bk-{tag}-oth", "model": "TK-110", "zone": "Australia/Sydney", "site": f"sydney-{tag}"},
    }
    sites = []
    for index, (key, spec) in enumerate(terminals.items(), start=1):
        spec["address"] = f"127.0.{octet}.{index}"
        spec["serial"] = f"{spec['model'].replace('-', '')}-{tag}-{key}"
        sites.append(
            {
                "id": spec["site"],
                "name": spec["site"],
                "city": spec["site"],
                "timezone": spec["zone"],
                "windows": [{"days": DAYS, "start": "00:00", "duration_minutes": 1440}],
                "terminals": [
                    {
                        "id": spec["id"],
                        "serial_number": spec["serial"],
                        "model": spec["model"],
                        "address": spec["address"],
                        "parameters": {"listen_address": spec["address"]},
                    }
                ],
            }
        )
    document = {
        "customer": {
            "id": f"backup-{tag}",
            "name": "Backup test",
            "country": "FR",
            "languages": ["fr"],
            "release": "2.4.0",
            "contract": {
                "sla_tier": "gold",
                "coverage": {"days": DAYS, "start": "00:00", "end": "24:00"},
                "maintenance_types": ["preventive", "corrective", "evolutive"],
                "targets": TARGETS,
            },
        },
        "sites": sites,
    }
    (registry / "customers" / "backup.yml").write_text(
        "# the test's customer (comments stay through a hardware swap)\n" + yaml.safe_dump(document, sort_keys=False)
    )
    inventory = directory / "inventory"
    inventory.mkdir()
    (inventory / "fleet.ipm_registry.yml").write_text(
        yaml.safe_dump({"plugin": "ipm.fleet.registry", "registry": str(registry)})
    )
    (inventory / "group_vars").mkdir()
    (inventory / "group_vars" / "all.yml").write_text(
        (PROJECT_ROOT / "inventories" / "demo" / "group_vars" / "all.yml").read_text()
    )
    return inventory, terminals


@pytest.fixture(scope="module")
def lab(tmp_path_factory, run_lab_command):
    if os.geteuid() != 0:
        pytest.skip("lab terminals need root")
    directory = tmp_path_factory.mktemp("backup")
    tag = uuid.uuid4().hex[:4]
    inventory, terminals = write_registry(directory, tag, random.randint(200, 250))
    subprocess.run([str(BIN / "ipm-release"), "build"], check=True, capture_output=True)
    key = directory / "audit.key"
    subprocess.run([str(BIN / "ipm-audit"), "keygen", "--key-file", str(key)], check=True, capture_output=True)
    names = [spec["id"] for spec in terminals.values()]
    context = {
        "dir": directory,
        "inventory": inventory,
        "terminals": terminals,
        "store": directory / "store",
        "audit": directory / "audit.jsonl",
        "key": key,
        "registry": directory / "registry",
    }
    try:
        run_lab_command("up", "--inventory", str(inventory))
        for spec in terminals.values():
            # No simulated traffic: the data changes only when a test writes a transaction.
            ssh(
                run_lab_command,
                spec["id"],
                "sed -i '/^transaction_interval_s:/d' /etc/ipm/app.yml && echo 'transaction_interval_s: 0' >> "
                "/etc/ipm/app.yml && systemctl restart ipm-app",
            )
        for spec in terminals.values():
            wait_healthy(spec["address"])
        yield context
    finally:
        run_lab_command("down", "--missing-ok", *names, check=False)


def ssh(run_lab_command, name: str, command: str, check: bool = True) -> str:
    result = run_lab_command("ssh", name, command, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{name}: `{command}` failed: {result.stdout}{result.stderr}")
    return result.stdout


def wait_healthy(address: str, timeout: float = 40) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://{address}:8080/health", timeout=2) as answer:
                return json.loads(answer.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def post(address: str, amount: float) -> dict:
    request = urllib.request.Request(
        f"http://{address}:8080/transactions",
        data=json.dumps({"amount": amount, "method": "card"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 201
        return json.loads(answer.read())


def env(lab, **extra) -> dict[str, str]:
    variables = dict(os.environ, ANSIBLE_CONFIG=str(PROJECT_ROOT / "ansible.cfg"))
    variables.update(IPM_AUDIT_LOG=str(lab["audit"]), IPM_AUDIT_KEY_FILE=str(lab["key"]), IPM_OPERATOR="bk-tester")
    variables.pop("IPM_BACKUP_KEY_FILE", None)
    variables["PATH"] = f"{BIN}{os.pathsep}{variables.get('PATH', '')}"
    variables.update(extra)
    return variables


def playbook(lab, name: str, *options: str, store: Path | None = None, timeout: float = 600, **extra):
    command = [str(BIN / "ansible-playbook"), "-i", str(lab["inventory"]), str(PROJECT_ROOT / "playbooks" / name)]
    command += ["-e", f"backup_store={store or lab['store']}", *options]
    result = subprocess.run(
        command, capture_output=True, text=True, env=env(lab, **extra), cwd=PROJECT_ROOT, timeout=timeout, check=False
    )
    result.stdout = " ".join(result.stdout.split())
    return result


def name_of(lab, key: str) -> str:
    return lab["terminals"][key]["id"]


def sha256_on(run_lab_command, name: str, paths) -> dict[str, str]:
    out = ssh(run_lab_command, name, "sha256sum " + " ".join("/" + p for p in paths))
    return {line.split()[1].lstrip("/"): line.split()[0] for line in out.splitlines() if line.strip()}


def state_of(run_lab_command, name: str) -> tuple:
    """What a refused restore must leave alone: the files' sha256 and ipm-app's start time."""
    hashes = sha256_on(run_lab_command, name, [p for p in RESTORED if p != "var/lib/ipm/app/transactions.sqlite3"])
    started = ssh(run_lab_command, name, "systemctl show -p ActiveEnterTimestamp -p MainPID ipm-app")
    count = ssh(run_lab_command, name, f"sqlite3 {DB} 'select count(*), max(id) from transactions'")
    return hashes, started, count


def test_1_backup_while_transactions_are_written(lab, run_lab_command):
    src = lab["terminals"]["src"]
    acknowledged: list[dict] = []
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            acknowledged.append(dict(post(src["address"], 4.2), at=time.time()))
            time.sleep(0.02)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)
        started = time.time()
        result = playbook(lab, "backup.yml", "-e", "change_id=CHG-8001")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    store = bs.BackupStore(str(lab["store"]))
    entry = store.latest(src["id"])
    manifest = entry.manifest()
    assert bs.verify(entry, bs.load_signing_key(str(lab["key"]))) == []
    assert manifest["terminal"] == src["id"] and manifest["site"] == src["site"]
    assert manifest["serial_number"] == src["serial"] and manifest["model"] == "PS-300"
    assert manifest["timezone"] == "Europe/Paris" and manifest["time_site"].endswith(("+01:00", "+02:00"))
    assert manifest["time_utc"].endswith("Z") and manifest["release"] == "2.3.1"
    assert manifest["change_id"] == "CHG-8001" and manifest["operator"] == "bk-tester"
    paths = {f["path"] for f in manifest["files"]}
    assert set(RESTORED) | {"etc/ipm/hardware.yml", "release.json"} <= paths
    assert "opt/ipm/app/releases/2.3.1/manifest.yml" in paths
    # The copy is consistent and holds every transaction acknowledged before the backup started.
    copy = sqlite3.connect(f"file:{entry.file_path('var/lib/ipm/app/transactions.sqlite3')}?mode=ro", uri=True)
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = {row[0] for row in copy.execute("SELECT id FROM transactions")}
    finally:
        copy.close()
    before = [t["id"] for t in acknowledged if t["at"] < started]
    assert before and set(before) <= ids
    assert manifest["database"]["transactions"] == len(ids) and manifest["database"]["integrity"] == "ok"
    assert manifest["database"]["last_transaction"]["id"] == max(ids)
    assert len(acknowledged) > len(before), "the application kept serving during the backup"
    # Both terminals, in their own directories; the staging is gone from the terminal.
    assert store.latest(name_of(lab, "oth")).manifest()["timezone"] == "Australia/Sydney"
    assert ssh(run_lab_command, src["id"], "ls /var/lib/ipm/backup-staging 2>&1 || true").count("No such file") == 1
    # The audit log has the backup: terminal, time and sizes, operator and change id.
    records = [json.loads(line) for line in lab["audit"].read_text().splitlines()]
    tasks = [r["data"] for r in records if r["kind"] == "task" and r["data"].get("module") == "ipm.fleet.backup"]
    mine = [t for t in tasks if t["terminal"] == src["id"]]
    assert mine and mine[-1]["status"] == "ok" and manifest["time_utc"] in mine[-1]["msg"]
    assert "transferred" in mine[-1]["msg"] and mine[-1]["path"] == entry.path
    runs = [r["data"] for r in records if r["kind"] == "run_start"]
    assert runs[-1]["change_id"] == "CHG-8001" and runs[-1]["operator"] == "bk-tester"
    lab["first"] = entry


def test_2_second_backup_moves_almost_nothing_and_check_mode_stores_nothing(lab):
    store = bs.BackupStore(str(lab["store"]))
    src = name_of(lab, "src")
    before = len(store.entries(terminal=src))
    checked = playbook(lab, "backup.yml", "--check", "-l", src, "-e", "change_id=CHG-8002")
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert "would back up" in checked.stdout
    assert len(store.entries(terminal=src)) == before
    # The first backup ran while transactions were written; two more of the now unchanged data.
    for _round in range(2):
        time.sleep(1.1)  # a backup a second: the store's time is its name
        result = playbook(lab, "backup.yml", "-l", src, "-e", "change_id=CHG-8002")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    first, second = store.entries(terminal=src)[-2:]
    manifest = second.manifest()
    total = sum(f["size"] for f in manifest["files"])
    assert manifest["transferred_bytes"] <= 0.05 * total, manifest
    assert manifest["reused_bytes"] >= 0.95 * total
    for item in manifest["files"]:
        assert os.stat(second.file_path(item["path"])).st_ino == os.stat(first.file_path(item["path"])).st_ino


def test_3_restore_to_the_same_terminal_over_the_running_application(lab, run_lab_command):
    src = lab["terminals"]["src"]
    store = bs.BackupStore(str(lab["store"]))
    entry = store.latest(src["id"])
    manifest = entry.manifest()
    # After the backup: a transaction and a parameter change that the restore must undo.
    later = post(src["address"], 9.9)
    ssh(run_lab_command, src["id"], "echo 'terminal_label: changed-after-backup' >> /etc/ipm/app.yml")
    result = playbook(lab, "restore.yml", "-e", f"terminal={src['id']}", "-e", "ticket_id=INC-8003")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "restored backup" in result.stdout
    by_path = {f["path"]: f["sha256"] for f in manifest["files"]}
    on_terminal = sha256_on(run_lab_command, src["id"], [p for p in RESTORED if p in by_path and "sqlite" not in p])
    for path, digest in on_terminal.items():
        assert digest == by_path[path], path
    # The database: every file was re-hashed on the terminal before ipm-app started; its content now.
    row = ssh(
        run_lab_command, src["id"], f"sqlite3 {DB} 'pragma integrity_check; select count(*), max(id) from transactions'"
    )
    database = manifest["database"]
    assert row.split() == ["ok", f"{database['transactions']}|{database['last_transaction']['id']}"]
    assert later["id"] > database["last_transaction"]["id"]
    health = wait_healthy(src["address"])
    assert health["parameters_sha256"] == manifest["parameters_sha256"] and health["version"] == "2.3.1"
    assert "changed-after-backup" in ssh(
        run_lab_command, src["id"], "cat /var/lib/ipm/restore-previous/etc/ipm/app.yml"
    )
    records = [json.loads(line)["data"] for line in lab["audit"].read_text().splitlines()]
    restores = [r for r in records if r.get("module") == "ipm.fleet.backup_restore" and r.get("status") == "ok"]
    assert restores and restores[-1]["terminal"] == src["id"]


def tampered_store(lab, terminal: str, how) -> Path:
    copy = lab["dir"] / f"store-{uuid.uuid4().hex[:6]}"
    shutil.copytree(lab["store"], copy, symlinks=True)
    entry = bs.BackupStore(str(copy)).latest(terminal)
    how(entry)
    return copy


def test_4_corrupt_unsigned_or_foreign_backups_are_refused_before_anything_changes(lab, run_lab_command):
    src = name_of(lab, "src")
    oth = name_of(lab, "oth")

    def flip(entry):
        path = Path(entry.file_path("etc/ipm/app.yml"))
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.unlink()
        path.write_bytes(bytes(data))

    def unsign(entry):
        os.unlink(entry.signature_path)

    def move_to_other(entry):
        other = Path(entry.path).parents[2] / f"sydney-{oth.split('-')[1]}" / oth
        other.mkdir(parents=True, exist_ok=True)
        os.rename(entry.path, other / Path(entry.path).name)

    before_src, before_oth = state_of(run_lab_command, src), state_of(run_lab_command, oth)
    cases = [(src, flip, "wrong sha256"), (src, unsign, "unsigned"), (oth, move_to_other, "refused")]
    for terminal, how, words in cases:
        store = tampered_store(lab, src, how)
        result = playbook(lab, "restore.yml", "-e", f"terminal={terminal}", "-e", "ticket_id=INC-8004", store=store)
        assert result.returncode != 0
        assert words in result.stdout and "nothing on the terminal was changed" in result.stdout, result.stdout[-3000:]
        # ipm-verify of the same store says so too.
        if how is flip:
            assert bs.verify(bs.BackupStore(str(store)).latest(src), bs.load_signing_key(str(lab["key"])))
    assert state_of(run_lab_command, src) == before_src
    assert state_of(run_lab_command, oth) == before_oth


def test_5_no_backup_unknown_terminal_no_ticket(lab):
    oth = name_of(lab, "oth")
    empty = lab["dir"] / "empty-store"
    empty.mkdir()
    result = playbook(lab, "restore.yml", "-e", f"terminal={oth}", "-e", "ticket_id=INC-8005", store=empty)
    assert result.returncode != 0 and f"terminal {oth}: no backup" in result.stdout, result.stdout[-2000:]
    result = playbook(lab, "restore.yml", "-e", "terminal=bk-nowhere", "-e", "ticket_id=INC-8005")
    assert result.returncode != 0 and "bk-nowhere is not in the inventory" in result.stdout
    result = playbook(lab, "restore.yml", "-e", f"terminal={oth}")
    assert result.returncode != 0 and "ticket_id" in result.stdout


def test_6_store_not_writable_or_full(lab):
    oth = name_of(lab, "oth")
    for options, words in (("ro,size=1m", "store not writable"), ("size=4k", "store full")):
        mount = lab["dir"] / f"mnt-{uuid.uuid4().hex[:6]}"
        mount.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], check=True)
        try:
            result = playbook(lab, "backup.yml", "-l", oth, store=mount / "store")
            assert result.returncode != 0 and words in result.stdout, result.stdout[-2000:]
            leftovers = [p for p in mount.rglob("*") if p.is_dir() and p.name[:1] in "0123456789"]
            assert leftovers == [], "no backup looks complete"
        finally:
            subprocess.run(["umount", str(mount)], check=False)


def test_7_terminal_disk_full(lab, run_lab_command):
    oth = name_of(lab, "oth")
    ssh(run_lab_command, oth, "mkdir -p /mnt/tiny && mount -t tmpfs -o size=16k tmpfs /mnt/tiny")
    try:
        result = subprocess.run(
            [str(BIN / "ansible"), "-i", str(lab["inventory"]), oth, "-m", "ipm.fleet.backup_prepare",
             "-a", "staging=/mnt/tiny/staging"],
            capture_output=True, text=True, env=env(lab), cwd=PROJECT_ROOT, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode != 0
        assert "disk is full" in result.stdout and "staging removed" in result.stdout, result.stdout[-2000:]
        assert ssh(run_lab_command, oth, "ls -A /mnt/tiny").strip() == ""
    finally:
        ssh(run_lab_command, oth, "umount /mnt/tiny", check=False)


def test_8_ssh_lost_mid_transfer_leaves_no_complete_looking_backup(lab, run_lab_command):
    """The last test of the other terminal: it is stopped during the transfer."""
    oth = lab["terminals"]["oth"]
    store = bs.BackupStore(str(lab["store"]))
    before = [e.path for e in store.entries(terminal=oth["id"])]
    ssh(
        run_lab_command,
        oth["id"],
        f"sqlite3 {DB} 'create table pad (b blob); insert into pad values (randomblob(400000000))'",
    )
    command = [
        str(BIN / "ansible-playbook"),
        "-i",
        str(lab["inventory"]),
        str(PROJECT_ROOT / "playbooks" / "backup.yml"),
    ]
    command += ["-l", oth["id"], "-e", f"backup_store={lab['store']}"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(lab), cwd=PROJECT_ROOT
    )
    try:
        deadline = time.monotonic() + 120
        fetching = None
        while time.monotonic() < deadline and fetching is None and process.poll() is None:
            fetching = next(iter(Path(lab["store"]).rglob(".fetch-*")), None)
            if fetching is not None and fetching.stat().st_size == 0:
                fetching = None
            time.sleep(0.05)
        assert fetching is not None, "the transfer was never seen"
        # The terminal goes away mid-transfer (power cut, network gone): its SSH connection with it.
        run_lab_command("down", oth["id"])
        output, _ = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0
    assert "no backup was stored" in " ".join(output.split()), output[-3000:]
    assert [e.path for e in store.entries(terminal=oth["id"])] == before
    assert store.partials(terminal=oth["id"]) == []


def test_9_restore_to_replacement_hardware(lab, run_lab_command):
    src = lab["terminals"]["src"]
    store = bs.BackupStore(str(lab["store"]))
    # The source runs 2.4.0 when it is backed up, so the new box (factory 2.3.1) needs the release first.
    manifest_240 = yaml.safe_load((PROJECT_ROOT / "build" / "releases" / "ipm-app-2.4.0.manifest.yml").read_text())
    delivered = subprocess.run(
        [str(BIN / "ansible"), "-i", str(lab["inventory"]), src["id"], "-m", "ipm.fleet.release", "-a",
         json.dumps({"version": "2.4.0", "sha256": manifest_240["sha256"], "settle": 1,
                     "src": str(PROJECT_ROOT / "build" / "releases" / "ipm-app-2.4.0.tar.gz")})],
        capture_output=True, text=True, env=env(lab), cwd=PROJECT_ROOT, timeout=300, check=False,
    )  # fmt: skip
    assert delivered.returncode == 0, delivered.stdout[-2000:]
    post(src["address"], 1.5)
    time.sleep(1.1)
    result = playbook(lab, "backup.yml", "-l", src["id"], "-e", "change_id=CHG-8009")
    assert result.returncode == 0, result.stdout[-3000:]
    entry = store.latest(src["id"])
    manifest = entry.manifest()
    assert manifest["release"] == "2.4.0"
    # The box dies; a new one (another serial number) is booted under the same terminal id and address.
    run_lab_command("down", src["id"])
    host = json.loads(
        subprocess.run(
            [str(BIN / "ansible-inventory"), "-i", str(lab["inventory"]), "--host", src["id"]],
            capture_output=True, text=True, env=env(lab), check=True,
        ).stdout
    )  # fmt: skip
    new_serial = f"PS300-{uuid.uuid4().hex[:6]}-new"
    host["ipm_serial_number"] = new_serial
    replacement = lab["dir"] / "replacement.yml"
    replacement.write_text(yaml.safe_dump({"all": {"hosts": {src["id"]: host}}}))
    run_lab_command("up", "--inventory", str(replacement))
    wait_healthy(src["address"])
    # Without replacement=true the other serial number is refused, nothing changed.
    refused = playbook(lab, "restore.yml", "-e", f"terminal={src['id']}", "-e", "ticket_id=INC-8009")
    assert refused.returncode != 0 and "replacement=true" in refused.stdout, refused.stdout[-2000:]
    result = playbook(
        lab, "restore.yml", "-e", f"terminal={src['id']}", "-e", "ticket_id=INC-8009", "-e", "replacement=true"
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    by_path = {f["path"]: f["sha256"] for f in manifest["files"]}
    on_terminal = sha256_on(run_lab_command, src["id"], [p for p in RESTORED if p in by_path and "sqlite" not in p])
    assert on_terminal and all(digest == by_path[path] for path, digest in on_terminal.items())
    assert ssh(run_lab_command, src["id"], "readlink /opt/ipm/app/current").strip().endswith("2.4.0")
    row = ssh(
        run_lab_command, src["id"], f"sqlite3 {DB} 'pragma integrity_check; select count(*), max(id) from transactions'"
    )
    database = manifest["database"]
    assert row.split() == ["ok", f"{database['transactions']}|{database['last_transaction']['id']}"]
    assert f"serial_number: {new_serial}" in ssh(run_lab_command, src["id"], "cat /etc/ipm/hardware.yml")
    # The registry: the new serial number in place (the comment kept), the swap recorded.
    customer_file = (lab["registry"] / "customers" / "backup.yml").read_text()
    assert f"serial_number: {new_serial}" in customer_file and customer_file.startswith("# the test's customer")
    swaps = [json.loads(line) for line in (lab["registry"] / "hardware-swaps.jsonl").read_text().splitlines()]
    assert swaps[-1]["terminal"] == src["id"] and swaps[-1]["old_serial_number"] == src["serial"]
    assert swaps[-1]["new_serial_number"] == new_serial and swaps[-1]["ticket"] == "INC-8009"
    assert swaps[-1]["backup"] == entry.path


def test_10_failure_after_the_release_install_puts_the_previous_release_back(lab, run_lab_command):
    """The rescue: an older backup (release 2.3.1) onto the box running 2.4.0; the release is installed, then
    the restore step fails for real (the terminal's staging directory is a busy, full mount point), and the
    terminal must end on 2.4.0 with its data and parameters as before."""
    src = lab["terminals"]["src"]
    store = bs.BackupStore(str(lab["store"]))
    key = bs.load_signing_key(str(lab["key"]))
    older = next(
        e for e in store.entries(terminal=src["id"]) if e.manifest()["release"] == "2.3.1" and not bs.verify(e, key)
    )
    before = state_of(run_lab_command, src["id"])[::2]
    staging = "/var/lib/ipm/backup-staging"
    ssh(run_lab_command, src["id"], f"mkdir -p {staging} && mount -t tmpfs -o size=4k tmpfs {staging}")
    try:
        result = playbook(
            lab, "restore.yml", "-e", f"terminal={src['id']}", "-e", f"backup={older.time_text}",
            "-e", "replacement=true", "-e", "ticket_id=INC-8010",
        )  # fmt: skip
    finally:
        ssh(run_lab_command, src["id"], f"umount {staging}", check=False)
    assert result.returncode != 0, result.stdout[-3000:]
    for task in (r"Install the backup's release 2\.3\.1", "Put the release back that ran before the restore"):
        assert re.search(task + r"\] \**\s*changed:", result.stdout), result.stdout[-3000:]
    assert "the terminal is on its previous state" in result.stdout, result.stdout[-3000:]
    assert ssh(run_lab_command, src["id"], "readlink /opt/ipm/app/current").strip().endswith("2.4.0")
    assert wait_healthy(src["address"])["version"] == "2.4.0"
    assert state_of(run_lab_command, src["id"])[::2] == before
