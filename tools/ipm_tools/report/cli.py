"""ipm-report: maintenance, audit and site reports as self-contained HTML, CSV or JSON.

  ipm-report maintenance --customer X --period 2027-01   deliveries, parameters, patches, backups, incidents,
                                                         drift at the end of the period, effort
  ipm-report audit --period 2027-01                      verification, changes by operator, denials, approvals,
                                                         emergency window overrides
  ipm-report site --site Y [--date 2027-01-31]           configuration of every terminal as of a date

In the customer's (or site's) language: French, English, German or Spanish (--lang overrides). Exit codes:
0 report written, 1 report written but the audit log failed verification, 2 bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import sys
import tempfile
import time

import ipm_tools  # noqa: F401 - puts collections/ on sys.path
from ansible_collections.ipm.fleet.plugins.plugin_utils import config_history, report_data
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import AuditLogError, load_key, verify_log
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_segments import verify_trail
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry import desired_release, load_fleet
from ipm_tools import PROJECT_ROOT, closed_output
from ipm_tools.report import build, html, i18n

DEFAULT_LOG = "~/.ipm/audit/audit.jsonl"
DEFAULT_KEY = "~/.ipm/audit.key"
DEFAULT_REGISTRY = str(PROJECT_ROOT / "registry" / "demo")
DEFAULT_STORE = str(PROJECT_ROOT / "build" / "history")


class UsageError(Exception):
    """A user mistake: one line on stderr, exit code 2."""


class Progress:
    """'reading the audit log: 42%' on stderr, only when it is a terminal or --progress asks for it."""

    def __init__(self, enabled: bool, total: int, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.total = max(total, 1)
        self.last = 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < 0.2:
            return
        self.last = now
        self.stream.write("\ripm-report: reading the audit log %3d%%" % min(100, done * 100 // self.total))
        self.stream.flush()

    def step(self, text: str) -> None:
        if self.enabled:
            self.stream.write("\ripm-report: %-40s" % text)
            self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\ripm-report: done%40s\n" % "")
            self.stream.flush()


# ------------------------------------------------------------------------------------------ inputs


def _log_path(args) -> str:
    path = os.path.expanduser(args.log)
    if not os.path.isfile(path) and not os.path.isdir(path):
        raise UsageError(f"{path}: no audit log there; pass --log (a log, or a trail directory) or set IPM_AUDIT_LOG")
    return path


def _verify(args, path: str) -> dict:
    key = None
    key_file = os.path.expanduser(args.key_file)
    if not args.no_key and (args.key_file_given or os.path.exists(key_file)):
        try:
            key = load_key(key_file)
        except AuditLogError as exc:
            raise UsageError(f"{exc} (or pass --no-key to check the chain only)") from None
    if os.path.isdir(path):  # a merged trail of chain segments (docs/audit.md)
        trail = verify_trail(path, key)
        return {
            "ok": trail.ok,
            "signed": key is not None,
            "records": trail.records,
            "problem": "; ".join(trail.problems) or None,
        }
    report = verify_log(path, key)
    return {
        "ok": report.ok,
        "signed": key is not None,
        "records": report.records,
        "problem": str(report.problem) if report.problem else None,
    }


def _fleet(args):
    try:
        fleet, problems = load_fleet(args.registry)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{args.registry}: cannot read the registry ({exc}); pass --registry DIR") from None
    if not fleet.customers:
        raise UsageError(f"{args.registry}: no customer in this registry; pass --registry DIR")
    del problems  # `ipm-registry validate` reports them; the report uses what is readable
    return fleet


def _customer(fleet, customer_id):
    for doc in fleet.customers:
        if doc["customer"].get("id") == customer_id:
            return doc
    known = ", ".join(sorted(d["customer"].get("id", "?") for d in fleet.customers))
    raise UsageError(f"--customer {customer_id!r}: not in the registry {fleet.registry_dir} (known: {known})")


def _site(fleet, site_id):
    for doc in fleet.customers:
        for site in doc["sites"]:
            if site.get("id") == site_id:
                return doc, site
    raise UsageError(f"--site {site_id!r}: no such site in the registry {fleet.registry_dir}")


def _drift(fleet, doc, store, when):
    """Drift of each terminal of the customer DOC as of WHEN, from the history STORE and the registry."""
    from ipm_tools.config import _desired  # the desired state, as `ipm-config drift` builds it

    customer = doc["customer"]
    available = os.path.isdir(store)
    rows = []
    for site in doc["sites"]:
        for terminal in site["terminals"]:
            if terminal.get("status", "active") != "active":
                continue
            snapshot = config_history.snapshot_as_of(store, terminal["id"], when) if available else None
            differences = None
            if snapshot is not None:
                running = (snapshot["facts"].get("application") or {}).get("current")
                variables = {
                    "ipm_customer_parameters": customer.get("parameters"),
                    "ipm_site_parameters": site.get("parameters"),
                    "ipm_parameters": terminal.get("parameters"),
                    "ipm_release": desired_release(customer, site, terminal),
                }
                differences = config_history.drift(_desired(variables, fleet.releases, running), snapshot["facts"])
            rows.append({"terminal": terminal["id"], "site": site["id"], "differences": differences})
    return {"available": available, "rows": rows, "by_site": report_data.drift_by_site(rows)}


def _incidents(args, customer_id, period):
    """Incidents of the period from the support tickets, or None when there is no support data to read."""
    directory = args.support_dir
    if directory and os.path.exists(os.path.expanduser(directory)) and not os.path.isdir(os.path.expanduser(directory)):
        raise UsageError(f"--support-dir {directory}: not a directory; give the support dir (or leave it out)")
    if not directory or not os.path.isdir(os.path.expanduser(directory)):
        return None
    try:
        from ipm_tools.support import sla, tickets
    except ImportError:
        return None
    try:
        return support_incidents(tickets, sla, directory, args.registry, customer_id, period)
    except tickets.TicketError as exc:
        raise UsageError(f"{directory}: cannot read the support tickets ({exc})") from None


def support_incidents(tickets, sla, directory, registry, customer_id, period):
    """Rows (ticket, opened, severity, terminal, sla: met|breached|running) through the support tools' API.

    A ticket's SLA is breached when its response or repair clock is, met when both are met, running
    otherwise (the clocks are the support tools' rule: plugins/plugin_utils/sla_clock.py).
    """
    store = tickets.TicketStore(directory, registry=registry)
    rows = []
    for item in sla.report(store, customer=customer_id):
        ticket = item.ticket
        opened = tickets.parse_utc(ticket.opened_utc)
        if not period.start <= opened < period.end:
            continue
        states = {item.response.state, item.repair.state}
        state = "breached" if "breached" in states else "met" if states == {"met"} else "running"
        rows.append(
            {
                "ticket": ticket.id,
                "opened": opened.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "timezone": item.timezone,
                "severity": ticket.severity,
                "terminal": ticket.terminal,
                "sla": state,
            }
        )
    return rows


def _language(args, preferred, country=None):
    try:
        return i18n.Formatter(i18n.choose_language(preferred, args.lang), country)
    except i18n.LanguageError as exc:
        raise UsageError(str(exc)) from None


def _period(text):
    try:
        period = report_data.parse_period(text)
    except report_data.PeriodError as exc:
        raise UsageError(f"--period: {exc}") from None
    return period


def _history(args) -> str:
    """The history store: a directory (a missing one means no snapshots yet), never a file."""
    path = os.path.expanduser(args.history)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--history {path}: not a directory; give the configuration history store (ipm-config)")
    return path


def _rate(text: str) -> float:
    """--hourly-rate: a finite price of 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a price of 0 or more, e.g. 85 or 85.50")
    return value


def _aggregate(args, path, period, customer=None):
    progress = Progress(args.progress or sys.stderr.isatty(), os.path.getsize(path))
    progress.step("verifying the audit log")
    verification = _verify(args, path)
    try:
        data = report_data.aggregate(report_data.read_log(path, progress), period, customer)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the audit log ({exc.strerror})") from None
    return data, verification, progress


# ---------------------------------------------------------------------------------------- commands


def cmd_maintenance(args):
    fleet = _fleet(args)
    doc = _customer(fleet, args.customer)
    customer = doc["customer"]
    period = _period(args.period)
    path = _log_path(args)
    data, verification, progress = _aggregate(args, path, period, args.customer)
    progress.step("drift at the end of the period")
    zone = doc["sites"][0].get("timezone") if doc["sites"] else "UTC"
    last_moment = period.end - datetime.timedelta(microseconds=1)
    drift = _drift(fleet, doc, _history(args), last_moment)
    f = _language(args, customer.get("languages"), customer.get("country"))
    currency = (customer.get("parameters") or {}).get("currency")
    document = build.maintenance(
        f,
        data,
        customer=customer,
        drift_rows=drift,
        incidents=_incidents(args, args.customer, period),
        verification=verification,
        zone=zone,
        hourly_rate=args.hourly_rate,
        currency=currency,
    )
    return _write(args, document, progress, verification)


def cmd_audit(args):
    period = _period(args.period)
    path = _log_path(args)
    data, verification, progress = _aggregate(args, path, period)
    f = _language(args, ())
    return _write(args, build.audit(f, data, verification=verification), progress, verification)


def cmd_site(args):
    fleet = _fleet(args)
    doc, site_doc = _site(fleet, args.site)
    customer = doc["customer"]
    zone = site_doc.get("timezone") or "UTC"
    try:
        when = config_history.parse_when(args.date, None) if args.date else datetime.datetime.now(datetime.UTC)
    except config_history.HistoryError as exc:
        raise UsageError(f"--date: {exc}") from None
    history = _history(args)
    rows = []
    for terminal in site_doc["terminals"]:
        snapshot = config_history.snapshot_as_of(history, terminal["id"], when) if os.path.isdir(history) else None
        rows.append({"terminal": terminal["id"], "model": terminal.get("model"), "snapshot": snapshot})
    language = site_doc.get("language") or (customer.get("languages") or [None])[0]
    f = _language(
        args, [language, *(customer.get("languages") or [])], site_doc.get("country") or customer.get("country")
    )
    stamp = when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    document = build.site(f, site_doc=site_doc, customer=customer, terminals=rows, as_of=stamp, zone=zone)
    progress = Progress(args.progress or sys.stderr.isatty(), 1)
    return _write(args, document, progress, None)


def _write(args, document, progress, verification):
    progress.step("writing the report")
    if args.format == "pdf":
        if args.output in (None, "-"):
            raise UsageError("--format pdf: give the file to write with --output FILE.pdf")
        from ipm_tools.report import pdf

        text = pdf.render(document)
    elif args.format == "html":
        text = html.render(document)
    elif args.format == "csv":
        text = build.tables_csv(document)
    else:
        text = build.document_json(document)
    if args.output in (None, "-"):
        progress.done()
        sys.stdout.write(text)
    else:
        _write_file(args.output, text.encode("utf-8") if isinstance(text, str) else text)
        progress.done()
        print(f"{document['kind']} report ({document['lang']}) written to {args.output}", file=sys.stderr)
    if verification is not None and not verification["ok"]:
        print(f"ipm-report: the audit log FAILED verification: {verification['problem']}", file=sys.stderr)
        return 1
    return 0


def _write_file(output: str, data: bytes) -> None:
    """The report written to a temporary name beside OUTPUT, then renamed: never a half-written report."""
    target = os.path.expanduser(output)
    folder = os.path.dirname(os.path.abspath(target))
    if os.path.isdir(target):
        raise UsageError(
            f"--output {output}: a directory; give a file name, e.g. {os.path.join(output, 'report.html')}"
        )
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UsageError(f"--output {output}: {folder} is a file, not a directory; write elsewhere")
    if not os.path.isdir(folder):
        raise UsageError(f"--output {output}: the directory {folder} does not exist; create it or write elsewhere")
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=folder)
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644 & ~_umask())
        os.replace(temporary, target)
    except OSError as exc:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        raise UsageError(
            f"--output {output}: cannot write the report ({exc.strerror}); nothing was written there: "
            "free space or choose a writable place"
        ) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log", default=os.environ.get("IPM_AUDIT_LOG", DEFAULT_LOG), help="audit log (default: $IPM_AUDIT_LOG)"
    )
    common.add_argument(
        "--key-file", help="checkpoint key to verify the log with (default: ~/.ipm/audit.key if present)"
    )
    common.add_argument("--no-key", action="store_true", help="verify the chain only")
    common.add_argument(
        "--registry", default=os.environ.get("IPM_REGISTRY", DEFAULT_REGISTRY), help="registry directory"
    )
    common.add_argument(
        "--history", default=os.environ.get("IPM_HISTORY_STORE", DEFAULT_STORE), help="configuration history store"
    )
    common.add_argument("--support-dir", default=os.environ.get("IPM_SUPPORT_DIR"), help="support tickets directory")
    common.add_argument("--lang", help="language of the report: fr, en, de or es (default: the customer's or site's)")
    common.add_argument("--format", choices=("html", "csv", "json", "pdf"), default="html")
    common.add_argument("--output", "-o", help="file to write (default: stdout)")
    common.add_argument("--progress", action="store_true", help="show progress on stderr even when it is not a tty")

    parser = argparse.ArgumentParser(
        prog="ipm-report", description="Maintenance, audit and site reports (see docs/reports.md)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("maintenance", parents=[common], help="a customer's maintenance report of a period")
    p.add_argument("--customer", required=True, help="customer id")
    p.add_argument("--period", required=True, help="YYYY-MM, YYYY or YYYY-MM-DD..YYYY-MM-DD (UTC)")
    p.add_argument("--hourly-rate", type=_rate, help="price of an hour on terminals, in the customer's currency")
    p.set_defaults(func=cmd_maintenance)
    p = sub.add_parser("audit", parents=[common], help="the audit report of a period")
    p.add_argument("--period", required=True, help="YYYY-MM, YYYY or YYYY-MM-DD..YYYY-MM-DD (UTC)")
    p.set_defaults(func=cmd_audit)
    p = sub.add_parser("site", parents=[common], help="configuration of every terminal of a site as of a date")
    p.add_argument("--site", required=True, help="site id")
    p.add_argument("--date", help="as of this date or time (default: now); a date alone means its end")
    p.set_defaults(func=cmd_site)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.key_file_given = args.key_file is not None
    args.key_file = args.key_file or os.environ.get("IPM_AUDIT_KEY_FILE", DEFAULT_KEY)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"ipm-report: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return closed_output()


if __name__ == "__main__":
    sys.exit(main())
