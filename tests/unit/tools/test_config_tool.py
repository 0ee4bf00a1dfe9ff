"""ipm.fleet.snapshot through real Ansible, then ipm-config reading the store (history, diff, show, drift)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent

INVENTORY = """
all:
  vars:
    ansible_connection: local
    ansible_python_interpreter: {python}
  children:
    site_lyon:
      vars:
        ipm_site_parameters: {{currency: EUR}}
      hosts:
        term-a: {{ipm_terminal_id: term-a, ipm_customer_id: acme, ipm_site_id: lyon, ipm_release: "2.4.0"}}
        term-b: {{ipm_terminal_id: term-b, ipm_customer_id: acme, ipm_site_id: lyon, ipm_release: "2.4.0"}}
"""

PLAYBOOK = """
- name: Snapshot given facts
  hosts: all
  gather_facts: false
  tasks:
    - name: Store
      ipm.fleet.snapshot:
        store: "{{ store }}"
        taken_at: "{{ taken_at }}"
        facts:
          application: {current: "{{ release }}"}
          os: {id: debian-12}
          parameters: {values: {currency: EUR}}
"""


def run(command, **kwargs):
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False, **kwargs)


def snapshot(tmp_path, store, taken_at, release, *options):
    return run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            str(tmp_path / "inventory.yml"),
            str(tmp_path / "play.yml"),
            "-e",
            f"store={store}",
            "-e",
            f"taken_at={taken_at}",
            "-e",
            f"release={release}",
            *options,
        ]
    )


def test_snapshot_history_diff_show_and_drift(tmp_path):
    (tmp_path / "inventory.yml").write_text(INVENTORY.format(python=sys.executable))
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    store = tmp_path / "history"

    checked = snapshot(tmp_path, store, "2026-11-01T10:00:00Z", "2.3.1", "--check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "changed=1" in checked.stdout, "check mode says the first snapshot would be written"
    assert not store.exists(), "check mode writes nothing"

    first = snapshot(tmp_path, store, "2026-11-01T10:00:00Z", "2.3.1")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "changed=1" in first.stdout
    same = snapshot(tmp_path, store, "2026-11-02T10:00:00Z", "2.3.1", "--diff")
    assert "changed=0" in same.stdout, "an unchanged configuration stores nothing new"
    upgraded = snapshot(tmp_path, store, "2026-11-10T10:00:00Z", "2.4.0", "--diff", "-l", "term-a")
    assert "application.current: 2.4.0" in upgraded.stdout

    history = run([str(BIN / "ipm-config"), "--store", str(store), "--json", "history", "term-a"])
    assert [row["release"] for row in json.loads(history.stdout)] == ["2.3.1", "2.4.0"]

    diff = run([str(BIN / "ipm-config"), "--store", str(store), "diff", "term-a", "2026-11-05", "2026-11-11"])
    assert diff.returncode == 0 and 'application.current: "2.3.1" -> "2.4.0"' in diff.stdout

    show = run(
        [
            str(BIN / "ipm-config"),
            "--store",
            str(store),
            "--json",
            "show",
            "2026-11-05",
            "-i",
            str(tmp_path / "inventory.yml"),
            "--site",
            "lyon",
        ]
    )
    assert show.returncode == 0, show.stderr
    assert {name: snap["facts"]["application"]["current"] for name, snap in json.loads(show.stdout).items()} == {
        "term-a": "2.3.1",
        "term-b": "2.3.1",
    }

    drift = run(
        [
            str(BIN / "ipm-config"),
            "--store",
            str(store),
            "--json",
            "drift",
            "-i",
            str(tmp_path / "inventory.yml"),
            "--fail-on-drift",
        ]
    )
    report = json.loads(drift.stdout)
    # term-a was upgraded to 2.4.0 as the registry wants; term-b still runs 2.3.1.
    assert drift.returncode == 1, "--fail-on-drift exits 1 when a terminal drifted"
    assert report["summary"] == {"terminals": 2, "drifted": 1, "no_snapshot": 0}
    assert report["terminals"]["term-a"]["differences"] == []
    assert report["terminals"]["term-b"]["differences"] == [
        {"aspect": "release", "path": "application.current", "desired": "2.4.0", "actual": "2.3.1"}
    ]
    text = run([str(BIN / "ipm-config"), "--store", str(store), "drift", "-i", str(tmp_path / "inventory.yml")])
    assert "customer acme / site lyon: 1 of 2 terminals drifted" in text.stdout


def test_unknown_terminal_and_bad_date_are_one_line_errors(tmp_path):
    missing = run([str(BIN / "ipm-config"), "--store", str(tmp_path), "history", "nobody"])
    assert missing.returncode == 2
    assert (
        missing.stderr.strip()
        == f"ipm-config: terminal nobody has no snapshot in {tmp_path}: run playbooks/snapshot.yml first"
    )
    bad_date = run([str(BIN / "ipm-config"), "--store", str(tmp_path), "diff", "nobody", "yesterday"])
    assert bad_date.returncode == 2 and "expected ISO 8601" in bad_date.stderr and "Traceback" not in bad_date.stderr


def test_a_corrupt_store_is_named_not_a_traceback(tmp_path):
    store = tmp_path / "store"
    (store / "term-a").mkdir(parents=True)
    for name, content in (
        ("20261101T000000000000Z.json", '{"taken_at": "2026-11-01"}'),  # no facts
        ("20261102T000000000000Z.json", "[]"),  # not an object
        ("20261399T000000000000Z.json", "{}"),  # a name that is not a time: not a snapshot
    ):
        (store / "term-a" / name).write_text(content)
    for command in (
        ["history", "term-a"],
        ["show", "--terminal", "term-a", "2026-12-01"],
        ["diff", "term-a", "2026-10-01"],
    ):
        result = run([str(BIN / "ipm-config"), "--store", str(store), *command])
        assert result.returncode != 0 and "Traceback" not in result.stderr, (command, result.stderr)
        assert re.search(r"term-a/2026110[12]T000000000000Z\.json is not a snapshot", result.stderr), result.stderr
    not_a_store = run([str(BIN / "ipm-config"), "--store", "/etc/passwd", "history", "term-a"])
    assert not_a_store.returncode != 0 and "Traceback" not in not_a_store.stderr
    assert "cannot be read" in not_a_store.stderr


def test_snapshot_and_delivery_arguments_are_checked(tmp_path):
    (tmp_path / "inventory.yml").write_text(INVENTORY.format(python=sys.executable))
    (tmp_path / "play.yml").write_text(
        "- hosts: term-a\n  gather_facts: false\n  tasks:\n"
        "    - ipm.fleet.snapshot: {store: /tmp/x, facts: {a: 1}, context: abc}\n"
    )
    bad_context = snapshot(tmp_path, tmp_path / "h", "2026-11-01T10:00:00Z", "2.3.1")
    assert bad_context.returncode != 0 and "context" in bad_context.stdout and "dict" in bad_context.stdout
    for arguments, words in (
        ("{release: 2.4.0, result: shipped}", ("result", "shipped", "not_reached")),
        ("{release: 2.4.0, result: delivered, details: oops}", ("details", "dict")),
    ):
        (tmp_path / "play.yml").write_text(
            f"- hosts: term-a\n  gather_facts: false\n  tasks:\n    - ipm.fleet.delivery: {arguments}\n"
        )
        bad_delivery = snapshot(tmp_path, tmp_path / "h", "2026-11-01T10:00:00Z", "2.3.1")
        assert bad_delivery.returncode != 0
        assert all(word in bad_delivery.stdout for word in words), bad_delivery.stdout


def test_drift_layers_against_the_desired_release_and_sets_staged_values_aside(tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1]))  # --import-mode=importlib: helpers in tests/unit
    import registry_builder as rb

    from ipm_tools import config

    catalog, customers = rb.base()
    customers["alpha.yml"]["customer"]["parameters"] = {"plate_recognition_enabled": False, "currency": "EUR"}
    registry = rb.write(tmp_path, catalog, customers)
    releases = config._releases(str(registry))
    assert {"1.0.0", "2.0.0"} <= set(releases)
    variables = {
        "ipm_release": "1.0.0",
        "ipm_customer_parameters": {"plate_recognition_enabled": False, "currency": "EUR"},
        "ipm_parameters": {"max_amount": 150.0},
    }
    desired = config._desired(variables, releases)
    assert desired["parameters"] == {"currency": "EUR", "max_amount": 150.0}
    assert desired["notes"] == [
        "plate_recognition_enabled (customer): not a parameter of release 1.0.0, set aside for the release that has it"
    ]
    on_2 = config._desired(dict(variables, ipm_release="2.0.0"), releases)
    assert on_2["parameters"] == {"plate_recognition_enabled": False, "currency": "EUR"}
    assert on_2["notes"] == [
        "max_amount (terminal): not a parameter of release 2.0.0, set aside for the release that has it"
    ]
    # A terminal still on 1.0.0 while the registry wants 2.0.0: its parameters are compared under the
    # release it runs (the release drift is reported on its own), so a 2.0.0 value is staged, not drift.
    running_old = config._desired(dict(variables, ipm_release="2.0.0"), releases, running="1.0.0")
    assert running_old["release"] == "2.0.0"
    assert running_old["parameters"] == {"currency": "EUR", "max_amount": 150.0}
    assert running_old["notes"][0].startswith("plate_recognition_enabled (customer): not a parameter of release 1.0.0")


def test_params_shows_each_value_with_its_layer_and_an_upgrade(capsys, monkeypatch):
    from ipm_tools import config

    monkeypatch.chdir(ROOT)
    inventory = str(ROOT / "inventories" / "demo")
    assert config.main(["params", "us-nyp-003", "-i", inventory]) == 0
    out = capsys.readouterr().out
    assert out.startswith("terminal us-nyp-003  (customer metro-transit, site new-york-penn, model TK-110")
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()}
    assert lines["language"].endswith("from terminal") and '"es"' in lines["language"]
    assert lines["receipt_mode"].endswith("from customer") and lines["log_level"].endswith("from release 3.0.0")
    assert "staged (set aside, not applied under 3.0.0): none" in out

    assert config.main(["params", "us-nyp-003", "-i", inventory, "--release", "2.4.0", "--explain"]) == 0
    out = capsys.readouterr().out
    after = out.split("after an upgrade to 2.4.0:")[1]
    assert "model TK-110: supported by 2.4.0" in after
    assert 'tariff_zone = "1" (terminal layer)' in after.split("now staged")[1]
    assert "receipt_mode (customer layer): expected one of" in after and "[new]" in after
    assert 'customer         "en"' in out and "overridden by terminal" in out  # --explain: every layer


def test_params_json_masks_secrets(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).parents[1]))  # --import-mode=importlib: helpers in tests/unit
    import registry_builder as rb

    from ipm_tools import config

    config_file = rb.write(tmp_path)
    assert config.main(["params", "a-001", "-i", str(config_file), "--release", "2.0.0", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["current"]["parameters"]["idle_timeout_s"] == {
        "value": 90,
        "source": "site",
        "layers": [
            {
                "layer": "release 1.0.0",
                "given": "idle_timeout_s",
                "value": 60,
                "status": "overridden",
                "reason": "overridden by site",
            },
            {
                "layer": "site",
                "given": "idle_timeout_s",
                "value": 90,
                "status": "wins",
                "reason": "the highest layer that sets it",
            },
        ],
    }
    assert document["upgrade"]["now_staged"] == [{"name": "max_amount", "layer": "terminal", "value": 150.0}]
    assert document["current"]["parameters"]["payment_api_token"]["value"] == ""  # empty: nothing to hide

    from ansible_collections.ipm.fleet.plugins.plugin_utils import registry as reg

    fleet, _ = reg.load_fleet(str(config_file))
    fleet.find_terminal("a-001")[2]["parameters"]["payment_api_token"] = "s3cr3t-token"
    original = config.load_fleet
    try:
        config.load_fleet = lambda _path: (fleet, [])
        assert config.main(["--json", "params", "a-001", "--explain"]) == 0
        out = capsys.readouterr().out
        assert config.main(["params", "a-001", "--explain"]) == 0
        out += capsys.readouterr().out
    finally:
        config.load_fleet = original
    assert "s3cr3t" not in out and '"********"' in out


def test_params_user_mistakes_are_one_line_with_exit_2(tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1]))
    import registry_builder as rb

    inventory = str(rb.write(tmp_path))
    unknown = run([str(BIN / "ipm-config"), "params", "a-01", "-i", inventory])
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    assert "no terminal 'a-01'" in unknown.stderr and "did you mean 'a-001'?" in unknown.stderr
    release = run([str(BIN / "ipm-config"), "params", "a-001", "-i", inventory, "--release", "7.0"])
    assert release.returncode == 2 and release.stderr.count("\n") == 1
    assert release.stderr.strip().endswith("known releases: 1.0.0, 2.0.0")
    nothing = run([str(BIN / "ipm-config"), "params", "a-001", "-i", str(tmp_path / "nowhere")])
    assert nothing.returncode == 2 and "Traceback" not in nothing.stderr and nothing.stderr.count("\n") == 1
    helped = run([str(BIN / "ipm-config"), "params", "--help"])
    assert helped.returncode == 0 and "--explain" in helped.stdout and "--release" in helped.stdout
