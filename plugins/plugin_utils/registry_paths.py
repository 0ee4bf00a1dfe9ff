# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which files make a registry.

:func:`resolve_registry_dir` finds the registry directory from what a user names (the directory, its
catalog, an inventory directory or its ``*.ipm_registry.yml``); :func:`registry_files` lists its
customer files; :func:`fingerprint` stamps every file the registry reads, for the plugin's cache.
"""

from __future__ import annotations

import os

import yaml

from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_yaml import load_yaml

CATALOG_FILE = "catalog.yml"
PLAN_FILE = "vpn-plan.yml"  # the VPN address plan (vpn_plan.py), not a customer file
POLICY_FILE = "policy.yml"  # the authorization policy (authz.py), not a customer file
YAML_SUFFIXES = (".yml", ".yaml")


def resolve_registry_dir(path: str) -> str:
    """The registry directory from a registry directory, a catalog file or an inventory config file.

    An inventory directory holding a ``*.ipm_registry.yml`` file, or that file itself, leads to the
    ``registry:`` it names (relative to the file).
    """
    path = os.path.abspath(path)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, CATALOG_FILE)):
            return path
        configs = sorted(
            name for name in os.listdir(path) if name.endswith((".ipm_registry.yml", ".ipm_registry.yaml"))
        )
        if configs:
            path = os.path.join(path, configs[0])
        else:
            return path
    if os.path.basename(path) == CATALOG_FILE:
        return os.path.dirname(path)
    if path.endswith((".ipm_registry.yml", ".ipm_registry.yaml")):
        config = load_yaml(path)
        if isinstance(config, dict) and isinstance(config.get("registry"), str):
            return os.path.normpath(os.path.join(os.path.dirname(path), config["registry"]))
    return path


def registry_files(registry_dir: str, skip_dirs=()) -> list[str]:
    """Customer files: every YAML file below the registry directory except the catalog, the VPN plan and the policy."""
    skip = {os.path.realpath(d) for d in skip_dirs}
    found = []
    for root, dirs, files in os.walk(registry_dir):
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and os.path.realpath(os.path.join(root, d)) not in skip
        )
        for name in files:
            if name.endswith(YAML_SUFFIXES) and not name.startswith("."):
                full = os.path.join(root, name)
                if full not in (
                    os.path.join(registry_dir, CATALOG_FILE),
                    os.path.join(registry_dir, PLAN_FILE),
                    os.path.join(registry_dir, POLICY_FILE),
                ):
                    found.append(full)
    return sorted(found)


def fingerprint(registry_dir: str) -> list:
    """Names, sizes and modification times of every file the registry reads (for the plugin cache).

    The catalog, the release definitions it points to (wherever they are) and the customer files;
    not ``.git`` or other files the registry does not read, so a git operation does not invalidate it.
    """
    catalog = os.path.join(registry_dir, CATALOG_FILE)
    paths = [catalog, os.path.join(registry_dir, PLAN_FILE)]
    releases_dir = None
    try:
        relative = load_yaml(catalog).get("releases_dir")
        releases_dir = os.path.normpath(os.path.join(registry_dir, relative))
        paths += [
            os.path.join(releases_dir, name)
            for name in sorted(os.listdir(releases_dir))
            if name.endswith(YAML_SUFFIXES) and not name.startswith(".")
        ]
    except (OSError, AttributeError, TypeError, ValueError, yaml.YAMLError):
        pass  # no usable catalog: loading will report it, and the stamp still follows the catalog's own file
    paths += registry_files(registry_dir, [releases_dir] if releases_dir else [])
    items = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            continue
        items.append([path, stat.st_size, stat.st_mtime_ns])
    return items
