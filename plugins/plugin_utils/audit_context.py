# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who, where and when for audit records: the operator chain, the controller, site-local time.

Standard library only; no Ansible runtime state.
"""

from __future__ import annotations

import datetime
import getpass
import os
import socket
import subprocess
from collections.abc import Mapping
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAINTENANCE_TYPES = ("preventive", "corrective", "evolutive")


def resolve_operator(extra_vars: Mapping, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The operator's identity and where it came from; never blank.

    Chain: extra var ``ipm_operator`` (set by the support tool or AWX) -> environment ``IPM_OPERATOR``
    -> AWX's ``awx_user_name`` / ``tower_user_name`` extra vars -> the OS user running the controller.
    """
    environ = os.environ if environ is None else environ
    candidates = (
        (extra_vars.get("ipm_operator"), "extra_var:ipm_operator"),
        (environ.get("IPM_OPERATOR"), "env:IPM_OPERATOR"),
        (extra_vars.get("awx_user_name"), "extra_var:awx_user_name"),
        (extra_vars.get("tower_user_name"), "extra_var:tower_user_name"),
    )
    for value, source in candidates:
        if isinstance(value, str) and value.strip():
            return value.strip(), source
    return os_user(), "os_user"


def os_user() -> str:
    """The OS account running the controller (uid as a last resort)."""
    try:
        name = getpass.getuser()
        if name:
            return name
    except (KeyError, OSError, ImportError):
        pass
    return f"uid:{os.getuid()}"


def controller_host() -> str:
    return socket.getfqdn() or socket.gethostname() or "unknown"


def git_commit(directory: str) -> str | None:
    """The commit of the project a playbook lives in (with ``+dirty`` when files changed), or None."""
    try:
        out = subprocess.run(
            ["git", "-C", directory, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        if out.returncode != 0:
            return None
        commit = out.stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", directory, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return commit + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


@lru_cache(maxsize=512)
def zone(name: str | None) -> datetime.tzinfo:
    """The IANA zone ``name``, or UTC when missing or unknown."""
    if not name:
        return datetime.timezone.utc
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return datetime.timezone.utc


def utc_and_site_time(timestamp: float, timezone_name: str | None) -> tuple[str, str]:
    """A POSIX timestamp as (UTC ``...Z``, site-local ISO 8601 with offset)."""
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    utc = moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    return utc, moment.astimezone(zone(timezone_name)).isoformat(timespec="microseconds")


def normalise_maintenance_type(value: object) -> str | None:
    """Return the maintenance type in lower case, None when unset; ValueError when not one of the three."""
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    if text not in MAINTENANCE_TYPES:
        raise ValueError(f"maintenance_type {value!r} is not one of {', '.join(MAINTENANCE_TYPES)}")
    return text
