"""A vault-encrypted secret parameter from the registry to a real lab terminal, and nowhere else.

The registry is generated at test time: one customer, one site, one terminal whose
``payment_api_token`` is a canary (``canary-<uuid>``) encrypted by the real ``ansible-vault
encrypt_string``. The ``ipm.fleet.app_parameters`` role runs on the terminal with a vault password
file (check mode with ``--diff``, then for real with ``--diff``, then again), then
``playbooks/rollout.yml`` (the release module writes the parameters too), ``playbooks/snapshot.yml``, ``ipm-config`` (drift, show, history, diff, params), ``ipm-registry`` and
``ipm-audit`` (verify, list, export). The canary must reach ``/etc/ipm/app.yml`` on the terminal
(mode 0600) and appear in none of the files these runs wrote (audit log and its side files, history
store, exports, inventory cache) nor in the output of any command. Without the vault password, or
with a wrong one, the role must stop and leave the terminal's file as it was.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from fleet import ALWAYS, INTERFACES, PROJECT_ROOT, TARGETS

pytestmark = pytest.mark.lab

BIN = Path(sys.executable).parent
DAYS = ALWAYS[0]["days"]


def _indent(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in text.rstrip("\n").split("\n"))


def write_registry(directory: Path, printed_token: str) -> tuple[Path, str, str, str]:
    """A one-terminal registry whose terminal carries ansible-vault's printed output; (inventory, id, address, site)."""
    tag = uuid.uuid4().hex[:4]
    terminal_id = f"v{tag}-par1"
    address = f"127.0.{random.randint(200, 249)}.{random.randint(1, 250)}"
    registry = directory / "registry"
    (registry / "customers").mkdir(parents=True)
    catalog = yaml.safe_load((PROJECT_ROOT / "registry" / "demo" / "catalog.yml").read_text())
    catalog["releases_dir"] = str(PROJECT_ROOT / "app" / "releases")
    (registry / "catalog.yml").write_text(yaml.safe_dump(catalog, sort_keys=False))
    document = {
        "customer": {
            "id": f"vault-{tag}",
            "name": "Vault Parking",
            "country": "FR",
            "languages": ["fr"],
            "release": "2.4.0",  # the lab terminals run 2.3.1: the rollout test delivers 2.4.0
            "contract": {
                "sla_tier": "gold",
                "coverage": {"days": DAYS, "start": "00:00", "end": "24:00"},
                "maintenance_types": ["preventive", "corrective", "evolutive"],
                "targets": TARGETS,
            },
            "parameters": {"currency": "EUR", "language": "fr"},
        },
        "sites": [
            {
                "id": f"paris-{tag}",
                "name": "Paris",
                "city": "Paris",
                "timezone": "Europe/Paris",
                "windows": ALWAYS,
                "terminals": [
                    {
                        "id": terminal_id,
                        "serial_number": f"PS300-{tag}-par1",
                        "model": "PS-300",
                        "ring": "canary",
                        "address": address,
                        "interfaces": INTERFACES["PS-300"],
                        "parameters": {"listen_address": address, "PASTE_TOKEN": 1},
                    }
                ],
            }
        ],
    }
    text = yaml.safe_dump(document, sort_keys=False)
    line = next(line for line in text.splitlines() if "PASTE_TOKEN" in line)
    spaces = len(line) - len(line.lstrip())
    # The output of `ansible-vault encrypt_string --name payment_api_token`, pasted as it is printed.
    (registry / "customers" / "vault.yml").write_text(text.replace(line, _indent(printed_token, spaces)))
    inventory = directory / "inventory"
    inventory.mkdir()
    (inventory / "fleet.ipm_registry.yml").write_text(
        yaml.safe_dump(
            {
                "plugin": "ipm.fleet.registry",
                "registry": str(registry),
                "cache": True,
                "cache_plugin": "ansible.builtin.jsonfile",
                "cache_connection": str(directory / "inventory-cache"),
            }
        )
    )
    (inventory / "group_vars").mkdir()
    (inventory / "group_vars" / "all.yml").write_text(
        (PROJECT_ROOT / "inventories" / "demo" / "group_vars" / "all.yml").read_text()
    )
    return inventory, terminal_id, address, f"paris-{tag}"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, run_lab_command):
    if os.geteuid() != 0:
        pytest.skip("lab terminals need root")
    directory = tmp_path_factory.mktemp("vault-secrets")
    output = directory / "written"  # everything the runs write on the controller
    output.mkdir()
    passwords = directory / "vault-password"
    passwords.write_text(f"pw-{uuid.uuid4()}\n")
    passwords.chmod(0o600)
    canary = f"canary-{uuid.uuid4()}"
    printed = subprocess.run(
        [
            *(str(BIN / "ansible-vault"), "encrypt_string", "--vault-password-file", str(passwords)),
            *("--name", "payment_api_token", canary),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    inventory, terminal, address, site = write_registry(directory, printed)
    state = {
        "directory": directory,
        "output": output,
        "passwords": passwords,
        "canary": canary,
        "inventory": inventory,
        "terminal": terminal,
        "address": address,
        "site": site,
        "runs": [],
        "env": dict(
            os.environ,
            ANSIBLE_CONFIG=str(PROJECT_ROOT / "ansible.cfg"),
            ANSIBLE_NOCOLOR="1",
            IPM_AUDIT_LOG=str(output / "audit" / "audit.jsonl"),
            IPM_AUDIT_KEY_FILE=str(directory / "audit.key"),
            IPM_HISTORY_STORE=str(output / "history"),
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        ),
    }
    state["env"].pop("ANSIBLE_VAULT_PASSWORD_FILE", None)
    subprocess.run([str(BIN / "ipm-release"), "build"], check=True, capture_output=True, timeout=600)
    try:
        # ipm-lab reads the inventory through the plugin: no vault password needed for that.
        run_lab_command("up", "--inventory", str(inventory))
        yield state
    finally:
        run_lab_command("down", "--missing-ok", terminal, check=False)


def run(fleet, *command: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command of the project's venv; its output is kept for the canary search."""
    result = subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        capture_output=True,
        text=True,
        env=fleet["env"],
        cwd=PROJECT_ROOT,
        timeout=timeout,
        check=False,
    )
    fleet["runs"].append(result)
    return result


def role(fleet, *options: str) -> subprocess.CompletedProcess:
    playbook = fleet["directory"] / "parameters.yml"
    playbook.write_text(
        yaml.safe_dump(
            [{"name": "Parameters", "hosts": "all", "gather_facts": False, "roles": ["ipm.fleet.app_parameters"]}]
        )
    )
    return run(
        fleet, "ansible-playbook", "-i", str(fleet["inventory"]), str(playbook), "-e", "change_id=CHG-VAULT", *options
    )


def on_terminal(fleet, command: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "ipm_tools.lab", "ssh", fleet["terminal"], command],
        capture_output=True,
        text=True,
        env=dict(
            fleet["env"], PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT / "tools"), str(PROJECT_ROOT / "collections")])
        ),
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def words(result: subprocess.CompletedProcess) -> str:
    return " ".join((result.stdout + result.stderr).split())


