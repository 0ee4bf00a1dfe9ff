"""ipm-registry: validate the fleet registry, list its terminals, show one terminal as playbooks see it.

    ipm-registry validate [PATH]          every problem (file:line: key path: ...), exit 1; else a summary
    ipm-registry validate --release X [--customer C] [--site S] [PATH]
                                          what breaks if those terminals move to release X, terminal by
                                          terminal (models, parameter problems, staged notes), exit 1 if any
    ipm-registry list [-r PATH]           one line per terminal
    ipm-registry show TERMINAL [-r PATH]  its variables, its site and customer, its effective parameters
    ipm-registry addresses [--customer C] [--json] [--assign] [-r PATH]
                                          the VPN address plan: prefixes, each terminal's address, free and
                                          held addresses; --assign records what is missing (vpn-plan.yml)
    ipm-registry slices [PATH] --slices N [--ring R] [--limit T,...] [--json]
                                          the job slicing plan for AWX: whole sites per slice, ring stages
                                          in order, empty slices and oversized sites (docs/scale.md)
    ipm-registry swap TERMINAL --serial NEW --ticket T [-r PATH]
                                          replacement hardware: the serial number changes, the swap is recorded

PATH is a registry directory (holding catalog.yml), or an inventory directory or ``*.ipm_registry.yml``
file that names one; the default is $IPM_REGISTRY, else ``inventories/demo``. ``--format json`` gives
machine-readable output. The rules are the collection's ``plugins/plugin_utils/registry.py``, the same
the ``ipm.fleet.registry`` inventory plugin applies. See docs/registry.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ansible_collections.ipm.fleet.plugins.module_utils.secret_values import is_secret_parameter, mask
from ansible_collections.ipm.fleet.plugins.plugin_utils import registry as reg
from ansible_collections.ipm.fleet.plugins.plugin_utils import registry_candidate, vpn_plan
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_check import display_path, format_report, suggest
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_inventory import inventory_plan_for
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_spec import DEFAULTS
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_spec import RINGS as DEFAULT_RINGS
from ipm_tools import closed_output

DEFAULT_PATH = "inventories/demo"


def _load(args):
    path = args.path if args.command == "validate" else args.registry
    return reg.load_fleet(path, args.workers)


def _summary(fleet):
    customers = len(fleet.customers)
    sites = sum(len(document["sites"]) for document in fleet.customers)
    statuses: dict[str, int] = {}
    for _, _, terminal in fleet.terminals():
        status = terminal.get("status") or DEFAULTS["status"]
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "registry": display_path(fleet.registry_dir),
        "customers": customers,
        "sites": sites,
        "terminals": sum(statuses.values()),
        "terminals_by_status": dict(sorted(statuses.items())),
        "models": sorted(fleet.models),
        "releases": sorted(fleet.releases),
    }


def _fail_invalid(problems, output_format):
    if output_format == "json":
        print(json.dumps({"valid": False, "problems": [p.as_dict() for p in problems]}, indent=2))
    else:
        print(format_report(problems), file=sys.stderr)
    return 1


def cmd_validate(args):
    if args.release is None and (args.customer or args.site):
        print(
            "ipm-registry: error: --customer and --site choose the terminals of --release X; add --release",
            file=sys.stderr,
        )
        return 2
    fleet, problems = _load(args)
    if problems:
        if args.release is not None and args.format == "text":
            print(
                f"the registry has problems as it is: fix them, then check the move to {args.release}",
                file=sys.stderr,
            )
        return _fail_invalid(problems, args.format)
    if args.release is not None:
        return _validate_candidate(fleet, args)
    summary = _summary(fleet)
    if args.format == "json":
        print(json.dumps({"valid": True, "problems": [], "summary": summary}, indent=2))
    else:
        by_status = ", ".join(f"{count} {status}" for status, count in summary["terminals_by_status"].items())
        print(
            f"{summary['registry']}: valid: {summary['customers']} customers, {summary['sites']} sites, "
            f"{summary['terminals']} terminals ({by_status}), models {', '.join(summary['models'])}, "
            f"releases {', '.join(summary['releases'])}"
        )
    return 0


def _validate_candidate(fleet, args):
    """``validate --release X``: what breaks if the chosen terminals move to X (exit 1 when anything does)."""
    try:
        result = registry_candidate.check_release(fleet, args.release, args.customer, args.site)
    except registry_candidate.CandidateError as error:
        print(f"ipm-registry: error: {error}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(registry_candidate.as_json(result), indent=2, ensure_ascii=False))
        return 1 if result["breaks"] else 0
    summary = registry_candidate.summary(result)
    chosen = " of " + ", ".join(
        f"{what} {value}" for what, value in (("customer", args.customer), ("site", args.site)) if value
    )
    chosen = chosen if args.customer or args.site else " of the fleet"
    print(
        f"release {args.release} for {summary['terminals']} maintained terminal(s){chosen}: "
        f"{summary['breaking']} would break, {summary['terminals'] - summary['breaking']} would not"
    )
    for row in result["terminals"]:
        verdict = "BREAKS" if row["breaks"] else "ok"
        print(
            f"  {row['terminal']} (customer {row['customer']}, site {row['site']}, model {row['model']}, "
            f"now {row['release']}): {verdict}"
        )
        for item in row["problems"]:
            print(f"    {item['problem']}")
        for line in row["carried"]:
            print(f"    carried: {line}")
        for note in row["staged"]:
            print(f"    staged: {note['text']}")
    return 1 if result["breaks"] else 0


def _row(customer, site, terminal):
    return {
        "terminal": terminal["id"],
        "customer": customer["id"],
        "site": site["id"],
        "model": terminal["model"],
        "release": reg.desired_release(customer, site, terminal),
        "ring": terminal.get("ring") or DEFAULTS["ring"],
        "status": terminal.get("status") or DEFAULTS["status"],
        "address": terminal["address"],
        "timezone": site["timezone"],
    }


def cmd_list(args):
    fleet, problems = _load(args)
    if problems:
        return _fail_invalid(problems, args.format)
    rows = [_row(c, s, t) for c, s, t in fleet.terminals()]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no terminals")
        return 0
    columns = list(rows[0])
    widths = {col: max(len(col), *(len(str(row[col])) for row in rows)) for col in columns}
    print("  ".join(col.upper().ljust(widths[col]) for col in columns).rstrip())
    for row in rows:
        print("  ".join(str(row[col]).ljust(widths[col]) for col in columns).rstrip())
    return 0


def _is_secret(name, release):
    return is_secret_parameter(name, release.parameters.get(name) if release else None)


def _redacted(parameters, release):
    return {
        name: (dict(item, value=mask(item["value"])) if _is_secret(name, release) else item)
        for name, item in parameters.items()
    }


def cmd_show(args):
    fleet, problems = _load(args)
    if problems:
        return _fail_invalid(problems, args.format)
    found = fleet.find_terminal(args.terminal)
    if found is None:
        known = [t["id"] for _, _, t in fleet.terminals()]
        hint = suggest(args.terminal, known)
        print(
            f"ipm-registry: error: no terminal {args.terminal!r} in {display_path(fleet.registry_dir)}{hint}; `ipm-registry list` shows them",
            file=sys.stderr,
        )
        return 2
    customer, site, terminal = found
    plan = inventory_plan_for(fleet, customer, site, terminal)
    release = fleet.releases.get(plan["host_vars"]["ipm_release"])
    parameters = _redacted(reg.layered_parameters(release, customer, site, terminal, with_sources=True), release)
    for values, key in (
        (plan["host_vars"], "ipm_parameters"),
        (plan["site_vars"], "ipm_site_parameters"),
        (plan["customer_vars"], "ipm_customer_parameters"),
    ):
        values[key] = {
            name: (mask(value) if _is_secret(name, release) else value) for name, value in values[key].items()
        }
    document = {
        "terminal": args.terminal,
        "host_vars": plan["host_vars"],
        "groups": plan["groups"],
        "site_vars": plan["site_vars"],
        "customer_vars": plan["customer_vars"],
        "effective_parameters": parameters,
    }
    if args.format == "json":
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return 0
    print(f"terminal {args.terminal}  (site {site['id']}, customer {customer['id']})")
    print("groups: " + ", ".join(plan["groups"]))
    for title, values in (
        ("host variables", plan["host_vars"]),
        ("site group", plan["site_vars"]),
        ("customer group", plan["customer_vars"]),
    ):
        print(f"\n{title}:")
        for key, value in values.items():
            print(f"  {key}: {json.dumps(value, ensure_ascii=False)}")
    print("\neffective parameters (release defaults < customer < site < terminal):")
    width = max((len(name) for name in parameters), default=0)
    for name, item in sorted(parameters.items()):
        print(f"  {name.ljust(width)}  {json.dumps(item['value'], ensure_ascii=False):<28} from {item['source']}")
    return 0


EXIT_INCOMPLETE = 3  # ipm-registry addresses: terminals without an address, or plan entries to retire


def _assignment_blockers(fleet, problems):
    """The problems ``--assign`` cannot fix (it fixes stale addresses: moved terminals, renumbered sites)."""
    fixable = {id(problem) for problem in (fleet.vpn.stale_problems if fleet.vpn is not None else [])}
    return [problem for problem in problems if id(problem) not in fixable]


def _describe_change(change) -> str:
    action = change["action"]
    if action == "assigned":
        return (
            f"assigned {change['terminal']} {change['address']} (site {change['site']}, customer {change['customer']})"
        )
    if action == "retired":
        return f"retired {change['terminal']}: {change['address']} held until {change['held_until']}"
    if action == "held":
        return f"re-addressing {change['terminal']} (moved or renumbered): {change['address']} held until {change['held_until']}"
    if action == "released":
        return f"released {change['address']} (hold of {change['terminal']} over)"
    if action == "customer_prefix":
        return f"customer {change['customer']}: prefix {change['prefix']}"
    return f"site {change['site']} (customer {change['customer']}): prefix {change['prefix']}"


def cmd_addresses(args):
    fleet, problems = _load(args)
    if fleet.vpn is None and not problems:
        print(
            f"ipm-registry: error: {display_path(fleet.registry_dir)}/catalog.yml has no vpn: section (supernet, "
            "support_prefix, ...): add one to plan VPN addresses (docs/registry.md, The VPN address plan)",
            file=sys.stderr,
        )
        return 2
    blockers = _assignment_blockers(fleet, problems) if args.assign else problems
    if blockers:
        if args.assign and args.format == "text":
            print("the registry or its VPN plan has problems: fix them, then assign", file=sys.stderr)
        return _fail_invalid(blockers, args.format)
    if args.customer is not None and args.customer not in {d["customer"]["id"] for d in fleet.customers}:
        known = [d["customer"]["id"] for d in fleet.customers]
        print(
            f"ipm-registry: error: no customer {args.customer!r} in {display_path(fleet.registry_dir)}"
            f"{suggest(args.customer, known)}; customers: {', '.join(known)}",
            file=sys.stderr,
        )
        return 2
    changes = []
    if args.assign:
        layout = fleet.vpn
        new, changes, failures = vpn_plan.assign(layout.settings, vpn_plan.fleet_view(fleet), layout.plan)
        if failures:
            return _fail_invalid(failures, args.format)
        if changes:
            vpn_plan.write_plan(vpn_plan.plan_path(fleet.registry_dir), new)
            fleet, problems = _load(args)
            if problems:  # cannot happen for a plan assign() made; say so rather than print a wrong plan
                return _fail_invalid(problems, args.format)
    document = vpn_plan.report(fleet.vpn, vpn_plan.fleet_view(fleet), args.customer)
    document["registry"] = display_path(fleet.registry_dir)
    if args.assign:
        document["assigned"] = changes
    if args.format == "json":
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return 0 if document["complete"] else EXIT_INCOMPLETE
    if args.assign:
        for change in changes:
            print(_describe_change(change))
        print(
            f"wrote {document['plan_file']} ({len(changes)} change(s)): commit it with the registry"
            if changes
            else f"nothing to assign: {document['plan_file']} is up to date"
        )
        print()
    _print_plan(document)
    return 0 if document["complete"] else EXIT_INCOMPLETE


def _print_plan(document):
    settings = document["settings"]
    print(
        f"VPN plan of {document['registry']} ({document['plan_file']}): supernet {settings['supernet']}, "
        f"support prefix {settings['support_prefix']}, hub {settings['hub_address'] or '-'}"
    )
    for customer in document["customers"]:
        source = {"declared": "customer.vpn_prefix", "recorded": "recorded in the plan"}.get(customer["source"], "")
        print(f"customer {customer['customer']}  {customer['prefix'] or 'no prefix yet'}  ({source or 'unassigned'})")
        for site in customer["sites"]:
            source = {"declared": "network.vpn_subnet", "recorded": "recorded in the plan"}.get(site["source"], "")
            print(
                f"  site {site['site']}  {site['prefix'] or 'no prefix yet'}  ({source or 'unassigned'}): "
                f"{len(site['terminals'])} terminal(s), {site['free']} of {site['capacity']} address(es) free"
            )
            width = max((len(row["terminal"]) for row in site["terminals"]), default=0)
            for row in site["terminals"]:
                if row["state"] == "assigned":
                    where = row["address"]
                elif row["state"] == "stale":
                    where = f"{row['address']}  stale: outside the site's prefix (moved or renumbered)"
                else:
                    where = "unassigned"
                print(f"    {row['terminal'].ljust(width)}  {where}")
    if document["held"]:
        print("held addresses (given to no one before the hold ends):")
        for entry in document["held"]:
            print(
                f"  {entry['address']}  {entry['terminal']} (site {entry['site']}), retired {entry['retired_at']}, "
                f"held until {entry['held_until']}"
            )
    if document["leaving"]:
        print("in the plan but no longer maintained (--assign retires them): " + ", ".join(document["leaving"]))
    if document["unassigned"]:
        print(
            f"{len(document['unassigned'])} terminal(s) unassigned: {', '.join(document['unassigned'])}; "
            "run: ipm-registry addresses --assign"
        )
    elif not document["leaving"]:
        print("every maintained terminal has its address")


def _workers(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"expected a number of processes, 0 (automatic) or more (from --workers or $IPM_REGISTRY_WORKERS); found {text!r}"
        )
    return value


def cmd_swap(args):
    """Replacement hardware (plugins/plugin_utils/hardware_swap.py): the serial changes, the swap is recorded."""
    from ansible_collections.ipm.fleet.plugins.plugin_utils import hardware_swap
    from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_context import resolve_operator

    try:
        record = hardware_swap.swap(
            args.registry, args.terminal, args.serial, args.ticket, args.operator or resolve_operator({})[0]
        )
    except hardware_swap.SwapError as exc:
        print(f"ipm-registry: error: {exc}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps(record, indent=2, sort_keys=True))
    else:
        print(
            f"{record['terminal']}: serial number {record['old_serial_number']} -> {record['new_serial_number']} "
            f"in {record['file']}, recorded in {hardware_swap.SWAPS_FILE} (ticket {record['ticket']})"
        )
    return 0


def cmd_slices(args):
    """The slicing plan (plugins/plugin_utils/slicing.py) of the maintained terminals, as the inventory's groups."""
    from ansible_collections.ipm.fleet.plugins.plugin_utils import slicing

    fleet, problems = _load(args)
    if problems:
        return _fail_invalid(problems, args.format)
    terminals = [
        {"terminal": t["id"], "site": s["id"], "ring": t.get("ring") or DEFAULTS["ring"], "customer": c["id"]}
        for c, s, t in fleet.terminals()
        if t.get("status") != "retired"
    ]
    limit = [name for name in args.limit.split(",") if name] if args.limit is not None else None
    try:
        plan = slicing.slice_plan(terminals, args.slices, limit=limit, ring=args.ring)
    except slicing.SlicingError as error:
        print(f"ipm-registry: error: {error}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(plan, indent=2, ensure_ascii=False))
        return 0
    print(
        f"{plan['slices']} slice(s) of {plan['terminals']} maintained terminal(s) in {plan['sites']} site(s) of "
        f"{display_path(fleet.registry_dir)}: fair share {plan['fair_share']}, largest site {plan['largest_site']}, "
        f"spread {plan['spread']}"
    )
    width = max(len(entry["name"]) for entry in plan["slice_list"])
    for entry in plan["slice_list"]:
        rings = ", ".join(f"{ring} {n}" for ring, n in entry["by_ring"].items())
        within = f", {entry['limited']} within the limit" if limit is not None else ""
        sites = ", ".join(entry["sites"][:6]) + (
            f" ... ({len(entry['sites'])} sites)" if len(entry["sites"]) > 6 else ""
        )
        print(
            f"  {entry['name'].ljust(width)}  {entry['terminals']} terminal(s) ({rings}{within})  sites: {sites or '-'}"
        )
    print("ring stages, in order (one AWX job per limit; the next stage starts when every job of this one succeeded):")
    for stage in plan["stages"]:
        jobs = ", ".join(f"{job['limit']} ({job['terminals']})" for job in stage["jobs"])
        print(f"  {stage['ring']}: {jobs or 'no terminal: no job'}")
    for message in plan["messages"]:
        print(f"note: {message}")
    return 0


def _slices(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of slices, 1 or more; found {text!r}")
    return value


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--format", choices=["text", "json"], default="text", help="output format (default text)")
    common.add_argument(
        "--workers",
        type=_workers,
        default=os.environ.get("IPM_REGISTRY_WORKERS", "0"),  # a string default goes through type= too
        metavar="N",
        help="processes reading the customer files: 0 (default, $IPM_REGISTRY_WORKERS) one per CPU for "
        "registries of 4 MiB or more, 1 none besides this one",
    )
    registry_default = os.environ.get("IPM_REGISTRY", DEFAULT_PATH)

    parser = argparse.ArgumentParser(
        prog="ipm-registry",
        description="Validate and query the ipm.fleet registry (customers, sites, terminals).",
        epilog="Exit status: 0 valid/ok, 1 the registry has problems, 2 usage error or unknown terminal, "
        f"{EXIT_INCOMPLETE} (addresses) terminals without a VPN address.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = sub.add_parser(
        "validate", parents=[common], help="report every problem of the registry (exit 1), or a summary"
    )
    validate.add_argument(
        "path", nargs="?", default=registry_default, help=f"registry or inventory path (default {registry_default})"
    )
    validate.add_argument(
        "--release",
        metavar="X.Y.Z",
        help="check instead what breaks if the terminals move to this release of the catalog: model support and "
        "every layer's parameters, terminal by terminal (exit 1 when anything breaks)",
    )
    validate.add_argument("--customer", metavar="ID", help="with --release: only this customer's terminals")
    validate.add_argument("--site", metavar="ID", help="with --release: only this site's terminals")
    validate.set_defaults(handler=cmd_validate)

    listing = sub.add_parser("list", parents=[common], help="list the terminals")
    listing.add_argument(
        "-r", "--registry", default=registry_default, help=f"registry or inventory path (default {registry_default})"
    )
    listing.set_defaults(handler=cmd_list)

    show = sub.add_parser("show", parents=[common], help="one terminal: variables, groups, effective parameters")
    show.add_argument("terminal", help="terminal id (inventory host name)")
    show.add_argument(
        "-r", "--registry", default=registry_default, help=f"registry or inventory path (default {registry_default})"
    )
    show.set_defaults(handler=cmd_show)

    swap = sub.add_parser("swap", parents=[common], help="replacement hardware: new serial number, swap recorded")
    swap.add_argument("terminal", help="terminal id (inventory host name)")
    swap.add_argument("--serial", required=True, help="the new box's serial number")
    swap.add_argument("--ticket", required=True, help="ticket or change id of the swap")
    swap.add_argument("--operator", help="who swapped it (default: $IPM_OPERATOR, else the OS user)")
    swap.add_argument(
        "-r", "--registry", default=registry_default, help=f"registry or inventory path (default {registry_default})"
    )
    swap.set_defaults(handler=cmd_swap)

    addresses = sub.add_parser(
        "addresses",
        parents=[common],
        help="the VPN address plan: prefixes, addresses, free and held ones (--assign records missing ones)",
        description="Print the VPN address plan (catalog vpn:, customer.vpn_prefix, sites' network.vpn_subnet and "
        "the plan file vpn-plan.yml beside the registry). Exit 0 when every maintained terminal has its address, "
        f"{EXIT_INCOMPLETE} when some have none (unassigned) or the plan holds terminals to retire, 1 for problems.",
    )
    addresses.add_argument("--customer", metavar="ID", help="only this customer's prefixes and terminals")
    addresses.add_argument("--json", dest="format", action="store_const", const="json", help="same as --format json")
    addresses.add_argument(
        "--assign",
        action="store_true",
        help="record what the plan lacks for the whole fleet (customer and site prefixes, terminal addresses; "
        "retire terminals that left, holding their address; re-address moved ones), written atomically, then print it",
    )
    addresses.add_argument(
        "-r", "--registry", default=registry_default, help=f"registry or inventory path (default {registry_default})"
    )
    addresses.set_defaults(handler=cmd_addresses)

    slices = sub.add_parser(
        "slices",
        parents=[common],
        help="the job slicing plan for AWX: whole sites per slice, ring stages in order",
        description="Print the slicing plan the ipm.fleet.registry inventory's slices option makes (groups "
        "slice_<k>_of_<n>): every site in exactly one slice, slices balanced by terminal count (largest site first), "
        "and the ring stages (canary, pilot, broad) with one AWX job limit per slice. See docs/scale.md.",
    )
    slices.add_argument(
        "registry", nargs="?", default=registry_default, help=f"registry or inventory path (default {registry_default})"
    )
    slices.add_argument("--slices", type=_slices, required=True, metavar="N", help="number of slices (1 or more)")
    slices.add_argument("--ring", choices=list(DEFAULT_RINGS), help="only this ring's stage")
    slices.add_argument(
        "--limit",
        metavar="T1,T2",
        help="terminals of the run (comma-separated ids): report the slices and stages it leaves empty",
    )
    slices.add_argument("--json", dest="format", action="store_const", const="json", help="same as --format json")
    slices.set_defaults(handler=cmd_slices)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except BrokenPipeError:
        return closed_output()
    except OSError as exc:
        print(f"ipm-registry: error: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
