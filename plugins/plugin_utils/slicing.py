# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Job slicing that respects the domain: whole sites per slice, rings in order (docs/scale.md).

AWX's own job slicing (``job_slice_count``) sorts the inventory's enabled hosts by name and gives
slice ``k`` of ``n`` every ``n``-th one (``hosts[k-1::n]``): it knows neither sites nor rings, so
the 25 terminals of a site land in every slice and one rollout job per slice runs every ring on
its own clock. This module makes the plan the fleet needs instead:

* every site is in exactly one slice (``slice_<k>_of_<n>``), so one job decides a site's window
  and its deliveries, and the slice's facts cache holds the whole site;
* slices are balanced by terminal count: sites largest first (ties by site id), each into the
  slice holding the fewest terminals so far (ties: the lowest number). Deterministic whatever
  the input order; the largest and smallest slice differ by at most the largest site;
* rings stay in order because the plan is a sequence of **ring stages** (canary, pilot, broad),
  each stage one job per slice with the limit ``slice_<k>_of_<n>:&ring_<ring>``; a workflow
  starts stage ``r+1`` only when every job of stage ``r`` succeeded (its gate included);
* a slice, or one slice of a stage, with no terminal (more slices than sites, a ``--limit``)
  is reported, with what to do: AWX fails a slice job whose limit matches no host.

