"""ipm-config: configuration history of the fleet (snapshots), what changed, drift from the registry,
where each of a terminal's parameters comes from (params), and patch compliance (patches).

Snapshots are written by `ansible-playbook playbooks/snapshot.yml`; this tool reads them. `params`
reads the registry only: every effective value with the layer that set it, what is staged for a
later release, and with --release what the terminal would run after an upgrade.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from ansible_collections.ipm.fleet.plugins.module_utils import parameter_layers
from ansible_collections.ipm.fleet.plugins.plugin_utils import patch_compliance
from ansible_collections.ipm.fleet.plugins.plugin_utils.config_history import (
    HistoryError,
    changes_between,
    drift,
    list_snapshots,
    parse_when,
    read_snapshot,
    snapshot_as_of,
    terminals,
)
from ansible_collections.ipm.fleet.plugins.plugin_utils.parameter_provenance import (
    ProvenanceError,
    terminal_provenance,
)
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry import load_fleet
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_check import display_path
from ipm_tools import PROJECT_ROOT, closed_output

DEFAULT_STORE = os.environ.get("IPM_HISTORY_STORE", str(PROJECT_ROOT / "build" / "history"))
DEFAULT_INVENTORY = str(PROJECT_ROOT / "inventories" / "demo")


class UsageError(Exception):
    """A user mistake: printed as one line, exit code 2."""


def _inventory(path):
    """Terminals of an inventory with their merged variables (host, site and customer), via ansible-inventory."""
    command = [str(Path(sys.executable).parent / "ansible-inventory"), "-i", path, "--list"]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, ANSIBLE_CONFIG=str(PROJECT_ROOT / "ansible.cfg")),
    )
    if result.returncode != 0:
        raise UsageError(
            "inventory %s could not be read: %s"
            % (path, result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "ansible-inventory failed")
        )
    data = json.loads(result.stdout)
    return data.get("_meta", {}).get("hostvars", {})


def _select(hostvars, args):
    chosen = {}
    for host, variables in sorted(hostvars.items()):
        if args.terminal and host not in args.terminal:
            continue
        if args.customer and variables.get("ipm_customer_id") != args.customer:
            continue
        if args.site and variables.get("ipm_site_id") != args.site:
            continue
        chosen[host] = variables
    if (args.terminal or args.customer or args.site) and not chosen:
        raise UsageError(
            "no terminal matches %s"
            % ", ".join(
                "%s=%s" % (k, v)
                for k, v in (("terminal", args.terminal), ("customer", args.customer), ("site", args.site))
                if v
            )
        )
    return chosen


def _releases(inventory):
    """The catalog's releases of the registry behind INVENTORY ({} for an inventory that is not a registry's).

    Problems of the registry are not repeated here: reading the inventory already reported them.
    """
    try:
        fleet, _problems = load_fleet(inventory)
    except (OSError, ValueError):
        return {}
    return fleet.releases


def _desired(variables, releases=None, running=None):
    """Desired state of one terminal from its registry variables, parameters layered against its release.

    The layering is the fleet's one rule (module_utils/parameter_layers.py): customer < site <
    terminal, values the release (the one it runs, else the desired one) does not know set aside
    as notes. Without the release's
    definition the layers are merged as they are.
    """
    layers = [
        variables.get(layer) or {} for layer in ("ipm_customer_parameters", "ipm_site_parameters", "ipm_parameters")
    ]
    # Parameters are compared under the release the terminal runs (RUNNING, from its snapshot) when
    # the catalog knows it: values for a release it does not run yet are staged, not drift; the
    # release itself is compared with the desired one.
    release = (releases or {}).get(running) or (releases or {}).get(variables.get("ipm_release"))
    if release is not None:
        layered = parameter_layers.layer_parameters(release.definition, *layers)
        parameters, notes = layered["registry_values"], layered["notes"]
    else:
        parameters, notes = {}, []
        for values in layers:
            parameters.update(values)
    return {
        "release": variables.get("ipm_release"),
        "parameters": parameters,
        "notes": notes,
        "os": variables.get("ipm_os_baseline", "debian-12"),
    }


def _print(payload, as_json, text):
    if as_json:
        json.dump(payload, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
    else:
        text()


def cmd_history(args):
    rows = []
    for taken_at, path in list_snapshots(args.store, args.terminal_id):
        record = read_snapshot(path)
        application = record["facts"].get("application") or {}
        rows.append(
            {
                "taken_at": taken_at.isoformat(),
                "release": application.get("current"),
                "path": path,
                "context": record.get("context", {}),
            }
        )
    if not rows:
        raise UsageError(
            "terminal %s has no snapshot in %s: run playbooks/snapshot.yml first" % (args.terminal_id, args.store)
        )

    def text():
        for row in rows:
            change = row["context"].get("change", "")
            print("%s  release %-8s %s" % (row["taken_at"], row["release"] or "-", change))

    _print(rows, args.json, text)


def cmd_diff(args):
    changes = changes_between(args.store, args.terminal_id, args.start, args.end)

    def text():
        if not changes:
            print("%s: no change between %s and %s" % (args.terminal_id, args.start, args.end))
        for change in changes:
            print(
                "%-8s %s: %s -> %s"
                % (
                    change["change"],
                    change["path"],
                    json.dumps(change["before"], default=str),
                    json.dumps(change["after"], default=str),
                )
            )

    _print(changes, args.json, text)


def cmd_show(args):
    when = parse_when(args.date)
    hostvars = _select(_inventory(args.inventory), args) if (args.customer or args.site) else None
    names = sorted(hostvars) if hostvars is not None else (args.terminal or terminals(args.store))
    configuration = {}
    for name in names:
        snapshot = snapshot_as_of(args.store, name, when)
        configuration[name] = snapshot
    if not any(configuration.values()):
        raise UsageError("no snapshot at or before %s in %s" % (when.isoformat(), args.store))

    def text():
        for name, snapshot in configuration.items():
            if snapshot is None:
                print("%-20s no snapshot at or before %s" % (name, when.isoformat()))
                continue
            facts = snapshot["facts"]
            application = facts.get("application") or {}
            hardware = facts.get("hardware") or {}
            parameters = facts.get("parameters") or {}
            print(
                "%-20s %-7s %-14s release %-7s parameters %s  (snapshot %s)"
                % (
                    name,
                    hardware.get("model"),
                    hardware.get("serial_number"),
                    application.get("current"),
                    (parameters.get("sha256") or "-")[:12],
                    snapshot["taken_at"],
                )
            )

    _print(configuration, args.json, text)


def cmd_drift(args):
    hostvars = _select(_inventory(args.inventory), args)
    releases = _releases(args.inventory)
    report = {}
    for host, variables in hostvars.items():
        existing = list_snapshots(args.store, host)
        snapshot = read_snapshot(existing[-1][1]) if existing else None
        running = ((snapshot or {}).get("facts", {}).get("application") or {}).get("current") if snapshot else None
        desired = _desired(variables, releases, running)
        if not existing:
            report[host] = {
                "customer": variables.get("ipm_customer_id"),
                "site": variables.get("ipm_site_id"),
                "snapshot": None,
                "differences": None,
                "notes": desired["notes"],
            }
            continue
        report[host] = {
            "customer": variables.get("ipm_customer_id"),
            "site": variables.get("ipm_site_id"),
            "snapshot": snapshot["taken_at"],
            "differences": drift(desired, snapshot["facts"]),
            "notes": desired["notes"],
        }
    summary = {
        "terminals": len(report),
        "drifted": sum(1 for r in report.values() if r["differences"]),
        "no_snapshot": sum(1 for r in report.values() if r["differences"] is None),
    }

    def text():
        by_site = {}
        for host, row in report.items():
            by_site.setdefault((row["customer"], row["site"]), []).append((host, row))
        for (customer, site), rows in sorted(by_site.items(), key=lambda item: tuple(str(x) for x in item[0])):
            drifted = sum(1 for _, row in rows if row["differences"])
            print("customer %s / site %s: %d of %d terminals drifted" % (customer, site, drifted, len(rows)))
            for host, row in rows:
                if row["differences"] is None:
                    print("  %-20s no snapshot yet" % host)
                elif not row["differences"]:
                    print("  %-20s in line with the registry" % host)
                else:
                    print("  %-20s %d difference(s):" % (host, len(row["differences"])))
                    for item in row["differences"]:
                        print(
                            "    %-9s %s: registry %s, terminal %s"
                            % (item["aspect"], item["path"], item["desired"], item["actual"])
                        )
                for note in row["notes"]:
                    print("    note: %s" % note)
        print("%(drifted)d of %(terminals)d terminals drifted, %(no_snapshot)d without a snapshot" % summary)

    _print({"summary": summary, "terminals": report}, args.json, text)
    return 1 if args.fail_on_drift and summary["drifted"] else 0


def _value(value):
    return json.dumps(value, ensure_ascii=False, default=str)


def _having(releases):
    if not releases:
        return "no release of the catalog has it"
    named = ", ".join(
        item["release"] if item["as"] == item["name"] else "%s (as %s)" % (item["release"], item["as"])
        for item in releases
    )
    return ("release %s has it" if len(releases) == 1 else "releases %s have it") % named


def _print_parameters(resolved, explain):
    parameters = resolved["parameters"]
    width = max((len(name) for name in parameters), default=0)
    for name, item in parameters.items():
        print("  %s  %-28s from %s" % (name.ljust(width), _value(item["value"]), item["source"]))
        if explain:
            for entry in item["layers"]:
                given = "" if entry["given"] == name else " (as %s)" % entry["given"]
                reason = entry.get("reason", "")
                verdict = reason if reason.startswith(entry["status"]) else "%s: %s" % (entry["status"], reason)
                print("  %s    %-16s %-24s %s" % (" " * width, entry["layer"] + given, _value(entry["value"]), verdict))


def _print_staged(staged, indent="  "):
    for item in staged:
        having = [dict(release, name=item["name"]) for release in item["releases"]]
        print(
            "%s%s = %s (%s layer): %s; %s"
            % (indent, item["name"], _value(item["value"]), item["layer"], item["reason"], _having(having))
        )


def _print_problems(problems, indent="  "):
    for item in problems:
        given = "" if item["given"] == item["name"] else " (given as %s)" % item["given"]
        new = " [new]" if item.get("new") else ""
        print(
            "%s%s%s (%s layer): expected %s, found %s%s"
            % (indent, item["name"], given, item["layer"], item["expected"], item["found"], new)
        )


def _print_provenance(table, explain):
    print(
        "terminal %(terminal)s  (customer %(customer)s, site %(site)s, model %(model)s, %(status)s, release %(release)s)"
        % table
    )
    current = table["current"]
    if current is None:
        print("  release %s is not in the catalog: nothing to layer against" % table["release"])
    else:
        print("\neffective parameters under %s (release defaults < customer < site < terminal):" % current["release"])
        _print_parameters(current, explain)
        if current["carried"]:
            print("\ncarried by renames:")
            for item in current["carried"]:
                print("  %(from)s (%(layer)s layer) -> %(to)s" % item)
        print(
            "\nstaged (set aside, not applied under %s):" % current["release"] + ("" if current["staged"] else " none")
        )
        _print_staged(current["staged"])
        if current["problems"]:
            print("\nproblems (values %s refuses; `ipm-registry validate` reports them):" % current["release"])
            _print_problems(current["problems"])
    after = table["upgrade"]
    if after is None:
        return
    model = after["model"]
    print("\nafter an upgrade to %s:" % after["release"])
    if model["supported"]:
        print("  model %s: supported by %s" % (model["name"], after["release"]))
    else:
        print(
            "  model %s: NOT supported by %s (it supports %s)"
            % (model["name"], after["release"], ", ".join(model["models"]) or "none")
        )
    sections = (
        ("carried by renames", ["%(from)s (%(layer)s layer) -> %(to)s" % item for item in after["carried"]]),
        (
            "newly applied (%s knows them)" % after["release"],
            [
                "%s = %s (%s layer)%s"
                % (
                    item["name"],
                    _value(item["value"]),
                    item["layer"],
                    "" if item["parameter"] == item["name"] else " as " + item["parameter"],
                )
                for item in after["newly_applied"]
            ],
        ),
        (
            "now staged (%s does not know them)" % after["release"],
            [
                "%s = %s (%s layer)" % (item["name"], _value(item["value"]), item["layer"])
                for item in after["now_staged"]
            ],
        ),
    )
    for title, lines in sections:
        print("  %s:%s" % (title, "" if lines else " none"))
        for line in lines:
            print("    " + line)
    print("  problems %s would refuse:%s" % (after["release"], "" if after["problems"] else " none"))
    _print_problems(after["problems"], "    ")
    print("  changed values:%s" % ("" if after["changes"] else " none"))
    for change in after["changes"]:
        before, now = change["before"], change["after"]
        print(
            "    %s: %s -> %s"
            % (
                change["name"]
                if "renamed_from" not in change
                else "%s (was %s)" % (change["name"], change["renamed_from"]),
                "%s (%s)" % (_value(before["value"]), before["source"]) if before else "(not a parameter)",
                "%s (%s)" % (_value(now["value"]), now["source"]) if now else "(not a parameter)",
            )
        )
    print("  staged under %s:%s" % (after["release"], "" if after["staged"] else " none"))
    _print_staged(after["staged"], "    ")
    if explain:
        print("\neffective parameters under %s:" % after["release"])
        _print_parameters(after, explain)


def cmd_params(args):
    fleet, problems = load_fleet(args.inventory)
    if not fleet.customers:
        raise UsageError(
            "no registry behind %s%s: `ipm-registry validate %s` says why"
            % (args.inventory, " (%d problem(s))" % len(problems) if problems else "", args.inventory)
        )
    try:
        table = terminal_provenance(fleet, args.terminal_id, args.release)
    except ProvenanceError as error:
        raise UsageError(str(error)) from None
    if problems:
        print(
            "ipm-config: warning: the registry %s has %d problem(s), `ipm-registry validate` lists them"
            % (display_path(fleet.registry_dir), len(problems)),
            file=sys.stderr,
        )
    table["registry"] = display_path(fleet.registry_dir)
    table["registry_problems"] = len(problems)
    _print(table, args.json, lambda: _print_provenance(table, args.explain))
    return 0


def cmd_patches(args):
    """Patch compliance of the selected terminals from their latest snapshots, with counts per customer and site."""
    hostvars = _select(_inventory(args.inventory), args)
    report = {}
    for host, variables in hostvars.items():
        existing = list_snapshots(args.store, host)
        snapshot = read_snapshot(existing[-1][1]) if existing else None
        row = patch_compliance.terminal_compliance(
            snapshot["facts"] if snapshot else None, snapshot["taken_at"] if snapshot else None
        )
        report[host] = dict(row, customer=variables.get("ipm_customer_id"), site=variables.get("ipm_site_id"))
    summary = patch_compliance.summarize(report)
    if report and all(row["snapshot"] is None for row in report.values()):
        print(
            "ipm-config: warning: no selected terminal has a snapshot in %s: run playbooks/snapshot.yml first"
            % args.store,
            file=sys.stderr,
        )
    if args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(patch_compliance.CSV_COLUMNS)
        for host, row in report.items():
            writer.writerow(patch_compliance.csv_row(host, row))
        return 0

    def text():
        customers = summary["customers"]
        for customer in sorted(customers):
            print("customer %s: %s" % (customer, patch_compliance.counts_line(customers[customer]["counts"])))
            for site in sorted(customers[customer]["sites"]):
                print("  site %s: %s" % (site, patch_compliance.counts_line(customers[customer]["sites"][site])))
                for host, row in report.items():
                    if str(row["customer"]) == customer and str(row["site"]) == site:
                        print("    %-20s %-16s %s" % (host, row["status"], row["reason"]))
        print("fleet: %s" % patch_compliance.counts_line(summary["fleet"]))

    _print({"summary": summary, "terminals": report}, args.json, text)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="ipm-config", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--store", default=DEFAULT_STORE, help="history store directory (default: %(default)s, or $IPM_HISTORY_STORE)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    commands = parser.add_subparsers(dest="command", required=True)

    history = commands.add_parser("history", help="a terminal's snapshots, oldest first")
    history.add_argument("terminal_id")
    history.set_defaults(func=cmd_history)

    diff = commands.add_parser("diff", help="what changed on a terminal between two dates")
    diff.add_argument("terminal_id")
    diff.add_argument("start", help="ISO date or time (a date alone means the end of that day)")
    diff.add_argument("end", nargs="?", default="9999-12-31", help="ISO date or time (default: now)")
    diff.set_defaults(func=cmd_diff)

    def selection(sub):
        sub.add_argument(
            "-i", "--inventory", default=DEFAULT_INVENTORY, help="the registry inventory (default: %(default)s)"
        )
        sub.add_argument("--customer", help="only this customer's terminals")
        sub.add_argument("--site", help="only this site's terminals")
        sub.add_argument("--terminal", action="append", help="only this terminal (repeatable)")

    show = commands.add_parser("show", help="the configuration of terminals (a site, a customer) as of a date")
    show.add_argument("date", help="ISO date or time")
    selection(show)
    show.set_defaults(func=cmd_show)

    drift_parser = commands.add_parser(
        "drift", help="registry (desired) against the last snapshot, per customer, site and terminal"
    )
    selection(drift_parser)
    drift_parser.add_argument("--fail-on-drift", action="store_true", help="exit 1 when any terminal drifted")
    drift_parser.set_defaults(func=cmd_drift)

    params = commands.add_parser(
        "params",
        help="a terminal's effective parameters with the layer that set each, staged values, an upgrade's effect",
        description="Every effective parameter of TERMINAL with the layer that set it (release default, customer, "
        "site, terminal), what is staged for a later release, and with --release what it would run after an "
        "upgrade. Reads the registry behind the inventory; secrets are masked.",
    )
    params.add_argument("terminal_id", metavar="TERMINAL", help="terminal id (inventory host name)")
    params.add_argument(
        "--release", metavar="X.Y.Z", help="also layer against this release of the catalog (an upgrade)"
    )
    params.add_argument(
        "--explain", action="store_true", help="per parameter, every layer that sets it and which one wins, and why"
    )
    params.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of text")
    params.add_argument(
        "-i",
        "--inventory",
        default=DEFAULT_INVENTORY,
        help="the registry inventory or directory (default: %(default)s)",
    )
    params.set_defaults(func=cmd_params)

    patches = commands.add_parser(
        "patches",
        help="patch compliance per terminal from the latest snapshots, with counts per customer and site",
        description="Per terminal one status from its latest snapshot, the first that applies of: unknown (no "
        "snapshot, or its facts cannot tell), pending-security, reboot-pending, pending, held, up-to-date; with "
        "the pending and security counts, the held packages and since when a reboot waits. Counts per customer "
        "and site. Take snapshots first: ansible-playbook playbooks/snapshot.yml.",
    )
    selection(patches)
    output = patches.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of text")
    output.add_argument("--csv", action="store_true", help="print one CSV record per terminal")
    patches.set_defaults(func=cmd_patches)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (UsageError, HistoryError) as error:
        print("ipm-config: %s" % error, file=sys.stderr)
        return 2
    except BrokenPipeError:
        return closed_output()


if __name__ == "__main__":
    sys.exit(main())
