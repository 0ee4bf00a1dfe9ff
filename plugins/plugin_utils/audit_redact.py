# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redaction of what goes into the audit log: secrets never reach the file.

Rules (applied recursively to arguments, results, diffs and messages):

* a value under a key that looks like a secret (password, passwd, secret, token, private_key, api_key,
  credential, ...: the rule of ``module_utils/secret_values.py``) becomes ``********``;
* a value the caller marks as vault-encrypted (``is_vaulted``) becomes ``********``;
* any occurrence of a known secret value (the plaintext of vault-encrypted variables and of variables with
  secret-looking names, collected by the callback) inside any string becomes ``********``;
* ``key=value`` / ``key: value`` pairs with a secret-looking key inside free text (diffs, command lines,
  messages) get their value replaced;
* vault ciphertext (``$ANSIBLE_VAULT;...``) is replaced as a whole.

The redactor builds a new structure while it walks (the only copy the callback makes of a result);
very long strings are cut to ``max_string`` characters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

# Which names are secrets, and the mask: one rule for the audit log, the terminal facts and drift.
from ansible_collections.ipm.fleet.plugins.module_utils.secret_values import MASK, is_secret_name

NO_LOG_MARKER = "hidden: no_log was set for this result"

# key=value or key: value inside text, the key looking like a secret (the value is replaced).
# Not secret_values.SECRET_NAME, on purpose: SECRET_NAME judges a whole key name and anchors its
# short names (pass, pwd, pin, otp, psk) at the start, the end or an underscore of that name. Free
# text has no such boundaries: the key is any word around the name, so the short names would match
# inside ordinary words ("bypass=1", "spin: 3", "hotplug=on") and mask what an auditor needs to
# read. This pattern keeps the long, unambiguous names only; mapping keys always use SECRET_NAME.
# The look-behind anchors the key at the start of its word: without it a long run of word characters
# is rescanned from every position (quadratic: 41 s for one 16 KB word followed by ':').
_SECRET_IN_TEXT = re.compile(
    r"(?P<key>(?<![\w.-])[\w.-]*(?:password|passwd|passphrase|secret|token|private_?key|api_?key|credential|"
    r"auth_?key|access_?key)[\w.-]*[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\s\"',;&]+)",
    re.IGNORECASE,
)
_VAULT_TEXT = re.compile(r"\$ANSIBLE_VAULT;[^\n]*(?:\n[0-9a-fA-F]+)*")
MIN_SECRET_LEN = 4
DEFAULT_MAX_STRING = 16384


def is_secret_key(key: object) -> bool:
    """True when a mapping key's name says its value is a secret (the rule of secret_values)."""
    return is_secret_name(key)


class Redactor:
    """Makes clean, JSON-ready copies of data with every secret replaced by ``MASK``."""

    def __init__(
        self,
        is_vaulted: Callable[[object], bool] | None = None,
        max_string: int = DEFAULT_MAX_STRING,
    ) -> None:
        self._is_vaulted = is_vaulted or (lambda _value: False)
        self._max_string = max_string
        self._secrets: set[str] = set()
        self._secret_re: re.Pattern[str] | None = None

    # ---------------------------------------------------------------- known secret values

    def add_secret(self, value: object) -> None:
        """Remember a secret value so that it is masked wherever it appears inside a string."""
        if isinstance(value, str) and len(value) >= MIN_SECRET_LEN and value not in self._secrets:
            self._secrets.add(value)
            self._secret_re = None

    def collect(self, variables: Mapping, plaintext: Callable[[object], str | None] | None = None, depth: int = 0):
        """Learn the secret values in a variables mapping: values of secret-named keys and vaulted values.

        ``plaintext`` turns a vaulted value into its decrypted text (None when it cannot be decrypted).
        """
        if depth > 8:
            return
        items = variables.items() if isinstance(variables, Mapping) else enumerate(variables)
        for key, value in items:
            if self._is_vaulted(value):
                if plaintext is not None:
                    self.add_secret(plaintext(value))
            elif isinstance(value, str):
                if is_secret_key(key):
                    self.add_secret(value)
            elif isinstance(value, (Mapping, list, tuple)):
                if is_secret_key(key):
                    self._collect_all_strings(value, plaintext, depth + 1)
                else:
                    self.collect(value, plaintext, depth + 1)

    def _collect_all_strings(self, value, plaintext, depth):
        if depth > 8:
            return
        if isinstance(value, Mapping):
            value = value.values()
        for item in value:
            if self._is_vaulted(item):
                if plaintext is not None:
                    self.add_secret(plaintext(item))
            elif isinstance(item, str):
                self.add_secret(item)
            elif isinstance(item, (Mapping, list, tuple)):
                self._collect_all_strings(item, plaintext, depth + 1)

    def _compiled(self) -> re.Pattern[str] | None:
        if self._secret_re is None and self._secrets:
            # Longest first so that a secret containing another is masked whole.
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._secret_re = re.compile("|".join(re.escape(s) for s in ordered))
        return self._secret_re

    # ---------------------------------------------------------------- redaction

    def text(self, value: str) -> str:
        """Mask secrets inside one string (known secrets before the string is cut, so none is cut in two)."""
        pattern = self._compiled()
        if pattern is not None:
            value = pattern.sub(MASK, value)
        if "$ANSIBLE_VAULT;" in value:
            value = _VAULT_TEXT.sub(MASK, value)
        if len(value) > self._max_string:
            value = value[: self._max_string] + f"...[cut {len(value) - self._max_string} characters]"
        if len(value) > 6 and ("=" in value or ":" in value):
            value = _SECRET_IN_TEXT.sub(lambda m: m.group("key") + MASK, value)
        return value

    def value(self, value: object, depth: int = 0) -> object:
        """Return a clean copy of ``value`` (dicts, lists, scalars) with every secret masked."""
        if value is None or value is True or value is False or type(value) in (int, float):
            return value
        if self._is_vaulted(value):
            return MASK
        if isinstance(value, str):
            return self.text(value)
        if depth > 32:
            return "[too deep]"
        if isinstance(value, Mapping):
            clean = {}
            for key, item in value.items():
                key_text = key if isinstance(key, str) else str(key)
                if is_secret_key(key_text) and not (item is None or item is True or item is False or item == ""):
                    clean[key_text] = MASK
                else:
                    clean[key_text] = self.value(item, depth + 1)
            return clean
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self.value(item, depth + 1) for item in value]
        if isinstance(value, (int, float)):
            return value
        if isinstance(value, bytes):
            return self.text(value.decode("utf-8", "replace"))
        return self.text(str(value))