def vault_options(fleet) -> list[str]:
    return ["--vault-password-file", str(fleet["passwords"])]


def test_1_check_mode_with_diff_changes_nothing(fleet):
    before = on_terminal(fleet, "sha256sum /etc/ipm/app.yml")
    check = role(fleet, *vault_options(fleet), "--check", "--diff")
    assert check.returncode == 0, check.stdout + check.stderr
    assert on_terminal(fleet, "sha256sum /etc/ipm/app.yml") == before, "check mode changes nothing"


def test_2_the_role_writes_the_secret_to_the_terminal(fleet):
    applied = role(fleet, *vault_options(fleet), "--diff")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    parameters = yaml.safe_load(on_terminal(fleet, "cat /etc/ipm/app.yml"))
    assert parameters["payment_api_token"] == fleet["canary"]
    assert parameters["currency"] == "EUR" and parameters["language"] == "fr"
    assert on_terminal(fleet, "stat -c '%a %U %G' /etc/ipm/app.yml").split() == ["600", "root", "root"]
    again = role(fleet, *vault_options(fleet), "--diff")
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout + again.stderr


def _wrong_password(fleet, password) -> list[str]:
    if password == "none":
        return []
    wrong = fleet["directory"] / "wrong-password"
    wrong.write_text("not-the-password\n")
    return ["--vault-password-file", str(wrong)]


