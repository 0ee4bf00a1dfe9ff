# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the collection's filters hand to the domain logic: plain data, whatever Ansible passed in."""

from __future__ import annotations

from collections.abc import Mapping


def plain(value):
    """A plain dict/list copy of VALUE (Ansible hands filters lazy host variables and tagged values).

    Strings lose Ansible's tags too: a decrypted vault value keeps a tag that makes ``to_nice_yaml``
    write it back as ``!vault`` ciphertext, which the application cannot read.
    """
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if type(value).__name__ == "EncryptedString":  # not decrypted yet: its text is the plain value
        return str(value)
    return value
