"""``ipm-support ticket ...``: open, list, show and move support tickets (see ipm_tools.support.tickets).

The person recorded on every event is the OS user running the tool (never an option).
"""

from __future__ import annotations

import json

from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_context import os_user
from ipm_tools.support.tickets import SEVERITIES, STATUSES, Event, Ticket, TicketStore, times


def store_for(args) -> TicketStore:
    """The ticket store the global options name (``--support-dir``, ``--registry``)."""
    return TicketStore(args.support_dir, registry=args.registry)


def _short(iso: str) -> str:
    """``2026-03-29T00:30:00.123456+01:00`` -> ``2026-03-29 00:30:00+01:00`` (text output)."""
    head, _, rest = iso.partition(".")
    tail = rest[6:] if rest else ""
    return head.replace("T", " ") + tail


def _when(at_utc: str | None, timezone: str | None) -> str:
    if not at_utc:
        return "-"
    utc, site = times(at_utc, timezone)
    return f"{_short(utc)} (site {_short(site)} {timezone})" if timezone else _short(utc)


def _ticket_json(ticket: Ticket) -> dict:
    document = ticket.as_dict()
    for key in ("opened", "updated", "first_response", "resolved", "closed"):
        value = document[f"{key}_utc"]
        document[f"{key}_site"] = times(value, ticket.timezone)[1] if value else None
    return document


def _event_json(event: Event, timezone: str | None) -> dict:
    document = event.as_dict()
    document["at_site"] = times(event.at_utc, timezone)[1]
    return document


def _place(ticket: Ticket) -> str:
    if ticket.terminal:
        return f"{ticket.terminal} at {ticket.site}"
    return ticket.site or "-"


def _first_line(text: str, width: int = 60) -> str:
    line = (text or "").splitlines()[0] if text else ""
    return line if len(line) <= width else line[: width - 3] + "..."


def _indented(text: str, prefix: str) -> str:
    return ("\n" + prefix).join(text.splitlines())


# -- handlers ------------------------------------------------------------------------------


def cmd_new(args) -> int:
    store = store_for(args)
    if args.form == "error":
        ticket = store.open_error(
            args.customer,
            args.severity,
            args.symptoms,
            args.contact,
            args.language,
            site=args.site,
            terminal=args.terminal,
            actor=os_user(),
        )
        what = f"error report, {ticket.severity}, {ticket.customer} / {_place(ticket)}"
    else:
        ticket = store.open_request(
            args.customer, args.description, args.contact, args.language, site=args.site, actor=os_user()
        )
        what = f"feature request, evolutive, {ticket.customer}"
    if args.json:
        print(json.dumps(_ticket_json(ticket), indent=2, ensure_ascii=False))
    else:
        print(f"{ticket.id}: opened ({what}, language {ticket.language}) {_when(ticket.opened_utc, ticket.timezone)}")
    return 0


