"""Real Ansible Vault values for the registry tests: ``ansible-vault encrypt_string`` and YAML that carries them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from ansible_collections.ipm.fleet.plugins.plugin_utils.vault_values import VaultValue

BIN = Path(sys.executable).parent


def password_file(directory: Path, password: str = "lab-vault-password") -> Path:
    path = directory / "vault-password"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


def encrypt_string(value: str, name: str, passwords: Path) -> str:
    """What ``ansible-vault encrypt_string --name NAME VALUE`` prints: ``NAME: !vault |`` and the ciphertext."""
    result = subprocess.run(
        [str(BIN / "ansible-vault"), "encrypt_string", "--vault-password-file", str(passwords), "--name", name, value],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout


def pasted_ciphertext(printed: str) -> VaultValue:
    """The ciphertext of what :func:`encrypt_string` printed, as the registry reader gives it."""
    return VaultValue(textwrap.dedent(printed.split("\n", 1)[1]).strip() + "\n")


def ciphertext(value: str, passwords: Path) -> VaultValue:
    """VALUE encrypted, the ciphertext alone."""
    return pasted_ciphertext(encrypt_string(value, "x", passwords))


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(VaultValue, lambda dumper, value: dumper.represent_scalar("!vault", str(value), style="|"))


def dump(document) -> str:
    """YAML of DOCUMENT with its :class:`VaultValue` items written as ``!vault |`` blocks."""
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
