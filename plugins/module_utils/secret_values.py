# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which values are secrets, and how a secret is shown: the one rule for facts, tools, diffs and the audit log.

A parameter is secret when its release's schema marks it ``secret: true`` or when its name looks
like a secret (token, password, api_key, ...). A secret's value is shown as :data:`MASK`, never in
part; an empty secret is shown as it is (there is nothing to hide, and "not set" is worth seeing).
Standard library only: this runs on terminals.
"""

from __future__ import annotations

import re

MASK = "********"

SECRET_NAME = re.compile(
    r"password|passwd|passphrase|(^|_)pass($|_)|(^|_)pwd($|_)|secret|token|private_?key|api_?key|credential|auth_?key|"
    r"access_?key|session_?key|signing_?key|encryption_?key|(^|_)pin($|_)|(^|_)otp($|_)|cookie|bearer|"
    r"authorization|client_?secret|(^|_)psk($|_)|preshared",
    re.IGNORECASE,
)


def is_secret_name(name):
    """True when a key's name says its value is a secret."""
    return isinstance(name, str) and SECRET_NAME.search(name) is not None


def is_secret_parameter(name, spec=None):
    """True when parameter NAME is a secret: marked so in its schema SPEC, or named like one."""
    return bool(isinstance(spec, dict) and spec.get("secret")) or is_secret_name(name)


def mask(value):
    """MASK for a set value, the value itself when it is empty (None or '')."""
    return value if value in (None, "") else MASK


def mask_parameters(values, schema=None):
    """A copy of the parameter mapping VALUES with every secret value masked (SCHEMA: the release's)."""
    schema = schema if isinstance(schema, dict) else {}
    return {
        name: (mask(value) if is_secret_parameter(name, schema.get(name)) else value) for name, value in values.items()
    }
