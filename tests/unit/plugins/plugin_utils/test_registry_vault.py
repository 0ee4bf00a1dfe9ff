"""Secret parameters as Ansible Vault values in the registry: read, checked, handed to Ansible encrypted.

Real parts throughout: values encrypted by the real ``ansible-vault encrypt_string`` (its output
pasted into the customer file as it is printed), the real registry reader and validator, and real
``ansible`` / ``ansible-inventory`` runs through the ``ipm.fleet.registry`` inventory plugin, with a
real vault password file, a wrong one and none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parents[2]))  # --import-mode=importlib: helpers in tests/unit
import registry_builder as rb
import vault_fixtures as vf

from ansible_collections.ipm.fleet.plugins.plugin_utils import registry as reg
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_yaml import read_yaml
from ansible_collections.ipm.fleet.plugins.plugin_utils.vault_values import VaultValue, vault_format_fault

ROOT = Path(__file__).resolve().parents[4]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def vault(tmp_path_factory):
    """A password file, a canary and what ``ansible-vault encrypt_string --name payment_api_token`` printed."""
    directory = tmp_path_factory.mktemp("vault")
    passwords = vf.password_file(directory)
    canary = f"canary-{uuid.uuid4()}"
    printed = vf.encrypt_string(canary, "payment_api_token", passwords)
    return {
        "passwords": passwords,
        "canary": canary,
        "printed": printed,
        "ciphertext": vf.pasted_ciphertext(printed),
        "directory": directory,
    }


def _indent(text: str, spaces: int) -> str:
    return "".join(" " * spaces + line + "\n" for line in text.rstrip("\n").split("\n"))


def write_with_pasted_token(tmp_path, vault, layer="terminal"):
    """The base registry with ansible-vault's printed output pasted under one layer's parameters."""
    config = rb.write(tmp_path)
    path = tmp_path / "registry" / "customers" / "alpha.yml"
    document = yaml.safe_load(path.read_text())
    marker = "PASTE_HERE"
    target = {
        "customer": document["customer"],
        "site": document["sites"][0],
        "terminal": document["sites"][0]["terminals"][0],
    }[layer]
    target["parameters"] = {**target.get("parameters", {}), marker: 1}
    text = yaml.safe_dump(document, sort_keys=False)
    line = next(line for line in text.splitlines() if line.strip().startswith(marker))
    spaces = len(line) - len(line.lstrip())
    path.write_text(text.replace(line, _indent(vault["printed"], spaces).rstrip("\n")))
    return config, path


def test_pasted_encrypt_string_output_is_read_as_a_vault_value_at_every_layer(tmp_path, vault):
    for layer in ("customer", "site", "terminal"):
        config, _path = write_with_pasted_token(tmp_path / layer, vault, layer)
        fleet, problems = reg.load_fleet(str(config))
        assert problems == [], problems
        customer, site, terminal = fleet.find_terminal("a-001")
        holder = {"customer": customer, "site": site, "terminal": terminal}[layer]
        token = holder["parameters"]["payment_api_token"]
        assert isinstance(token, VaultValue) and token.startswith("$ANSIBLE_VAULT;1.1;AES256")
        assert vault_format_fault(token) is None
        assert vault["canary"] not in repr(holder)
        effective = reg.layered_parameters(fleet.releases["1.0.0"], customer, site, terminal, with_sources=True)
        assert effective["payment_api_token"]["source"] == layer


def test_every_reading_path_carries_the_ciphertext(tmp_path, vault):
    # Plain tree (fast path), anchors and aliases (shared path), a merge key (PyYAML's constructor).
    block = _indent(str(vault["ciphertext"]), 4)
    texts = {
        "tree": f"parameters:\n  payment_api_token: !vault |\n{block}",
        "shared": f"a: &p\n  payment_api_token: !vault |\n{block}b: *p\n",
        "merge": f"a: &p\n  payment_api_token: !vault |\n{block}b:\n  <<: *p\n  currency: EUR\n",
    }
    for name, text in texts.items():
        path = tmp_path / f"{name}.yml"
        path.write_text(text)
        data, _shared = read_yaml(str(path))
        for value in data.values():
            token = value["payment_api_token"]
            assert type(token) is VaultValue, name
            assert token == vault["ciphertext"], name


def test_a_vault_tag_on_a_mapping_is_a_yaml_problem_with_its_line(tmp_path):
    raw = {"customers/zulu.yml": "customer:\n  id: zulu\n  parameters:\n    payment_api_token: !vault {a: 1}\n"}
    config = rb.write(tmp_path, raw=raw)
    _fleet, problems = reg.load_fleet(str(config))
    (problem,) = [p for p in problems if p.file.endswith("zulu.yml")]
    assert problem.line == 4
    assert "the !vault tag needs a string (the output of ansible-vault encrypt_string), found a mapping" in str(problem)


@pytest.mark.parametrize(
    ("layer", "keys"),
    [
        ("customer", "customer.parameters.payment_api_token"),
        ("site", "sites[0].parameters.payment_api_token"),
        ("terminal", "sites[0].terminals[0].parameters.payment_api_token"),
        ("retired", "sites[0].terminals[1].parameters.payment_api_token"),
    ],
)
def test_a_plain_text_secret_is_refused_at_any_layer_without_echoing_it(tmp_path, layer, keys):
    canary = f"canary-{uuid.uuid4()}"
    catalog, customers = rb.base()
    alpha = customers["alpha.yml"]
    holder = {
        "customer": alpha["customer"],
        "site": alpha["sites"][0],
        "terminal": alpha["sites"][0]["terminals"][0],
        "retired": alpha["sites"][0]["terminals"][1],
    }[layer]
    holder.setdefault("parameters", {})["payment_api_token"] = canary
    config = rb.write(tmp_path, catalog, customers)
    _fleet, problems = reg.load_fleet(str(config))
    assert [p.path for p in problems] == [keys]
    (problem,) = problems
    text = str(problem)
    expected_line = next(
        number
        for number, line in enumerate((tmp_path / "registry/customers/alpha.yml").read_text().splitlines(), 1)
        if "payment_api_token" in line
    )
    assert text.startswith(
        f"{tmp_path}/registry/customers/alpha.yml:{expected_line}: {keys}: secret parameter in plain text"
    )
    assert "expected a vault-encrypted value: ansible-vault encrypt_string --name payment_api_token 'VALUE'" in text
    assert "found a plain string (not shown)" in text
    assert canary not in text and canary not in json.dumps(problem.as_dict())


def test_the_command_line_refuses_it_too_and_accepts_an_empty_secret(tmp_path):
    canary = f"canary-{uuid.uuid4()}"
    catalog, customers = rb.base()
    customers["alpha.yml"]["customer"]["parameters"]["payment_api_token"] = ""  # no secret: allowed
    config = rb.write(tmp_path / "empty", catalog, customers)
    ok = subprocess.run(
        [str(BIN / "ipm-registry"), "validate", str(config)], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    customers["alpha.yml"]["sites"][0]["parameters"]["payment_api_token"] = canary
    config = rb.write(tmp_path / "plain", catalog, customers)
    for options in ([], ["--format", "json"]):
        bad = subprocess.run(
            [str(BIN / "ipm-registry"), "validate", str(config), *options], capture_output=True, text=True, check=False
        )
        assert bad.returncode == 1
        assert "Traceback" not in bad.stderr
        assert "ansible-vault encrypt_string --name payment_api_token 'VALUE'" in bad.stdout + bad.stderr
        assert canary not in bad.stdout + bad.stderr


def test_vault_values_only_for_secrets_and_only_well_formed(tmp_path, vault):
    catalog, customers = rb.base()
    alpha = customers["alpha.yml"]
    alpha["customer"]["parameters"]["currency"] = vault["ciphertext"]  # not a secret
    alpha["sites"][0]["parameters"]["payment_api_token"] = VaultValue("canary-not-encrypted")  # !vault on plain text
    broken = str(vault["ciphertext"])[:-20] + "\n"
    alpha["sites"][0]["terminals"][0]["parameters"]["payment_api_token"] = VaultValue(broken)
    alpha["sites"][0]["terminals"][0]["notes"] = vault["ciphertext"]  # outside parameters
    customers.pop("alpha.yml")
    config = rb.write(tmp_path, catalog, customers)
    (tmp_path / "registry/customers/alpha.yml").write_text(vf.dump(alpha))
    _fleet, problems = reg.load_fleet(str(config))
    found = {p.path: str(p) for p in problems}
    assert sorted(found) == [
        "customer.parameters.currency",
        "sites[0].parameters.payment_api_token",
        "sites[0].terminals[0].notes",
        "sites[0].terminals[0].parameters.payment_api_token",
    ]
    assert "vault value for a parameter that is not secret" in found["customer.parameters.currency"]
    assert (
        "only secret parameters such as payment_api_token are vault-encrypted" in found["customer.parameters.currency"]
    )
    assert "malformed vault value" in found["sites[0].parameters.payment_api_token"]
    assert "not starting with $ANSIBLE_VAULT;" in found["sites[0].parameters.payment_api_token"]
    assert "canary-not-encrypted" not in " ".join(found.values())
    assert "damaged vault envelope" in found["sites[0].terminals[0].parameters.payment_api_token"]
    assert "vault value outside parameters" in found["sites[0].terminals[0].notes"]


def test_show_masks_a_vaulted_secret(tmp_path, vault):
    config, _path = write_with_pasted_token(tmp_path, vault)
    for options in ([], ["--format", "json"]):
        shown = subprocess.run(
            [str(BIN / "ipm-registry"), "show", "a-001", "-r", str(config), *options],
            capture_output=True,
            text=True,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        assert "********" in shown.stdout
        assert "$ANSIBLE_VAULT" not in shown.stdout and vault["canary"] not in shown.stdout


def ansible(*args, cwd=ROOT):
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_INVENTORY", None)
    env.pop("ANSIBLE_VAULT_PASSWORD_FILE", None)
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_ansible_decrypts_the_inventory_value_only_when_used_and_the_cache_keeps_it_encrypted(tmp_path, vault):
    config, _path = write_with_pasted_token(tmp_path, vault)
    cache_dir = tmp_path / "cache"
    config.write_text(
        "plugin: ipm.fleet.registry\nregistry: registry\ncache: true\n"
        f"cache_plugin: ansible.builtin.jsonfile\ncache_connection: {cache_dir}\n"
    )
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    use = ["-m", "ansible.builtin.debug", "-a", "msg='token {{ ipm_parameters.payment_api_token }}'"]
    for attempt in ("fresh", "from the cache"):
        listed = ansible("ansible-inventory", "-i", str(config), "--list")
        assert listed.returncode == 0, listed.stderr
        token = json.loads(listed.stdout)["_meta"]["hostvars"]["a-001"]["ipm_parameters"]["payment_api_token"]
        assert token == {"__ansible_vault": str(vault["ciphertext"])}, attempt
        assert vault["canary"] not in listed.stdout

        good = ansible("ansible", "-i", str(config), "a-001", *use, "--vault-password-file", str(vault["passwords"]))
        assert good.returncode == 0, good.stdout + good.stderr
        assert f"token {vault['canary']}" in good.stdout, attempt

        for options in ([], ["--vault-password-file", str(wrong)]):
            bad = ansible("ansible", "-i", str(config), "a-001", *use, *options)
            assert bad.returncode != 0, attempt
            assert "undecryptable" in bad.stdout + bad.stderr, bad.stdout + bad.stderr
            assert "token $ANSIBLE_VAULT" not in bad.stdout, "never used as a plain string"
            assert "Traceback" not in bad.stderr
        (cached,) = list(cache_dir.iterdir())
        assert vault["canary"] not in cached.read_text()
        assert "$ANSIBLE_VAULT;1.1;AES256" in cached.read_text()


def test_a_cache_entry_whose_vault_value_was_replaced_is_not_trusted(tmp_path, vault):
    # A cache file edited so that the token is plain text: the plugin reads the registry again
    # instead of handing Ansible a plain string where the registry has a vault value.
    config, _path = write_with_pasted_token(tmp_path, vault)
    cache_dir = tmp_path / "cache"
    config.write_text(
        "plugin: ipm.fleet.registry\nregistry: registry\ncache: true\n"
        f"cache_plugin: ansible.builtin.jsonfile\ncache_connection: {cache_dir}\n"
    )
    assert ansible("ansible-inventory", "-i", str(config), "--list").returncode == 0
    (cached,) = list(cache_dir.iterdir())
    ciphertext = json.dumps(str(vault["ciphertext"]))[1:-1]
    text = cached.read_text()
    assert json.dumps(ciphertext)[1:-1] in text
    cached.write_text(text.replace(json.dumps(ciphertext)[1:-1], "plain-from-the-cache"))
    use = ["-m", "ansible.builtin.debug", "-a", "msg='token {{ ipm_parameters.payment_api_token }}'"]
    result = ansible("ansible", "-i", str(config), "a-001", *use, "--vault-password-file", str(vault["passwords"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"token {vault['canary']}" in result.stdout
    assert "plain-from-the-cache" not in result.stdout
