# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible Vault values in the registry: carried encrypted, never decrypted by the registry.

A registry file may give a parameter a ``!vault |`` tagged scalar, as ``ansible-vault encrypt_string``
prints it. The registry reader (``registry_yaml``) makes a :class:`VaultValue` of it: a ``str`` whose
text is the vault ciphertext (``$ANSIBLE_VAULT;1.1;AES256`` and hex lines), so that it can be copied,
pickled to and from the worker processes, and printed (the ciphertext is no secret) like any string,
but never mistaken for a plain value: :func:`is_vault_value` tells them apart. The registry checks
only that it is vault text (:func:`vault_format_fault`); the ``ipm.fleet.registry`` inventory plugin
hands it to Ansible as an ``EncryptedString`` (:func:`to_encrypted`), which Ansible decrypts when it
is used, with the run's vault password. Controller-side only.
"""

from __future__ import annotations

VAULT_TAG = "!vault"


class VaultValue(str):
    """Vault ciphertext read from a ``!vault`` tagged scalar (the text is the ciphertext, never the plain value)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "VaultValue(<vault-encrypted>)"


def is_vault_value(value) -> bool:
    """True for a vault value read from the registry, or an Ansible ``EncryptedString``."""
    if isinstance(value, VaultValue):
        return True
    try:
        from ansible.parsing.vault import EncryptedString
    except ImportError:  # pragma: no cover - ansible-core is always there on the controller
        return False
    return isinstance(value, EncryptedString)


def vault_format_fault(value) -> str | None:
    """Why ``value`` (a :class:`VaultValue`) is not vault ciphertext ansible-vault can read, else None.

    Ansible's own parser of the vault envelope and hex body judges it; nothing is decrypted. The
    answer never quotes the text (someone may have tagged a plain secret ``!vault``).
    """
    from ansible.parsing.vault import b_HEADER, parse_vaulttext, parse_vaulttext_envelope

    text = str(value).strip()
    try:
        data = text.encode("ascii")
    except UnicodeError:
        return "text that is not ASCII (vault ciphertext is)"
    if not data.startswith(b_HEADER):
        return f"a !vault value of {len(text)} characters not starting with $ANSIBLE_VAULT;"
    try:
        body, version, cipher, _vault_id = parse_vaulttext_envelope(data)
        if version not in (b"1.1", b"1.2") or cipher != "AES256":
            return "a vault header of an unknown version or cipher"
        parse_vaulttext(body)
    except Exception:  # AnsibleVaultFormatError and whatever a truncated envelope raises
        return "a damaged vault envelope (cut or edited ciphertext)"
    return None


def to_encrypted(value):
    """An Ansible ``EncryptedString`` of a :class:`VaultValue` (decrypted by Ansible when used)."""
    from ansible.parsing.vault import EncryptedString

    return EncryptedString(ciphertext=str.__str__(value))


def encrypt_in_place(container) -> int:
    """Replace every :class:`VaultValue` inside ``container`` (dicts and lists) by an ``EncryptedString``.

    Returns how many were replaced.
    """
    count = 0
    items = container.items() if isinstance(container, dict) else enumerate(container)
    for key, item in list(items):
        if isinstance(item, VaultValue):
            container[key] = to_encrypted(item)
            count += 1
        elif isinstance(item, (dict, list)):
            count += encrypt_in_place(item)
    return count
