# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the collection's filters hand to the domain logic: plain data, whatever Ansible passed in."""

from __future__ import annotations

from collections.abc import Mapping


def plain(value):
    """A plain dict/list copy of VALUE (Ansible hands filters lazy host variables and tagged values)."""
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value