@pytest.mark.parametrize("password", ["none", "wrong"])
def test_3_an_undecryptable_secret_stops_the_role_and_leaves_the_terminal_alone(fleet, password):
    before = on_terminal(fleet, "sha256sum /etc/ipm/app.yml; stat -c %Y /etc/ipm/app.yml")
    failed = role(fleet, *_wrong_password(fleet, password), "--diff")
    assert failed.returncode != 0
    text = words(failed)
    assert "Traceback" not in failed.stderr
    assert f"fatal: [{fleet['terminal']}]" in text, text
    assert "undecryptable" in text, text
    assert fleet["canary"] not in text
    assert on_terminal(fleet, "sha256sum /etc/ipm/app.yml; stat -c %Y /etc/ipm/app.yml") == before


@pytest.mark.parametrize("password", ["none", "wrong"])
def test_4_the_undecryptable_secret_error_names_the_parameter_and_what_to_do(fleet, password):
    text = words(role(fleet, *_wrong_password(fleet, password)))
    assert (
        f"{fleet['terminal']}: vault-encrypted parameter(s) payment_api_token (terminal layer) cannot be decrypted"
        in text
    ), text
    assert "--vault-password-file FILE or --ask-vault-pass" in text and "/etc/ipm/app.yml left unchanged" in text


@pytest.mark.parametrize("password", ["none", "wrong"])
def test_5_a_rollout_without_the_vault_password_stops_before_the_terminal_with_one_clear_line(fleet, password):
    before = on_terminal(fleet, "readlink /opt/ipm/app/current; sha256sum /etc/ipm/app.yml")
    rollout = run(
        fleet,
        "ansible-playbook",
        "-i",
        str(fleet["inventory"]),
        str(PROJECT_ROOT / "playbooks" / "rollout.yml"),
        *("-e", "release=2.4.0", "-e", "change_id=CHG-VAULT", "-e", "rollout_settle_s=3", "-e", "rollout_bake_s=0"),
        *_wrong_password(fleet, password),
    )
    text = " ".join((rollout.stdout + rollout.stderr).split())
    assert rollout.returncode != 0, text[-3000:]
    assert "Traceback" not in rollout.stderr
    assert (
        f"{fleet['terminal']}: vault-encrypted parameter(s) payment_api_token (terminal layer) cannot be decrypted"
        in text
    ), text[-3000:]
    assert "--vault-password-file FILE or --ask-vault-pass" in text and "Nothing was changed on the terminal" in text
    assert fleet["canary"] not in text
    assert on_terminal(fleet, "readlink /opt/ipm/app/current; sha256sum /etc/ipm/app.yml") == before


def test_5_a_rollout_delivers_the_secret_with_the_release(fleet):
    rollout = run(
        fleet,
        "ansible-playbook",
        "-i",
        str(fleet["inventory"]),
        str(PROJECT_ROOT / "playbooks" / "rollout.yml"),
        *("-e", "release=2.4.0", "-e", "change_id=CHG-VAULT", "-e", "rollout_settle_s=3"),
        *("-e", "rollout_bake_s=1", "-e", "rollout_bake_interval_s=1"),
        "--diff",
        *vault_options(fleet),
    )
    assert rollout.returncode == 0, rollout.stdout[-4000:] + rollout.stderr[-2000:]
    parameters = yaml.safe_load(on_terminal(fleet, "cat /etc/ipm/app.yml"))
    assert parameters["payment_api_token"] == fleet["canary"]
    assert on_terminal(fleet, "readlink /opt/ipm/app/current").strip().endswith("2.4.0")
    assert on_terminal(fleet, "stat -c '%a %U %G' /etc/ipm/app.yml").split() == ["600", "root", "root"]
    deliveries = run(fleet, "ipm-audit", "--log", fleet["env"]["IPM_AUDIT_LOG"], "deliveries", "--json")
    assert deliveries.returncode == 0, deliveries.stderr
    assert '"delivered"' in deliveries.stdout, deliveries.stdout
    run(fleet, "ipm-audit", "--log", fleet["env"]["IPM_AUDIT_LOG"], "deliveries", "--running")


