"""``ipm-support runbooks``: the runbook catalog as a knowledge base.

ipm-support runbooks [--search WORD] [--json]   what each runbook does, when to use it, skill, risk
ipm-support runbooks show NAME [--json]         one runbook in full
"""

from __future__ import annotations

import json
import textwrap

from .runbooks import CatalogError, get_runbook, load_catalog


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "runbooks",
        help="the runbook catalog: what each runbook does, when to use it, what it needs, skill, risk",
        description="List the runbooks of playbooks/runbooks/ (the support knowledge base), or show one.",
        epilog="Exit codes: 0 done, 2 unknown runbook or a catalog problem. See docs/support.md.",
    )
    parser.add_argument("--search", metavar="WORD", help="only runbooks whose name, purpose or symptoms mention WORD")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--root", help="the runbook folder (default: playbooks/runbooks of this clone)")
    sub = parser.add_subparsers(dest="runbooks_command", metavar="show")
    show = sub.add_parser("show", help="one runbook in full", description="Show one runbook in full.")
    show.add_argument("name", metavar="NAME")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(handler=_show)
    parser.set_defaults(handler=_list)


def _error(error: CatalogError) -> int:
    import sys

    print(f"ipm-support: error: {error}", file=sys.stderr)
    return 2


def _list(args) -> int:
    try:
        catalog = load_catalog(args.root)
    except CatalogError as error:
        return _error(error)
    runbooks = [rb for rb in catalog.values() if not args.search or rb.matches(args.search)]
    if args.json:
        print(json.dumps([rb.as_dict() for rb in runbooks], indent=2))
        return 0
    if not runbooks:
        print(f"no runbook mentions {args.search!r} (ipm-support runbooks lists them all)")
        return 0
    print(f"{'RUNBOOK':<20} {'SKILL':<5} {'RISK':<6} {'CHANGES':<7} PURPOSE")
    for rb in runbooks:
        purpose = textwrap.shorten(rb.purpose, 80)
        print(f"{rb.name:<20} {rb.skill:<5} {rb.risk:<6} {'yes' if rb.changes_terminal else 'no':<7} {purpose}")
    return 0


def _show(args) -> int:
    try:
        runbook = get_runbook(args.name, getattr(args, "root", None))
    except CatalogError as error:
        return _error(error)
    if args.json:
        print(json.dumps(runbook.as_dict(), indent=2))
        return 0
    print(f"{runbook.name}: {runbook.purpose}")
    print(
        f"  skill {runbook.skill}, risk {runbook.risk}, maintenance {runbook.maintenance_type}, "
        f"changes the terminal: {'yes' if runbook.changes_terminal else 'no'}"
    )
    print("  when to use it:")
    for line in runbook.symptoms:
        print(f"    - {line}")
    print("  what it needs:")
    for line in runbook.prerequisites:
        print(f"    - {line}")
    print(f"  run: ipm-support run {runbook.name} --terminal T --ticket INC-n")
    print(f"  file: {runbook.path}")
    return 0
