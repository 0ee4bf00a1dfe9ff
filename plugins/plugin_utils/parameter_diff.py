# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What putting the registry's parameters on a terminal changes, and how that ended, in one place.

``playbooks/parameters.yml`` and the ``ipm.fleet.app_parameters`` role only wire these together,
through the filters of ``plugins/filter/parameters.py``:

* :func:`parameter_diff` - which parameters change on a terminal, from what to what, secrets masked
  (the one mask of ``module_utils/secret_values.py``), and the parameters digests before and after
  (what ``/health`` reports as ``parameters_sha256``). Values are compared as the application reads
  them (the release's defaults overlaid with the file, numbers normalised), so a file that only
  looks different (comments, order, a default written out) is not a change and nothing restarts;
* :func:`parameters_outcome` - the delivery-ledger result of one terminal's parameters change;
* :func:`parameters_bake_outcome` - the ledger result of the ring's bake of a changed terminal.

Controller-side, no Ansible runtime state: unit-tested directly.
"""

from __future__ import annotations

import json

from ansible_collections.ipm.fleet.plugins.module_utils import release_manifest as rm
from ansible_collections.ipm.fleet.plugins.module_utils.secret_values import is_secret_parameter, mask

BAKE_PREFIX = "failed during bake: "
NOT_SET = "(not set)"


def _schema(definition):
    schema = definition.get("parameters") if isinstance(definition, dict) else None
    return schema if isinstance(schema, dict) else {}


def _effective(definition, values):
    """(the values as the application reads them, their digest), or (VALUES, None) when the release refuses them."""
    try:
        effective = rm.effective_parameters(definition, values)
    except (rm.ReleaseError, KeyError, TypeError, ValueError, AttributeError):
        # The release refuses them (the application would not start on them): compare them as written.
        try:
            merged = rm.defaults(definition)
        except (KeyError, TypeError, AttributeError):
            merged = {}
        merged.update(values)
        return merged, None
    return effective, rm.parameters_digest(effective)


def _shown(name, value, spec, present=True):
    if not present:
        return NOT_SET
    return mask(value) if is_secret_parameter(name, spec) else value


def _text(value):
    if value == NOT_SET:
        return value
    if isinstance(value, str):
        return json.dumps(value) if value == "" or value != value.strip() else value
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def parameter_diff(definition, current, wanted, host=""):
    """Which parameters change when WANTED replaces CURRENT under the release DEFINITION.

    CURRENT is the terminal's parameters file as read (None when it has none, or anything that is
    not a mapping when it cannot be read as one), WANTED the complete parameters to write.
    Returns ``{differs, changes, changed_names, secrets_changed, lines, before_sha256,
    after_sha256, diff}``: ``changes`` one ``{name, before, after, secret}`` per parameter that
    changes (secret values masked, ``(not set)`` for a parameter the file lacks and the release has
    no default for), ``lines`` the same in words, ``diff`` an Ansible diff (before/after, one
    ``name: value`` line per changed parameter, masked) for ``--diff``.
    """
    schema = _schema(definition)
    wanted = dict(wanted) if isinstance(wanted, dict) else {}
    readable = isinstance(current, dict) or current is None
    before, before_sha = _effective(definition, current if isinstance(current, dict) else {})
    after, after_sha = _effective(definition, wanted)
    if not readable:
        before_sha = None
    changes = []
    for name in list(after) + [name for name in before if name not in after]:
        spec = schema.get(name)
        had, has = name in before, name in after
        if (
            readable
            and had == has
            and before.get(name) == after.get(name)
            and type(before.get(name)) is type(after.get(name))
        ):
            continue
        secret = is_secret_parameter(name, spec)
        changes.append(
            {
                "name": name,
                "before": _shown(name, before.get(name), spec, had and readable),
                "after": _shown(name, after.get(name), spec, has),
                "secret": secret,
            }
        )
    lines = []
    for change in changes:
        line = "%s: %s -> %s" % (change["name"], _text(change["before"]), _text(change["after"]))
        if change["secret"]:
            line += " (secret, value not shown)"
        lines.append(line)
    if not readable:
        lines.insert(0, "the current parameters file is not a mapping of name: value: it is replaced")
    differs = bool(changes) or not readable or (current is None and bool(wanted))
    label = " on %s" % host if host else ""
    return {
        "differs": differs,
        "changes": changes,
        "changed_names": [change["name"] for change in changes],
        "secrets_changed": [change["name"] for change in changes if change["secret"]],
        "lines": lines,
        "before_sha256": before_sha,
        "after_sha256": after_sha,
        "diff": {
            "before_header": "parameters%s (before)" % label,
            "after_header": "parameters%s (after)" % label,
            "before": "".join("%s: %s\n" % (c["name"], _text(c["before"])) for c in changes),
            "after": "".join("%s: %s\n" % (c["name"], _text(c["after"])) for c in changes),
        },
    }


def _one_line(text):
    return " ".join(str(text or "").split())


def _changed_reason(diff):
    diff = diff if isinstance(diff, dict) else {}
    names = diff.get("changed_names") or []
    if not names:
        return "parameters rewritten"
    return "%d parameter(s) changed: %s" % (len(names), ", ".join(names))


def parameters_outcome(state):
    """The ledger entry ``{result, reason}`` of one terminal's parameters change.

    STATE, wired from the role's registered results: ``unreachable`` (and ``msg``), ``failed`` with
    ``msg`` (the role's failure), ``written`` (the file was replaced by this run), ``restored``
    (the previous file was put back and ipm-app restarted on it), ``restored_healthy`` (it answered
    healthy again; None when not checked), ``diff`` (:func:`parameter_diff`'s result).

    Unreachable -> ``not_reached``; a failure after which the previous file is back and healthy ->
    ``rolled_back``; any other failure (refused values, nothing written, or a put-back that did not
    bring ipm-app back) -> ``failed``; a change -> ``delivered``; none -> ``already_current``.
    """
    state = state if isinstance(state, dict) else {}
    message = _one_line(state.get("msg"))
    if state.get("unreachable"):
        return {
            "result": "not_reached",
            "reason": "unreachable: %s" % (message or "no answer"),
        }
    if state.get("failed"):
        if state.get("restored") and state.get("restored_healthy") is not False:
            return {"result": "rolled_back", "reason": message or "unhealthy on the new parameters; previous ones back"}
        if state.get("restored"):
            return {
                "result": "failed",
                "reason": "%s; ipm-app did NOT answer healthy on the previous parameters either"
                % (message or "unhealthy on the new parameters"),
            }
        return {"result": "failed", "reason": message or "the parameters could not be applied"}
    if state.get("written"):
        return {"result": "delivered", "reason": _changed_reason(state.get("diff"))}
    return {"result": "already_current", "reason": ""}


def parameters_bake_outcome(result, restore=None):
    """The ledger entry ``{result, reason}`` of the ring's bake of a terminal whose parameters changed.

    RESULT is the registered ``ipm.fleet.bake`` result (``rollback: false``); RESTORE says what was
    done when the bake failed: ``{restored, healthy, msg}`` (the previous file put back and ipm-app
    restarted; whether it answered healthy again). Healthy -> ``baked``; unreachable ->
    ``not_reached``; unhealthy and put back healthy -> ``rolled_back``; else ``failed``. Reasons of
    a failed bake start with ``failed during bake: ``.
    """
    result = result if isinstance(result, dict) else {}
    restore = restore if isinstance(restore, dict) else {}
    reason = _one_line(result.get("reason") or result.get("msg")) or "unhealthy"
    if result.get("unreachable"):
        return {
            "result": "not_reached",
            "reason": BAKE_PREFIX + "unreachable during the bake: " + (_one_line(result.get("msg")) or "no answer"),
        }
    if not (result.get("failed") or result.get("healthy") is False):
        return {
            "result": "baked",
            "reason": "healthy for %ss (%s probes)" % (result.get("watched_s", 0), result.get("probes", 0)),
        }
    if restore.get("restored") and restore.get("healthy") is not False:
        return {"result": "rolled_back", "reason": BAKE_PREFIX + reason + "; previous parameters put back, healthy"}
    if restore.get("restored"):
        return {
            "result": "failed",
            "reason": BAKE_PREFIX
            + reason
            + "; previous parameters put back but ipm-app did NOT answer healthy: %s"
            % (_one_line(restore.get("msg")) or "no healthy answer"),
        }
    return {
        "result": "failed",
        "reason": BAKE_PREFIX
        + reason
        + "; the previous parameters could NOT be put back: %s" % (_one_line(restore.get("msg")) or "unknown error"),
    }
