"""A small registry fleet for lab tests: 3 sites in 3 time zones, rings, and one site outside its window.

The registry is generated at test time so that the closed window really is closed when the test
runs (a fixed window would be open or closed depending on the hour).
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ALWAYS = [{"days": DAYS, "start": "00:00", "duration_minutes": 1440}]
TARGETS = {s: {"response_hours": 4, "repair_hours": 24} for s in ("critical", "major", "minor", "temporary")}
INTERFACES = {
    "PS-200": {
        "payment": {"device": "ingenico-iup250"},
        "printer": {"device": "custom-tg2480"},
        "barrier": {"device": "came-gard"},
    },
    "PS-300": {
        "payment": {"device": "ingenico-self-5000"},
        "printer": {"device": "custom-vkp80"},
        "camera": {"device": "hikvision-lpr"},
    },
    "TK-110": {
        "payment": {"device": "ingenico-self-4000"},
        "printer": {"device": "custom-vkp80"},
        "camera": {"device": "axis-m1065"},
    },
}


def closed_window(zone: str) -> list[dict]:
    """A window that opened three hours ago (site time) for one hour: closed now."""
    opened = dt.datetime.now(ZoneInfo(zone)) - dt.timedelta(hours=3)
    return [{"days": [DAYS[opened.weekday()]], "start": opened.strftime("%H:%M"), "duration_minutes": 60}]


def write_fleet(directory: Path) -> tuple[Path, dict[str, dict]]:
    """Write the registry and its inventory configuration; return (inventory file, terminals by id)."""
    tag = uuid.uuid4().hex[:4]
    octet = random.randint(150, 199)
    registry = directory / "registry"
    (registry / "customers").mkdir(parents=True)
    catalog = yaml.safe_load((PROJECT_ROOT / "registry" / "demo" / "catalog.yml").read_text())
    catalog["releases_dir"] = str(PROJECT_ROOT / "app" / "releases")
    (registry / "catalog.yml").write_text(yaml.safe_dump(catalog, sort_keys=False))
    terminals: dict[str, dict] = {}
    counter = iter(range(1, 250))

    def terminal(name: str, model: str, ring: str) -> dict:
        terminal_id = f"r{tag}-{name}"
        address = f"127.0.{octet}.{next(counter)}"
        entry = {
            "id": terminal_id,
            "serial_number": f"{model.replace('-', '')}-{tag}-{name}",
            "model": model,
            "ring": ring,
            "address": address,
            "interfaces": INTERFACES[model],
            "parameters": {"listen_address": address},
        }
        terminals[terminal_id] = entry
        return entry

    def site(site_id: str, city: str, zone: str, windows: list[dict], members: list[dict]) -> dict:
        return {
            "id": f"{site_id}-{tag}",
            "name": city,
            "city": city,
            "timezone": zone,
            "windows": windows,
            "terminals": members,
        }

    def customer(customer_id: str, country: str, language: str, sites: list[dict]) -> None:
        document = {
            "customer": {
                "id": f"{customer_id}-{tag}",
                "name": customer_id.title(),
                "country": country,
                "languages": [language],
                "release": "2.4.0",
                "contract": {
                    "sla_tier": "gold",
                    "coverage": {"days": DAYS, "start": "00:00", "end": "24:00"},
                    "maintenance_types": ["preventive", "corrective", "evolutive"],
                    "targets": TARGETS,
                },
            },
            "sites": sites,
        }
        (registry / "customers" / f"{customer_id}.yml").write_text(yaml.safe_dump(document, sort_keys=False))

    customer(
        "acme",
        "FR",
        "fr",
        [
            site(
                "paris",
                "Paris",
                "Europe/Paris",
                ALWAYS,
                [terminal("par1", "PS-300", "canary"), terminal("par2", "PS-200", "pilot")],
            ),
            site(
                "sydney",
                "Sydney",
                "Australia/Sydney",
                ALWAYS,
                [terminal("syd1", "TK-110", "pilot"), terminal("syd2", "PS-300", "broad")],
            ),
        ],
    )
    customer(
        "liberty",
        "US",
        "en",
        [
            site(
                "newyork",
                "New York",
                "America/New_York",
                closed_window("America/New_York"),
                [terminal("nyc1", "PS-300", "broad"), terminal("nyc2", "TK-110", "broad")],
            )
        ],
    )
    inventory = directory / "inventory"
    inventory.mkdir()
    (inventory / "fleet.ipm_registry.yml").write_text(
        yaml.safe_dump({"plugin": "ipm.fleet.registry", "registry": str(registry)})
    )
    group_vars = inventory / "group_vars"
    group_vars.mkdir()
    (group_vars / "all.yml").write_text((PROJECT_ROOT / "inventories" / "demo" / "group_vars" / "all.yml").read_text())
    return inventory, terminals