def cmd_list(args) -> int:
    found = store_for(args).list(customer=args.customer, status=args.status)
    if args.json:
        print(json.dumps([_ticket_json(t) for t in found], indent=2, ensure_ascii=False))
        return 0
    if not found:
        print("no tickets" + (" match" if args.customer or args.status else " yet"))
        return 0
    rows = [
        (
            t.id, t.status, t.severity or "-", t.customer, _place(t), _short(t.opened_utc),
            _short(times(t.opened_utc, t.timezone)[1]) if t.timezone else "-", _first_line(t.summary),
        )
        for t in found
    ]  # fmt: skip
    header = ("TICKET", "STATUS", "SEVERITY", "CUSTOMER", "WHERE", "OPENED (UTC)", "OPENED (SITE)", "SUMMARY")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        print("  ".join(str(value).ljust(width) for value, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def cmd_show(args) -> int:
    from . import jobs

    store = store_for(args)
    ticket = store.get(args.ticket)
    job_views = jobs.reconcile(store, ticket.id, os_user())  # a job whose ipm-support died: noted first
    events = store.events(ticket.id)
    if args.json:
        document = _ticket_json(ticket)
        document["events"] = [_event_json(e, ticket.timezone) for e in events]
        document["jobs"] = [view.as_dict() for view in job_views]
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return 0
    form = "error report" if ticket.kind == "error" else "feature request"
    print(f"{ticket.id}  {form} ({ticket.maintenance_type})  status: {ticket.status}")
    print(f"  customer:  {ticket.customer}")
    if ticket.site:
        print(f"  site:      {ticket.site} ({ticket.timezone or 'no time zone: times in UTC'})")
    if ticket.terminal:
        print(f"  terminal:  {ticket.terminal}")
    if ticket.severity:
        print(f"  severity:  {ticket.severity}")
    print(f"  contact:   {ticket.contact} (language {ticket.language})")
    print(f"  opened:    {_when(ticket.opened_utc, ticket.timezone)} by {ticket.opened_by}")
    print(f"  first response: {_when(ticket.first_response_utc, ticket.timezone)}")
    if ticket.waiting_reason:
        print(f"  waiting on the customer: {_indented(ticket.waiting_reason, '    ')}")
    if ticket.resolution:
        print(f"  resolved:  {_when(ticket.resolved_utc, ticket.timezone)}: {_indented(ticket.resolution, '    ')}")
    if ticket.closed_utc:
        print(f"  closed:    {_when(ticket.closed_utc, ticket.timezone)}")
    label = "symptoms" if ticket.kind == "error" else "description"
    print(f"  {label}:\n    {_indented(ticket.summary, '    ')}")
    print("  events (UTC | site time):")
    for event in events:
        utc, site = times(event.at_utc, ticket.timezone)
        line = f"    {event.seq:>3}  {_short(utc)} | {_short(site)}  {event.kind:<14} {event.actor}"
        if event.text:
            line += ": " + _indented(event.text, " " * 10)
        if event.data:
            line += "  " + json.dumps(event.data, sort_keys=True, ensure_ascii=False)
        print(line)
    if job_views:
        print("  jobs:")
        for view in job_views:
            print(f"    {view.line()}" + ("" if view.persisted else "  (not recorded: the support dir is read-only)"))
    return 0


def _changed(event: Event, ticket: Ticket) -> int:
    print(f"{event.ticket_id}: {event.kind} (event {event.seq}) {_when(event.at_utc, ticket.timezone)}")
    return 0


def _move(method, *options):
    """A handler calling ``TicketStore.<method>(ticket, actor, <the options' values>)``, then printing the event."""

    def handler(args) -> int:
        store = store_for(args)
        event = getattr(store, method)(args.ticket, os_user(), *(getattr(args, name) for name in options))
        return _changed(event, store.get(args.ticket))

    return handler


cmd_comment = _move("comment", "text", "first_response")
cmd_wait = _move("wait", "reason")
cmd_resume = _move("resume", "comment")
cmd_resolve = _move("resolve", "resolution")
cmd_close = _move("close", "resolution")


# -- registration --------------------------------------------------------------------------


def _ticket_arg(parser):
    parser.add_argument("ticket", metavar="TICKET", help="the ticket id, INC-<n> or REQ-<n>")


def register(subparsers) -> None:
    """Add ``ticket ...`` to the ``ipm-support`` parser (ipm_tools/support/cli.py)."""
    ticket = subparsers.add_parser(
        "ticket",
        help="open, list, show and move support tickets",
        description="Support tickets: error reports (INC-n) and feature requests (REQ-n). "
        "States: open -> waiting (on the customer) -> open (resumed) -> resolved -> closed.",
    )
    actions = ticket.add_subparsers(dest="action", required=True, metavar="ACTION")

    new = actions.add_parser("new", help="open a ticket from a form", description="Open a ticket from a form.")
    forms = new.add_subparsers(dest="form", required=True, metavar="FORM")
    error = forms.add_parser(
        "error",
        help="an error report (INC-n, corrective maintenance)",
        description="An error report on a site or a terminal of the customer (INC-n, corrective maintenance).",
    )
    error.add_argument("--customer", required=True, help="the customer's id in the registry")
    place = error.add_mutually_exclusive_group(required=True)
    place.add_argument("--site", help="the site's id (a site of the customer)")
    place.add_argument("--terminal", help="the terminal's id (a terminal of the customer)")
    error.add_argument("--severity", required=True, metavar="SEVERITY", help="one of " + ", ".join(SEVERITIES))
    error.add_argument("--symptoms", required=True, help="what is wrong, as reported")
    request = forms.add_parser(
        "request",
        help="a feature request (REQ-n, evolutive maintenance)",
        description="A feature request of the customer (REQ-n, evolutive maintenance).",
    )
    request.add_argument("--customer", required=True, help="the customer's id in the registry")
    request.add_argument("--site", help="the site it is about, if one (its time zone is shown)")
    request.add_argument("--description", required=True, help="what is asked for")
    for form in (error, request):
        form.add_argument("--contact", required=True, help="who reported it (name, phone or e-mail)")
        form.add_argument(
            "--language",
            help="the contact's language, ISO 639-1 (fr, en, de, es, ...); default: the site's, else the "
            "customer contact's",
        )
        form.add_argument("--json", action="store_true", help="print the new ticket as JSON")
        form.set_defaults(handler=cmd_new)

    listing = actions.add_parser("list", help="list tickets", description="List tickets, oldest first.")
    listing.add_argument("--customer", help="only this customer's")
    listing.add_argument("--status", metavar="STATUS", help="only those in this state: " + ", ".join(STATUSES))
    listing.add_argument("--json", action="store_true", help="JSON (times in UTC and site time)")
    listing.set_defaults(handler=cmd_list)

    show = actions.add_parser(
        "show", help="one ticket with its events", description="One ticket and its events, in UTC and site time."
    )
    _ticket_arg(show)
    show.add_argument("--json", action="store_true", help="JSON")
    show.set_defaults(handler=cmd_show)

    comment = actions.add_parser("comment", help="add a comment", description="Add a comment to a ticket.")
    _ticket_arg(comment)
    comment.add_argument("text", metavar="TEXT", help="the comment")
    comment.add_argument(
        "--first-response",
        action="store_true",
        help="this comment is support's first response to the customer (the SLA response time ends here)",
    )
    comment.set_defaults(handler=cmd_comment)

    wait = actions.add_parser(
        "wait",
        help="wait on the customer",
        description="The ticket waits on the customer (an open ticket only; SLA clocks pause).",
    )
    _ticket_arg(wait)
    wait.add_argument("--reason", required=True, help="what the customer has to do or send")
    wait.set_defaults(handler=cmd_wait)

    resume = actions.add_parser(
        "resume", help="resume a waiting ticket", description="The customer answered: a waiting ticket is open again."
    )
    _ticket_arg(resume)
    resume.add_argument("--comment", help="what the customer answered")
    resume.set_defaults(handler=cmd_resume)

    resolve = actions.add_parser(
        "resolve", help="mark a ticket resolved", description="The problem is fixed (an open or waiting ticket)."
    )
    _ticket_arg(resolve)
    resolve.add_argument("--resolution", required=True, help="what fixed it")
    resolve.set_defaults(handler=cmd_resolve)

    close = actions.add_parser(
        "close",
        help="close a ticket",
        description="Close a ticket; an open or waiting one is resolved at the same time (needs --resolution).",
    )
    _ticket_arg(close)
    close.add_argument("--resolution", help="what fixed it (required unless the ticket is resolved already)")
    close.set_defaults(handler=cmd_close)
