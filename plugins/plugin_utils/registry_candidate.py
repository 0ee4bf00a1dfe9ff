# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What breaks if terminals move to a candidate release (``ipm-registry validate --release X``).

:func:`check_release` takes a loaded :class:`~.registry.Fleet` and a release of its catalog and, for
every maintained terminal (not retired) of the selection (a customer, a site, or the whole fleet),
checks what ``ipm-registry validate`` checks against the terminal's desired release, but against
the candidate: that the release supports the terminal's model (``compatibility.models``), and every
layer's parameters by the one layering rule (``module_utils/parameter_layers.py``): a value the
candidate knows but refuses is a problem, a value it does not know is staged (a note), unless no
release of the catalog knows it (a typo). Each problem is the registry's
:class:`~.registry_check.Problem` (file, key path, line, expected, found), located at the layer that
sets the value; the same customer or site fault is one Problem shared by its terminals.
Secrets' values are never quoted (the layering rule masks them). Controller-side only.
"""

from __future__ import annotations

from ansible_collections.ipm.fleet.plugins.module_utils import parameter_layers
from ansible_collections.ipm.fleet.plugins.plugin_utils import registry as reg
from ansible_collections.ipm.fleet.plugins.plugin_utils.parameter_provenance import (
    ProvenanceError,
    find_release,
    releases_having,
)
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_check import Problem, describe, display_path, suggest
from ansible_collections.ipm.fleet.plugins.plugin_utils.vault_values import VaultValue


class CandidateError(ProvenanceError):
    """A user mistake (unknown release, customer or site): one line."""


def _selection(fleet, customer_id, site_id):
    customers = [document["customer"].get("id") for document in fleet.customers]
    if customer_id is not None and customer_id not in customers:
        raise CandidateError(
            f"no customer {customer_id!r} in {display_path(fleet.registry_dir)}{suggest(customer_id, customers)}; "
            "known customers: " + ", ".join(sorted(map(str, customers)))
        )
    if site_id is not None:
        sites = [
            site.get("id")
            for document in fleet.customers
            if customer_id is None or document["customer"].get("id") == customer_id
            for site in document["sites"]
        ]
        if site_id not in sites:
            owner = f" of customer {customer_id}" if customer_id else ""
            raise CandidateError(
                f"no site {site_id!r}{owner} in {display_path(fleet.registry_dir)}{suggest(site_id, sites)}; "
                "`ipm-registry list` shows the sites"
            )


def _selected(fleet, customer_id, site_id):
    """``(file, customer, site, site_keys, terminal, terminal_keys)`` of each maintained terminal chosen."""
    for document in fleet.customers:
        customer = document["customer"]
        if customer_id is not None and customer.get("id") != customer_id:
            continue
        for site_index, site in enumerate(document["sites"]):
            if site_id is not None and site.get("id") != site_id:
                continue
            for terminal_index, terminal in enumerate(site["terminals"]):
                if terminal.get("status") == "retired":
                    continue
                site_keys = ("sites", site_index)
                yield document["file"], customer, site, site_keys, terminal, (*site_keys, "terminals", terminal_index)


def check_release(fleet, version, customer=None, site=None):
    """What breaks if the selected terminals move to release VERSION; CandidateError for a user mistake.

    Returns ``{release, customer, site, terminals, problems, breaks}``: ``terminals`` lists, per
    terminal, ``{terminal, customer, site, model, release (desired now), model_supported, problems,
    staged, carried, breaks}`` where ``problems`` are ``{parameter, layer, problem}`` (``parameter``
    None for the model) with ``problem`` a :class:`Problem`, and ``staged`` the notes
    ``{name, layer, releases, text}``; ``problems`` is every distinct Problem, sorted by file and line.
    """
    try:
        release = find_release(fleet, version)
    except ProvenanceError as error:
        raise CandidateError(str(error)) from None
    _selection(fleet, customer, site)
    shared: dict[tuple, Problem] = {}

    def problem(file, keys, message, expected, found):
        identity = (file, tuple(keys), message, expected, found)
        found_problem = shared.get(identity)
        if found_problem is None:
            found_problem = shared[identity] = Problem(file, keys, message, expected, found)
        return found_problem

    known = {name for r in fleet.releases.values() for name in (*r.parameters, *r.renamed)}
    rows = []
    for file, customer_doc, site_doc, site_keys, terminal, keys in _selected(fleet, customer, site):
        faults, staged_notes = [], []
        model = terminal.get("model")
        supported = model in release.models
        if not supported:
            faults.append(
                {
                    "parameter": None,
                    "layer": "terminal",
                    "problem": problem(
                        file,
                        (*keys, "model"),
                        f"release {version} does not support model {model}",
                        "a model among " + (", ".join(release.models) or "none") + f" (release {version}'s "
                        "compatibility.models), or another release for this terminal",
                        describe(model),
                    ),
                }
            )
        given = [customer_doc.get("parameters"), site_doc.get("parameters"), terminal.get("parameters")]
        given = [values if isinstance(values, dict) else {} for values in given]
        layered = parameter_layers.layer_parameters(release.definition, *given)
        where = {
            "customer": ("customer", "parameters"),
            "site": (*site_keys, "parameters"),
            "terminal": (*keys, "parameters"),
        }
        for item in layered["problems"]:
            value = given[parameter_layers.LAYERS.index(item["layer"])].get(item["given"])
            if isinstance(value, VaultValue):
                continue  # ciphertext: its plain value is never seen, only its form (checked by validate)
            faults.append(
                {
                    "parameter": item["name"],
                    "layer": item["layer"],
                    "problem": problem(
                        file,
                        (*where[item["layer"]], item["given"]),
                        f"value outside release {version}'s schema ({item['layer']} layer)",
                        item["expected"],
                        item["found"],
                    ),
                }
            )
        for item in layered["staged"]:
            name = item["name"]
            if name not in known:
                faults.append(
                    {
                        "parameter": name,
                        "layer": item["layer"],
                        "problem": problem(
                            file,
                            (*where[item["layer"]], name),
                            f"release {version} has no parameter {name!r}" + suggest(name, release.parameters),
                            "a parameter of " + release.file + " (or of another release of the catalog, to stage it)",
                            describe(name),
                        ),
                    }
                )
                continue
            having = releases_having(fleet, name)
            staged_notes.append(
                {
                    "name": name,
                    "layer": item["layer"],
                    "releases": [entry["release"] for entry in having],
                    "text": f"{name} ({item['layer']} layer): not a parameter of release {version}, set aside"
                    + (" (release " + ", ".join(entry["release"] for entry in having) + " has it)" if having else ""),
                }
            )
        carried = [note for note in layered["notes"] if "value carried" in note]
        rows.append(
            {
                "terminal": terminal.get("id"),
                "customer": customer_doc.get("id"),
                "site": site_doc.get("id"),
                "model": model,
                "release": reg.desired_release(customer_doc, site_doc, terminal),
                "model_supported": supported,
                "problems": faults,
                "staged": staged_notes,
                "carried": carried,
                "breaks": bool(faults),
            }
        )
    problems = list(shared.values())
    reg._locate(problems)  # line numbers, from each file's YAML node tree (only files with problems)
    problems.sort(key=lambda p: (p.file, p.line or 0, p.path))
    return {
        "release": version,
        "customer": customer,
        "site": site,
        "terminals": rows,
        "problems": problems,
        "breaks": any(row["breaks"] for row in rows),
    }


def as_json(result):
    """RESULT of :func:`check_release` as plain data (Problems as dicts), with a summary."""
    terminals = []
    for row in result["terminals"]:
        terminals.append(
            dict(
                row,
                problems=[
                    dict(item["problem"].as_dict(), parameter=item["parameter"], layer=item["layer"])
                    for item in row["problems"]
                ],
            )
        )
    return {
        "release": result["release"],
        "customer": result["customer"],
        "site": result["site"],
        "breaks": result["breaks"],
        "summary": summary(result),
        "terminals": terminals,
        "problems": [problem.as_dict() for problem in result["problems"]],
    }


def summary(result):
    rows = result["terminals"]
    return {
        "terminals": len(rows),
        "breaking": sum(1 for row in rows if row["breaks"]),
        "unsupported_model": sum(1 for row in rows if not row["model_supported"]),
        "with_staged": sum(1 for row in rows if row["staged"]),
        "problems": len(result["problems"]),
    }
