# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shape of the fleet registry's files: every known key, its type and whether it is required.

One table serves two readers: the validator in ``registry.py`` (unknown keys, missing keys, wrong
types) and :func:`json_schema`, which turns it into the JSON schema that editors use
(``registry/registry.schema.json``; a unit test checks the committed file is the generated one).
Semantic rules (time zones, codes, windows, releases) live in the validator only.
"""

from __future__ import annotations

from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_codes import COUNTRY_CODES, LANGUAGE_CODES

# Identifiers become inventory names (host names, group suffixes): lower case, digits, single dashes.
ID_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
HHMM_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
RINGS = ("canary", "pilot", "broad")
STATUSES = ("active", "spare", "retired")
SLA_TIERS = ("bronze", "silver", "gold", "platinum")
SEVERITIES = ("critical", "major", "minor", "temporary")
MAINTENANCE_TYPES = ("preventive", "corrective", "evolutive")
UPLINKS = ("fiber", "dsl", "4g", "5g", "satellite")
MODEL_KINDS = ("pay_station", "kiosk")
# The catalog's vpn: section when a key is left out (rules in vpn_plan.py, docs/registry.md).
VPN_DEFAULTS = {
    "customer_prefix_length": 20,
    "site_prefix_length": 28,
    "address_hold_days": 90,
    "listen_port": 51820,
    "keepalive_s": 25,
}
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
TIMESTAMP_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"


class Field:
    """One key of a mapping: its kind and constraints.

    kind: ``str``, ``int``, ``number``, ``bool``, ``list`` (of ``item``), ``object`` (named in OBJECTS),
    ``map`` (free keys, values ``item``), ``params`` (free keys, scalar values), ``settings`` (free keys,
    scalars or lists of scalars).
    """

    __slots__ = ("description", "enum", "item", "kind", "maximum", "minimum", "obj", "pattern", "required")

    def __init__(
        self,
        kind,
        required=False,
        description="",
        enum=None,
        pattern=None,
        item=None,
        obj=None,
        minimum=None,
        maximum=None,
    ):
        self.kind = kind
        self.required = required
        self.description = description
        self.enum = enum
        self.pattern = pattern
        self.item = item
        self.obj = obj
        self.minimum = minimum
        self.maximum = maximum


def _id(description, required=True):
    return Field("str", required, description, pattern=ID_PATTERN)


def _days(description):
    return Field("list", True, description, item=Field("str", enum=DAYS))


OBJECTS: dict[str, dict[str, Field]] = {
    "catalog": {
        "description": Field("str", description="One line for people."),
        "releases_dir": Field(
            "str",
            True,
            "Directory of the release definitions (<version>.yml) or manifests (*.manifest.yml), "
            "relative to the catalog file.",
        ),
        "models": Field(
            "map", True, "Hardware models by name (PS-200, PS-300, TK-110).", item=Field("object", obj="model")
        ),
        "vpn": Field("object", description="The fleet's VPN address plan (see vpn-plan.yml).", obj="vpn"),
    },
    "vpn": {
        "supernet": Field("str", True, "IPv4 CIDR holding every terminal address, e.g. 10.60.0.0/14."),
        "support_prefix": Field("str", True, "IPv4 CIDR of the support centre and hub, outside the supernet."),
        "hub_address": Field("str", description="The hub's tunnel address, a host of support_prefix."),
        "hub_endpoint": Field("str", description="host:port terminals dial to reach the hub."),
        "listen_port": Field(
            "int", description="The hub's WireGuard UDP port (default 51820).", minimum=1, maximum=65535
        ),
        "keepalive_s": Field(
            "int",
            description="Persistent keepalive of the terminals, seconds (default 25; 0 off).",
            minimum=0,
            maximum=3600,
        ),
        "customer_prefix_length": Field(
            "int", description="Length of a customer prefix assigned by the plan (default 20).", minimum=8, maximum=30
        ),
        "site_prefix_length": Field(
            "int", description="Length of a site prefix assigned by the plan (default 28).", minimum=8, maximum=30
        ),
        "address_hold_days": Field(
            "int", description="Days a retired terminal's address is held before reuse (default 90).", minimum=0
        ),
    },
    "model": {
        "description": Field("str", description="One line for people."),
        "kind": Field("str", description="Kind of terminal.", enum=MODEL_KINDS),
        "capabilities": Field("list", description="What the hardware can do.", item=Field("str")),
        "interfaces": Field("list", True, "Peripherals the model can carry.", item=Field("str", pattern=NAME_PATTERN)),
        "os": Field("list", description="Operating systems it runs (<distribution>-<major>).", item=Field("str")),
    },
    "customer_file": {
        "customer": Field("object", True, "The customer.", obj="customer"),
        "sites": Field(
            "list", True, "The customer's sites, each with its terminals.", item=Field("object", obj="site")
        ),
    },
    "customer": {
        "id": _id("Customer id: group customer_<id>."),
        "name": Field("str", True, "Legal or usual name."),
        "country": Field("str", True, "ISO 3166-1 alpha-2 code of the head office.", enum=sorted(COUNTRY_CODES)),
        "languages": Field(
            "list", True, "ISO 639-1 codes, preferred first.", item=Field("str", enum=sorted(LANGUAGE_CODES))
        ),
        "release": Field("str", description="Default desired release of its terminals."),
        "contract": Field("object", True, "The service contract (SLA).", obj="contract"),
        "contacts": Field("list", description="People to call.", item=Field("object", obj="contact")),
        "parameters": Field("params", description="Application parameters for all its terminals."),
        "vpn_prefix": Field("str", description="The customer's VPN prefix (CIDR inside the catalog's vpn.supernet)."),
    },
    "contract": {
        "reference": Field("str", description="Contract number."),
        "sla_tier": Field("str", True, "SLA tier: group sla_<tier>.", enum=SLA_TIERS),
        "coverage": Field("object", True, "Hours the hotline covers (customer's local time).", obj="coverage"),
        "maintenance_types": Field("list", True, "Maintenance bought.", item=Field("str", enum=MAINTENANCE_TYPES)),
        "start": Field("str", description="First day of the contract, YYYY-MM-DD (quoted).", pattern=DATE_PATTERN),
        "end": Field(
            "str", description="Last day of the contract, YYYY-MM-DD (quoted); none: open-ended.", pattern=DATE_PATTERN
        ),
        "targets": Field("object", True, "Response and repair targets per severity.", obj="targets"),
        "changes": Field(
            "list",
            description="Contract changes, oldest first: from a date on, new coverage and/or targets (docs/sla.md).",
            item=Field("object", obj="contract_change"),
        ),
    },
    "contract_change": {
        "from": Field("str", True, "Effective date, YYYY-MM-DD quoted (00:00 site-local).", pattern=DATE_PATTERN),
        "reference": Field("str", description="Contract number of the amendment."),
        "coverage": Field("object", description="The new coverage hours (default: unchanged).", obj="coverage"),
        "targets": Field("object", description="The new targets (default: unchanged).", obj="targets"),
    },
    "coverage": {
        "days": _days("Days covered."),
        "start": Field("str", True, "Start, HH:MM.", pattern=HHMM_PATTERN),
        "end": Field(
            "str", True, "End, HH:MM (24:00 for midnight).", pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"
        ),
    },
    "targets": {
        severity: Field("object", True, f"Targets for {severity} tickets.", obj="target") for severity in SEVERITIES
    },
    "target": {
        "response_hours": Field("number", True, "Hours to first response.", minimum=0),
        "repair_hours": Field("number", True, "Hours to repair (at least the response time).", minimum=0),
    },
    "contact": {
        "name": Field("str", True, "Full name."),
        "role": Field("str", description="What they do for the customer."),
        "email": Field("str", description="E-mail address."),
        "phone": Field("str", description="Phone number, international format."),
        "language": Field("str", description="ISO 639-1 code.", enum=sorted(LANGUAGE_CODES)),
    },
    "site": {
        "id": _id("Site id: group site_<id> (unique across the fleet)."),
        "name": Field("str", True, "Name of the site."),
        "city": Field("str", True, "City."),
        "country": Field(
            "str", description="ISO 3166-1 alpha-2 (default: the customer's).", enum=sorted(COUNTRY_CODES)
        ),
        "timezone": Field("str", True, "IANA time zone, e.g. Europe/Paris."),
        "language": Field("str", description="ISO 639-1 (default: the customer's first).", enum=sorted(LANGUAGE_CODES)),
        "release": Field("str", description="Default desired release of its terminals."),
        "windows": Field(
            "list", description="Maintenance windows, site-local time.", item=Field("object", obj="window")
        ),
        "network": Field("object", description="Network hints for the VPN.", obj="network"),
        "address": Field("object", description="Postal address.", obj="address"),
        "parameters": Field("params", description="Application parameters for its terminals."),
        "terminals": Field("list", description="Terminals of the site.", item=Field("object", obj="terminal")),
    },
    "window": {
        "days": _days("Days the window opens."),
        "start": Field("str", True, "Opening, HH:MM site-local.", pattern=HHMM_PATTERN),
        "duration_minutes": Field("int", True, "Length in minutes (may run past midnight).", minimum=1, maximum=1440),
    },
    "network": {
        "uplink": Field("str", description="Kind of uplink.", enum=UPLINKS),
        "vpn_subnet": Field("str", description="Site subnet for the VPN address plan (CIDR)."),
        "mtu": Field("int", description="Uplink MTU.", minimum=576, maximum=9000),
        "proxy": Field("str", description="HTTP proxy URL, if the site needs one."),
    },
    "address": {
        "street": Field("str", True, "Street and number."),
        "postal_code": Field("str", description="Postal code."),
        "region": Field("str", description="Region, state or province."),
    },
    "terminal": {
        "id": _id("Terminal id: the inventory host name (unique across the fleet)."),
        "serial_number": Field("str", True, "Hardware serial number."),
        "model": Field("str", True, "Hardware model, one of the catalog's models."),
        "release": Field("str", description="Desired release (default: the site's, then the customer's)."),
        "ring": Field("str", description="Rollout ring (default broad).", enum=RINGS),
        "status": Field("str", description="Lifecycle status (default active).", enum=STATUSES),
        "address": Field("str", True, "Connection address (IP or DNS name): ansible_host."),
        "interfaces": Field(
            "map", description="Peripherals by name (one of the model's interfaces): settings.", item=Field("settings")
        ),
        "parameters": Field("params", description="Application parameters of this terminal (override the site's)."),
        "tags": Field("list", description="Free labels.", item=Field("str")),
        "notes": Field("str", description="Free text for people."),
    },
    "vpn_plan": {
        "version": Field("int", description="Format version (1).", minimum=1, maximum=1),
        "customers": Field(
            "map", description="Customer prefixes assigned by the plan.", item=Field("object", obj="vpn_plan_prefix")
        ),
        "sites": Field(
            "map", description="Site prefixes assigned by the plan.", item=Field("object", obj="vpn_plan_prefix")
        ),
        "terminals": Field(
            "map", description="Terminal id: its address.", item=Field("object", obj="vpn_plan_terminal")
        ),
        "retired": Field(
            "list",
            description="Addresses held after their terminal left.",
            item=Field("object", obj="vpn_plan_retired"),
        ),
    },
    "vpn_plan_prefix": {
        "prefix": Field("str", True, "IPv4 CIDR."),
        "assigned_at": Field("str", description="When it was assigned (UTC).", pattern=TIMESTAMP_PATTERN),
    },
    "vpn_plan_terminal": {
        "address": Field("str", True, "IPv4 address inside its site's prefix."),
        "site": Field("str", description="Site it was assigned in.", pattern=ID_PATTERN),
        "customer": Field("str", description="Customer it was assigned for.", pattern=ID_PATTERN),
        "assigned_at": Field("str", description="When it was assigned (UTC).", pattern=TIMESTAMP_PATTERN),
    },
    "vpn_plan_retired": {
        "terminal": Field("str", True, "The terminal that had the address.", pattern=ID_PATTERN),
        "address": Field("str", True, "The held address."),
        "site": Field("str", description="Its site then.", pattern=ID_PATTERN),
        "customer": Field("str", description="Its customer then.", pattern=ID_PATTERN),
        "assigned_at": Field("str", description="When it was assigned (UTC).", pattern=TIMESTAMP_PATTERN),
        "retired_at": Field("str", True, "When it was retired or moved (UTC).", pattern=TIMESTAMP_PATTERN),
    },
}

DEFAULTS = {"ring": "broad", "status": "active"}


def _field_schema(field: Field) -> dict:
    schema: dict = {}
    if field.description:
        schema["description"] = field.description
    kind = field.kind
    if kind == "str":
        schema["type"] = "string"
    elif kind == "int":
        schema["type"] = "integer"
    elif kind == "number":
        schema["type"] = "number"
    elif kind == "bool":
        schema["type"] = "boolean"
    elif kind == "list":
        schema["type"] = "array"
        schema["items"] = _field_schema(field.item)
    elif kind == "object":
        schema["$ref"] = f"#/$defs/{field.obj}"
    elif kind == "map":
        schema["type"] = "object"
        schema["additionalProperties"] = _field_schema(field.item)
    elif kind == "params":
        schema["type"] = "object"
        schema["additionalProperties"] = {"type": ["string", "integer", "number", "boolean"]}
    elif kind == "settings":
        scalar = {"type": ["string", "integer", "number", "boolean"]}
        schema["type"] = "object"
        schema["additionalProperties"] = {"anyOf": [scalar, {"type": "array", "items": scalar}]}
    if field.enum is not None:
        schema["enum"] = list(field.enum)
    if field.pattern is not None:
        schema["pattern"] = field.pattern
    if field.minimum is not None:
        schema["minimum"] = field.minimum
    if field.maximum is not None:
        schema["maximum"] = field.maximum
    return schema


def _object_schema(name: str) -> dict:
    fields = OBJECTS[name]
    schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {key: _field_schema(field) for key, field in fields.items()},
    }
    required = [key for key, field in fields.items() if field.required]
    if required:
        schema["required"] = required
    return schema


def json_schema() -> dict:
    """The JSON schema (draft 2020-12) of a registry file: a customer file or the catalog."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://ipm.example/schemas/ipm-fleet-registry.schema.json",
        "title": "ipm.fleet registry file (a customer file, catalog.yml or vpn-plan.yml)",
        "description": "Generated from plugins/plugin_utils/registry_spec.py; see docs/registry.md.",
        "oneOf": [{"$ref": "#/$defs/customer_file"}, {"$ref": "#/$defs/catalog"}, {"$ref": "#/$defs/vpn_plan"}],
        "$defs": {name: _object_schema(name) for name in OBJECTS},
    }
