# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet's rules for OS patches: which updates are security updates (one rule for facts and patching).

A security update is one published in a security suite: Debian's own (``bookworm-security``) and the
vendor mirror's (``bookworm-ipm-security``) both end their suite (codename, archive) in ``-security``.
apt names the index files it downloads after the suite (``..._dists_bookworm-ipm-security_main_...``),
so the same rule also reads a file of ``/var/lib/apt/lists``. Standard library only: this runs on terminals.
"""

from __future__ import annotations

import re

SECURITY_SUITE_SUFFIX = "-security"
_LIST_SUITE = re.compile(r"_dists_([^_]+)_")


def is_security_suite(suite):
    """True when a suite, codename or archive name (``bookworm-ipm-security``) is a security suite."""
    return isinstance(suite, str) and suite.rstrip("/").endswith(SECURITY_SUITE_SUFFIX)


def suite_of_list(list_name):
    """The suite of an apt list file's name (``host_dists_SUITE_main_binary-all_Packages``), or None."""
    match = _LIST_SUITE.search(list_name or "")
    return match.group(1) if match else None


def is_security_list(list_name):
    """True when an apt list file comes from a security suite."""
    return is_security_suite(suite_of_list(list_name))