def test_6_snapshots_configuration_audit_and_ledger_hold_no_copy_of_the_secret(fleet):
    vault = vault_options(fleet)
    current = yaml.safe_load(on_terminal(fleet, "cat /etc/ipm/app.yml")) or {}
    if current.get("payment_api_token") != fleet["canary"]:
        # Neither test_2 nor test_5 delivered it: put it there by hand, so that the facts, snapshots
        # and drift below read a terminal that really holds the secret, and ipm-app runs with it.
        on_terminal(
            fleet,
            "sed -i '/^payment_api_token:/d' /etc/ipm/app.yml"
            f" && echo 'payment_api_token: {fleet['canary']}' >> /etc/ipm/app.yml && systemctl restart ipm-app",
        )
    assert on_terminal(fleet, "stat -c %a /etc/ipm/app.yml").strip() == "600"
    for _ in range(2):
        snapshot = run(
            fleet,
            "ansible-playbook",
            "-i",
            str(fleet["inventory"]),
            str(PROJECT_ROOT / "playbooks" / "snapshot.yml"),
            "--diff",
            *vault,
        )
        assert snapshot.returncode == 0, snapshot.stdout + snapshot.stderr
    store = ["--store", fleet["env"]["IPM_HISTORY_STORE"]]
    inventory = ["-i", str(fleet["inventory"])]
    tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    for command in (
        ("ipm-config", *store, "drift", *inventory),
        ("ipm-config", *store, "--json", "drift", *inventory),
        ("ipm-config", *store, "show", tomorrow),
        ("ipm-config", *store, "--json", "show", tomorrow, *inventory, "--site", fleet["site"]),
        ("ipm-config", *store, "--json", "history", fleet["terminal"]),
        ("ipm-config", *store, "--json", "diff", fleet["terminal"], "2000-01-01", tomorrow),
        ("ipm-config", "params", fleet["terminal"], *inventory),
        ("ipm-config", "--json", "params", fleet["terminal"], *inventory),
        ("ipm-registry", "validate", str(fleet["inventory"])),
        ("ipm-registry", "show", fleet["terminal"], "-r", str(fleet["inventory"])),
        ("ipm-registry", "show", fleet["terminal"], "-r", str(fleet["inventory"]), "--format", "json"),
        ("ansible-inventory", *inventory, "--list"),
    ):
        result = run(fleet, *command)
        assert result.returncode == 0, (command, result.stdout + result.stderr)

    audit = ["ipm-audit", "--log", fleet["env"]["IPM_AUDIT_LOG"]]
    exports = fleet["output"] / "exports"
    exports.mkdir()
    for command in (
        (*audit, "verify", "--key-file", fleet["env"]["IPM_AUDIT_KEY_FILE"]),
        (*audit, "list", "--terminal", fleet["terminal"]),
        (*audit, "show", "--terminal", fleet["terminal"]),
        (*audit, "export", "--format", "json"),
        (*audit, "export", "--format", "csv", "-o", str(exports / "audit.csv")),
        (*audit, "export", "--format", "json", "-o", str(exports / "audit.json")),
    ):
        result = run(fleet, *command)
        assert result.returncode == 0, (command, result.stdout + result.stderr)

    # Every file the runs wrote on the controller, and the output of every command of this module.
    written = [path for path in fleet["directory"].rglob("*") if path.is_file()]
    assert any(path.name == "audit.jsonl" for path in written)
    assert any(path.suffix == ".json" and "history" in path.parts for path in written), "snapshots were stored"
    assert any("inventory-cache" in path.parts for path in written), "the inventory cache was written"
    leaks = [str(path) for path in written if fleet["canary"].encode() in path.read_bytes()]
    assert leaks == [], f"the secret is in {leaks}"
    assert len(fleet["runs"]) >= 25
    for result in fleet["runs"]:
        assert fleet["canary"] not in result.stdout + result.stderr, result.args
    assert "Traceback" not in "".join(result.stderr for result in fleet["runs"])
    journal = on_terminal(fleet, "journalctl -u ipm-app -o cat --no-pager")
    assert fleet["canary"] not in journal, "the application does not log its token"
