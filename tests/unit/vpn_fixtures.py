"""Small registries with a VPN address plan, for the VPN plan, CLI and inventory tests."""

from __future__ import annotations

from pathlib import Path

import registry_builder as rb
import yaml

VPN = {
    "supernet": "10.60.0.0/14",
    "support_prefix": "10.59.0.0/24",
    "hub_address": "10.59.0.1",
    "hub_endpoint": "127.0.0.1:51820",
    "address_hold_days": 90,
}


def vpn_registry(directory: Path, catalog=None, customers=None, plan=None) -> Path:
    """The base fleet of ``registry_builder`` with a catalog ``vpn`` section and site subnets.

    alpha declares ``vpn_prefix: 10.60.0.0/20`` and its site ``10.60.1.0/28``; bravo declares no prefix
    (the plan assigns one) and its site ``10.61.1.0/28``. ``plan`` (a mapping, or text) is written as
    ``vpn-plan.yml``. Returns the inventory configuration path.
    """
    base_catalog, base_customers = vpn_base()
    config = rb.write(
        directory, base_catalog if catalog is None else catalog, base_customers if customers is None else customers
    )
    if plan is not None:
        text = plan if isinstance(plan, str) else yaml.safe_dump(plan, sort_keys=False)
        (config.parent / "registry" / "vpn-plan.yml").write_text(text)
    return config


def vpn_base():
    catalog, customers = rb.base()
    catalog["vpn"] = dict(VPN)
    customers["alpha.yml"]["customer"]["vpn_prefix"] = "10.60.0.0/20"
    customers["alpha.yml"]["sites"][0]["network"] = {"uplink": "fiber", "vpn_subnet": "10.60.1.0/28"}
    customers["bravo.yml"]["sites"][0]["network"] = {"uplink": "4g", "vpn_subnet": "10.61.1.0/28"}
    return catalog, customers


def plan_file(config: Path) -> Path:
    return config.parent / "registry" / "vpn-plan.yml"


def read_plan(config: Path) -> dict:
    return yaml.safe_load(plan_file(config).read_text())