Pure logic, no Ansible import: the filter ``ipm.fleet.slice_plan``, the inventory plugin's
``slices`` option and ``ipm-registry slices`` all call :func:`slice_plan` or :func:`assign_sites`.
"""

from __future__ import annotations

from collections.abc import Mapping

RINGS = ("canary", "pilot", "broad")
DEFAULT_RING = "broad"

# The keys a terminal may use: the inventory's host variables, or short names.
_KEYS = {
    "terminal": ("ipm_terminal_id", "terminal", "name", "inventory_hostname"),
    "site": ("ipm_site_id", "site"),
    "ring": ("ipm_ring", "ring"),
    "customer": ("ipm_customer_id", "customer"),
}


class SlicingError(ValueError):
    """A request the plan cannot be made for (bad number of slices, a terminal without a site ...)."""


def slice_name(number: int, count: int) -> str:
    """The inventory group of slice ``number`` of ``count``: ``slice_2_of_4``."""
    return "slice_%d_of_%d" % (number, count)


def check_count(slices, what="slices") -> int:
    """``slices`` as a whole number of 1 or more, else :class:`SlicingError` saying what was found."""
    if isinstance(slices, bool) or not isinstance(slices, int):
        if isinstance(slices, str) and slices.strip().isdigit():
            slices = int(slices.strip())
        else:
            raise SlicingError("%s: expected a whole number of 1 or more, found %r" % (what, slices))
    if slices < 1:
        raise SlicingError("%s: expected a whole number of 1 or more, found %d" % (what, slices))
    return slices


def _pick(item, field):
    for key in _KEYS[field]:
        value = item.get(key)
        if value not in (None, ""):
            return value
    return None


def normalize(terminals) -> list[dict]:
    """Terminals as ``{terminal, site, ring, customer}`` dicts, from a list of dicts or a name -> vars mapping.

    Accepts the inventory's host variables (``ipm_terminal_id``, ``ipm_site_id``, ``ipm_ring``,
    ``ipm_customer_id``) or the short keys; a missing ring is the registry's default (broad).
    """
    if isinstance(terminals, Mapping):
        items = [dict(variables or {}, inventory_hostname=name) for name, variables in terminals.items()]
    elif isinstance(terminals, (list, tuple)):
        items = list(terminals)
    else:
        raise SlicingError(
            "terminals: expected a list of terminals (dicts with ipm_terminal_id, ipm_site_id, ipm_ring) or a mapping "
            "host -> variables, found %s" % type(terminals).__name__
        )
    result = []
    seen: dict = {}
    site_customer: dict = {}
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise SlicingError("terminal #%d: expected a dict of host variables, found %r" % (index + 1, item))
        name = _pick(item, "terminal")
        site = _pick(item, "site")
        if name is None:
            raise SlicingError("terminal #%d: no ipm_terminal_id (or terminal, inventory_hostname)" % (index + 1))
        if site is None:
            raise SlicingError(
                "terminal %s: no ipm_site_id (or site): every terminal needs its site to be sliced" % name
            )
        ring = _pick(item, "ring") or DEFAULT_RING
        if ring not in RINGS:
            raise SlicingError("terminal %s: ring must be one of %s, found %r" % (name, ", ".join(RINGS), ring))
        customer = _pick(item, "customer")
        name, site = str(name), str(site)
        if name in seen:
            raise SlicingError("terminal %s: listed twice (sites %s and %s)" % (name, seen[name], site))
        seen[name] = site
        known = site_customer.setdefault(site, customer)
        if known != customer:
            raise SlicingError(
                "site %s: its terminals name two customers (%s and %s); a site belongs to one customer"
                % (site, known, customer)
            )
        result.append({"terminal": name, "site": site, "ring": ring, "customer": customer})
    return result


def assign_sites(site_sizes: Mapping, slices: int) -> dict:
    """Site -> slice number (1-based): largest site first (ties by id), each into the least loaded slice.

    Classic largest-first (LPT) packing: the largest and the smallest slice differ by at most the
    largest site, and the largest slice is at most 4/3 of the best possible one.
    """
    slices = check_count(slices)
    loads = [0] * slices
    assignment = {}
    for site in sorted(site_sizes, key=lambda s: (-site_sizes[s], s)):
        target = min(range(slices), key=lambda k: (loads[k], k))
        assignment[site] = target + 1
        loads[target] += site_sizes[site]
    return assignment


def slice_plan(terminals, slices, limit=None, ring=None) -> dict:
    """The slicing plan of ``terminals`` into ``slices`` slices (see the module's documentation).

    ``limit``: the terminals the run is limited to (a list of names); the slices are still made from
    the whole fleet (so ``slice_<k>_of_<n>`` does not move when the limit changes, as AWX slices the
    inventory before applying a job's limit) and the slices and stages the limit leaves empty are
    reported. ``ring``: only that ring's stage in ``stages``.

    Returns ``{slices, terminals, sites, fair_share, largest_site, spread, assignment, slice_list,
    stages, empty, oversized, messages}``; ``slice_list[k-1]`` is slice ``k``: ``{slice, name, sites,
    terminals, by_ring, hosts, limited}``; each stage ``{ring, jobs: [{slice, name, limit, terminals,
    hosts}], empty}``.
    """
    count = check_count(slices)
    if ring is not None and ring not in RINGS:
        raise SlicingError("ring must be one of %s, found %r" % (", ".join(RINGS), ring))
    rows = normalize(terminals)
    wanted = None
    if limit is not None:
        if isinstance(limit, str):
            limit = [part for part in limit.replace(",", ":").split(":") if part]
        if not isinstance(limit, (list, tuple, set, frozenset)):
            raise SlicingError("limit: expected a list of terminal names, found %s" % type(limit).__name__)
        wanted = {str(name) for name in limit}
        unknown = sorted(wanted - {row["terminal"] for row in rows})
        if unknown:
            shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise SlicingError("limit: %d terminal(s) not in the fleet: %s" % (len(unknown), shown))

    sizes: dict = {}
    for row in rows:
        sizes[row["site"]] = sizes.get(row["site"], 0) + 1
    assignment = assign_sites(sizes, count)

    slice_list = [
        {
            "slice": k,
            "name": slice_name(k, count),
            "sites": [],
            "terminals": 0,
            "by_ring": dict.fromkeys(RINGS, 0),
            "hosts": [],
            "limited": 0,
        }
        for k in range(1, count + 1)
    ]
    stage_hosts = {r: [[] for _slot in range(count)] for r in RINGS}
    for site in sorted(assignment):
        slice_list[assignment[site] - 1]["sites"].append(site)
    for row in sorted(rows, key=lambda r: r["terminal"]):
        entry = slice_list[assignment[row["site"]] - 1]
        entry["terminals"] += 1
        entry["by_ring"][row["ring"]] += 1
        entry["hosts"].append(row["terminal"])
        if wanted is None or row["terminal"] in wanted:
            entry["limited"] += 1
            stage_hosts[row["ring"]][entry["slice"] - 1].append(row["terminal"])

    total = len(rows)
    fair = total / count
    largest = max(sizes.values(), default=0)
    loads = [entry["terminals"] for entry in slice_list]
    messages = []
    empty = [entry["slice"] for entry in slice_list if entry["terminals"] == 0]
    if empty:
        messages.append(
            "%d slice(s) get no terminal (%s): %d site(s) cannot fill %d slices, a site is never split; "
            "use %d slices or fewer" % (len(empty), _names(empty, count), len(sizes), count, max(len(sizes), 1))
        )
    oversized = sorted((s for s, n in sizes.items() if n > fair and count > 1), key=lambda s: (-sizes[s], s))
    if oversized:
        shown = ", ".join(
            "%s (%d, in %s)" % (site, sizes[site], slice_name(assignment[site], count)) for site in oversized[:3]
        )
        messages.append(
            "%d site(s) have more terminals than a fair share (%.1f = %d terminals / %d slices): %s%s; each stays "
            "whole, so its slice cannot be smaller than the site"
            % (len(oversized), fair, total, count, shown, " ..." if len(oversized) > 3 else "")
        )
    limited_empty = []
    if wanted is not None:
        limited_empty = [e["slice"] for e in slice_list if e["terminals"] and not e["limited"]]
        if limited_empty:
            messages.append(
                "the limit leaves %s without a terminal: AWX fails a slice job whose limit matches no host; "
                "leave those slices out of the workflow for this run" % _names(limited_empty, count)
            )

    stages = []
    for name in RINGS if ring is None else (ring,):
        jobs = []
        stage_empty = []
        for k in range(1, count + 1):
            hosts = stage_hosts[name][k - 1]
            if not hosts:
                stage_empty.append(k)
                continue
            jobs.append(
                {
                    "slice": k,
                    "name": slice_name(k, count),
                    "limit": "%s:&ring_%s" % (slice_name(k, count), name),
                    "terminals": len(hosts),
                    "hosts": hosts,
                }
            )
        stages.append({"ring": name, "jobs": jobs, "empty": stage_empty})
        if stage_empty and jobs:
            messages.append(
                "ring %s: %s hold no %s terminal%s: the workflow runs no job for them in that stage"
                % (name, _names(stage_empty, count), name, " within the limit" if wanted is not None else "")
            )

    return {
        "slices": count,
        "terminals": total,
        "sites": len(sizes),
        "fair_share": round(fair, 1),
        "largest_site": largest,
        "spread": (max(loads) - min(loads)) if loads else 0,
        "assignment": {site: assignment[site] for site in sorted(assignment)},
        "slice_list": slice_list,
        "stages": stages,
        "empty": empty,
        "limit_empty": limited_empty,
        "oversized": oversized,
        "messages": messages,
    }


def _names(numbers, count) -> str:
    return ", ".join(slice_name(k, count) for k in numbers)


def inventory_slice_groups(hosts, slices) -> tuple[dict, list, list]:
    """Groups ``slice_<k>_of_<n>`` for the inventory plugin's plan hosts (``[name, vars, [site group, ...]]``).

    Returns ``(groups, children, messages)``: the slice groups with their variables (``ipm_slice``,
    ``ipm_slice_count``), ``[slice group, site group]`` pairs (a slice holds whole site groups)
    and the plan's messages (empty slices, sites above a fair share).
    """
    count = check_count(slices, "option slices")
    sizes: dict = {}
    site_group: dict = {}
    for _name, variables, groups in hosts:
        site = variables["ipm_site_id"]
        sizes[site] = sizes.get(site, 0) + 1
        site_group[site] = groups[0]
    assignment = assign_sites(sizes, count)
    groups = {slice_name(k, count): {"ipm_slice": k, "ipm_slice_count": count} for k in range(1, count + 1)}
    children = [[slice_name(assignment[site], count), site_group[site]] for site in sorted(assignment)]
    used = set(assignment.values())
    messages = []
    empty = [k for k in range(1, count + 1) if k not in used]
    if empty:
        messages.append(
            "option slices: %d slice(s) get no terminal (%s): %d site(s) cannot fill %d slices; "
            "set slices to %d or fewer" % (len(empty), _names(empty, count), len(sizes), count, max(len(sizes), 1))
        )
    return groups, children, messages
