"""Builds small fleet registries in a temporary directory for the registry tests.

A valid base fleet (two customers in two files, two releases of its own) that each test mutates.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

RELEASES = {
    "1.0.0": {
        "version": "1.0.0",
        "compatibility": {"models": ["PS-200", "PS-300"], "os": ["debian-12"], "interfaces": ["payment"]},
        "parameters": {
            "currency": {"type": "str", "choices": ["EUR", "AUD", "USD"], "default": "EUR"},
            "idle_timeout_s": {"type": "int", "min": 5, "max": 600, "default": 60},
            "max_amount": {"type": "float", "min": 0.5, "max": 1000.0, "default": 200.0},
            "payment_enabled": {"type": "bool", "default": True},
            "payment_api_token": {"type": "str", "default": "", "secret": True},
        },
    },
    "2.0.0": {
        "version": "2.0.0",
        "compatibility": {"models": ["PS-300"], "os": ["debian-12"], "interfaces": ["payment", "camera"]},
        "parameters": {
            "currency": {"type": "str", "choices": ["EUR", "AUD", "USD"], "default": "EUR"},
            "idle_timeout_s": {"type": "int", "min": 5, "max": 600, "default": 60},
            "plate_recognition_enabled": {"type": "bool", "default": True},
        },
    },
}

CATALOG = {
    "releases_dir": "releases",
    "models": {
        "PS-200": {"kind": "pay_station", "interfaces": ["payment", "printer", "coin_acceptor"], "os": ["debian-12"]},
        "PS-300": {"kind": "pay_station", "interfaces": ["payment", "printer", "camera"], "os": ["debian-12"]},
    },
}


def _contract(tier):
    return {
        "sla_tier": tier,
        "coverage": {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00"},
        "maintenance_types": ["corrective"],
        "targets": {
            "critical": {"response_hours": 1, "repair_hours": 4},
            "major": {"response_hours": 4, "repair_hours": 24},
            "minor": {"response_hours": 24, "repair_hours": 72},
            "temporary": {"response_hours": 8, "repair_hours": 48},
        },
    }


CUSTOMERS = {
    "alpha.yml": {
        "customer": {
            "id": "alpha",
            "name": "Alpha Parking",
            "country": "FR",
            "languages": ["fr", "en"],
            "release": "1.0.0",
            "contract": _contract("gold"),
            "parameters": {"currency": "EUR"},
        },
        "sites": [
            {
                "id": "alpha-paris",
                "name": "Paris",
                "city": "Paris",
                "timezone": "Europe/Paris",
                "windows": [{"days": ["sat"], "start": "23:30", "duration_minutes": 240}],
                "parameters": {"idle_timeout_s": 90},
                "terminals": [
                    {
                        "id": "a-001",
                        "serial_number": "SN-A-001",
                        "model": "PS-300",
                        "ring": "canary",
                        "address": "127.0.99.1",
                        "interfaces": {"payment": {"device": "ingenico"}, "camera": {"device": "lpr"}},
                        "parameters": {"max_amount": 150.0},
                        "tags": ["entrance"],
                    },
                    {
                        "id": "a-002",
                        "serial_number": "SN-A-002",
                        "model": "PS-200",
                        "address": "127.0.99.2",
                        "status": "retired",
                    },
                ],
            }
        ],
    },
    "bravo.yml": {
        "customer": {
            "id": "bravo",
            "name": "Bravo Pty",
            "country": "AU",
            "languages": ["en"],
            "release": "2.0.0",
            "contract": _contract("silver"),
        },
        "sites": [
            {
                "id": "bravo-sydney",
                "name": "Sydney",
                "city": "Sydney",
                "timezone": "Australia/Sydney",
                "windows": [{"days": ["mon", "wed"], "start": "01:00", "duration_minutes": 120}],
                "terminals": [
                    {
                        "id": "b-001",
                        "serial_number": "SN-B-001",
                        "model": "PS-300",
                        "ring": "pilot",
                        "address": "127.0.99.3",
                    },
                    {
                        "id": "b-002",
                        "serial_number": "SN-B-002",
                        "model": "PS-200",
                        "release": "1.0.0",
                        "status": "spare",
                        "address": "127.0.99.4",
                    },
                ],
            }
        ],
    },
}


def base():
    """Deep copies of the base catalog and customer documents, to mutate."""
    return copy.deepcopy(CATALOG), copy.deepcopy(CUSTOMERS)


def write(directory: Path, catalog=None, customers=None, raw=None) -> Path:
    """Write a registry under ``directory/registry`` and an inventory config; return the config path.

    ``raw`` maps file names (relative to the registry) to literal YAML text, written as is.
    """
    base_catalog, base_customers = base()
    catalog = base_catalog if catalog is None else catalog
    customers = base_customers if customers is None else customers
    registry = directory / "registry"
    (registry / "customers").mkdir(parents=True, exist_ok=True)
    (registry / "releases").mkdir(exist_ok=True)
    for version, release in RELEASES.items():
        (registry / "releases" / f"{version}.yml").write_text(yaml.safe_dump(release, sort_keys=False))
    if catalog is not ...:
        (registry / "catalog.yml").write_text(yaml.safe_dump(catalog, sort_keys=False))
    for name, document in customers.items():
        (registry / "customers" / name).write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    for name, text in (raw or {}).items():
        path = registry / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    config = directory / "fleet.ipm_registry.yml"
    config.write_text("plugin: ipm.fleet.registry\nregistry: registry\n")
    return config
