# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compatibility of a release with a terminal, checked before anything is changed.

``check_compatibility(manifest, facts)`` takes a release manifest (``app/releases/<v>.yml`` plus what
``ipm-release build`` adds) and a terminal's facts (the ``ipm_terminal`` fact of
``ipm.fleet.terminal_facts``) and returns ``{"compatible": bool, "reasons": [...]}``.

A fact that is unknown counts against the release: a terminal is never declared compatible on a
guess. Standard library only: the rollout module runs this on terminals too.
"""

from __future__ import annotations

from ansible_collections.ipm.fleet.plugins.module_utils.release_manifest import version_tuple


def _get(mapping, *path):
    for key in path:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def _unknown_reason(facts, section):
    reason = _get(facts, section, "unknown")
    return " (%s)" % reason if reason else ""


def check_compatibility(manifest, facts, allow_downgrade=False):
    """Check one release manifest against one terminal's facts; see the module docstring."""
    reasons = []
    if not isinstance(manifest, dict) or not version_tuple(manifest.get("version")):
        return {"compatible": False, "reasons": ["release manifest: expected a mapping with a version X.Y.Z"]}
    if not isinstance(facts, dict):
        return {"compatible": False, "reasons": ["terminal facts: expected the ipm_terminal fact (a mapping)"]}
    version = manifest["version"]
    rules = manifest.get("compatibility") or {}

    models = rules.get("models") or []
    model = _get(facts, "hardware", "model")
    if not model:
        reasons.append(
            "hardware model unknown%s; release %s needs one of %s"
            % (_unknown_reason(facts, "hardware"), version, ", ".join(models))
        )
    elif models and model not in models:
        reasons.append(
            "hardware model %s is not supported by release %s (supported: %s)" % (model, version, ", ".join(models))
        )

    systems = rules.get("os") or []
    os_id = _get(facts, "os", "id")
    if not os_id:
        reasons.append(
            "OS unknown%s; release %s needs %s" % (_unknown_reason(facts, "os"), version, ", ".join(systems))
        )
    elif systems and os_id not in systems:
        reasons.append("OS %s is not supported by release %s (supported: %s)" % (os_id, version, ", ".join(systems)))

    needed_mib = rules.get("min_free_disk_mib")
    free_mib = _get(facts, "hardware", "disk_free_mib")
    if needed_mib:
        if free_mib is None:
            reasons.append(
                "free disk unknown%s; release %s needs %s MiB"
                % (_unknown_reason(facts, "hardware"), version, needed_mib)
            )
        elif free_mib < needed_mib:
            reasons.append(
                "free disk %s MiB is less than the %s MiB release %s needs" % (free_mib, needed_mib, version)
            )

    current = _get(facts, "application", "current")
    if current:
        current_version = version_tuple(current)
        oldest = rules.get("upgrades_from")
        if current_version is None:
            reasons.append("installed release %r is not a version X.Y.Z" % (current,))
        else:
            if oldest and version_tuple(oldest) and current_version < version_tuple(oldest):
                reasons.append(
                    "installed release %s is older than %s, the oldest release %s upgrades from"
                    % (current, oldest, version)
                )
            if current_version > version_tuple(version) and not allow_downgrade:
                reasons.append(
                    "installed release %s is newer than %s: a downgrade needs allow_downgrade"
                    " (playbooks/rollout.yml: -e rollout_allow_downgrade=true)" % (current, version)
                )

    required = rules.get("interfaces") or []
    if required:
        interfaces = facts.get("interfaces")
        if not isinstance(interfaces, dict) or "devices" not in interfaces:
            reasons.append(
                "interfaces unknown%s; release %s needs %s"
                % (_unknown_reason(facts, "interfaces"), version, ", ".join(required))
            )
        else:
            devices = interfaces.get("devices") or {}
            for name in required:
                device = devices.get(name)
                if device is None:
                    reasons.append("interface %s is not configured; release %s needs it" % (name, version))
                elif not device.get("present"):
                    reasons.append(
                        "interface %s is configured but its device %s is not present" % (name, device.get("device"))
                    )

    return {"compatible": not reasons, "reasons": reasons}
