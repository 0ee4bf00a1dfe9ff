"""The support ticket store: error reports (``INC-n``) and feature requests (``REQ-n``) with their events.

One SQLite file, ``<support_dir>/tickets.sqlite`` (standard library ``sqlite3``), in WAL mode with a
busy timeout. Every change is one ``BEGIN IMMEDIATE`` transaction: ticket numbers and event sequence
numbers are allocated inside it, so writers in parallel processes (eight runbook jobs noting the same
ticket at once) never lose or duplicate an event. The schema is versioned with ``PRAGMA user_version``.

The forms are checked against the fleet registry (plugins/plugin_utils/registry.py): the customer
exists, the site or terminal is that customer's, the severity and language are known. Every time is
stored in UTC (ISO 8601 with ``Z``); displays add the site's local time (the site's ``timezone`` in the
registry), see :func:`times`.

States: ``open`` -> ``waiting`` (on the customer) -> ``open`` (resumed) -> ``resolved`` -> ``closed``;
``close`` of an open or waiting ticket records its resolution and the closing at once. Anything else
(closing a closed ticket, resuming one that is not waiting, ...) raises :class:`TicketError` with one
line saying what the ticket's state is and what can be done.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ansible_collections.ipm.fleet.plugins.plugin_utils import registry as reg
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_context import utc_and_site_time
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_check import display_path
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_codes import LANGUAGE_CODES
from ipm_tools import PROJECT_ROOT

SCHEMA_VERSION = 1
DB_FILE = "tickets.sqlite"
BUSY_TIMEOUT_MS = 60_000  # how long a change waits for another writer; $IPM_SUPPORT_LOCK_TIMEOUT (seconds)

SEVERITIES = ("critical", "major", "minor", "temporary")
STATUSES = ("open", "waiting", "resolved", "closed")
KINDS = {"error": ("INC", "corrective"), "request": ("REQ", "evolutive")}
EVENT_KINDS = (
    "opened",
    "first_response",
    "comment",
    "waiting",
    "resumed",
    "resolved",
    "closed",
    "job_started",
    "job_finished",
    "job",
)
NOTE_KINDS = ("job", "job_started", "job_finished")
MAX_TEXT = 10_000  # symptoms, descriptions, comments, reasons, resolutions
MAX_LINE = 200  # contact
TICKET_ID_RE = re.compile(r"^(INC|REQ)-([1-9][0-9]{0,9})$")
# C0 controls and DEL except tab and newline (a carriage return is folded into a newline first).
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

_SCHEMA = """
CREATE TABLE counters (prefix TEXT PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE tickets (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('error', 'request')),
    customer TEXT NOT NULL,
    site TEXT,
    terminal TEXT,
    severity TEXT,
    status TEXT NOT NULL CHECK (status IN ('open', 'waiting', 'resolved', 'closed')),
    maintenance_type TEXT NOT NULL,
    contact TEXT NOT NULL,
    language TEXT NOT NULL,
    summary TEXT NOT NULL,
    timezone TEXT,
    opened_utc TEXT NOT NULL,
    opened_by TEXT NOT NULL,
    updated_utc TEXT NOT NULL,
    first_response_utc TEXT,
    resolved_utc TEXT,
    closed_utc TEXT,
    resolution TEXT,
    waiting_reason TEXT
);
CREATE INDEX tickets_customer ON tickets (customer, status);
CREATE TABLE events (
    ticket_id TEXT NOT NULL REFERENCES tickets (id),
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    at_utc TEXT NOT NULL,
    actor TEXT NOT NULL,
    text TEXT NOT NULL DEFAULT '',
    data TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (ticket_id, seq)
);
"""


class TicketError(Exception):
    """A user mistake or an unusable store, as one line (the CLI prints it and exits 2)."""


class UnknownTicket(TicketError):
    """No such ticket in the store."""


class StoreError(TicketError):
    """The ticket database or the registry cannot be used (corrupt, foreign, locked, unreadable): exit 1."""


def _busy_timeout_ms() -> int:
    text = os.environ.get("IPM_SUPPORT_LOCK_TIMEOUT")
    if not text:
        return BUSY_TIMEOUT_MS
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 86_400:
        raise StoreError(f"IPM_SUPPORT_LOCK_TIMEOUT {text!r}: expected seconds to wait for another writer, 0 to 86400")
    return int(seconds * 1000)


def _sqlite_hint(error: Exception) -> str:
    """What to do about an SQLite error, as the end of the one line."""
    text = str(error).lower()
    if "full" in text or "disk i/o" in text:
        return f"{error}: free space on the support dir's file system, then try again (nothing was changed)"
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return f"{error}: the support dir must be writable by this user (or point --support-dir elsewhere)"
    if "locked" in text or "busy" in text:
        return (
            f"{error}: another process held the ticket database longer than the lock timeout "
            "($IPM_SUPPORT_LOCK_TIMEOUT seconds, default 60); try again when it is done (nothing was changed)"
        )
    return str(error)


def _rollback(connection: sqlite3.Connection) -> None:
    """Roll back what is pending, if anything: a failed COMMIT (disk full) may have ended the transaction."""
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")


@dataclass
class Event:
    ticket_id: str
    seq: int
    kind: str
    at_utc: str
    actor: str
    text: str = ""
    data: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Ticket:
    id: str
    kind: str
    customer: str
    site: str | None
    terminal: str | None
    severity: str | None
    status: str
    maintenance_type: str
    contact: str
    language: str
    summary: str  # the symptoms of an error report, the description of a request
    timezone: str | None  # the site's, when the ticket has a site
    opened_utc: str
    opened_by: str
    updated_utc: str
    first_response_utc: str | None = None
    resolved_utc: str | None = None
    closed_utc: str | None = None
    resolution: str | None = None
    waiting_reason: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def iso_utc(moment: datetime.datetime) -> str:
    """An aware datetime as ISO 8601 UTC with ``Z`` (microseconds)."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no time zone; give an aware one (UTC)")
    return moment.astimezone(datetime.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_utc(text: str) -> datetime.datetime:
    """The ISO 8601 UTC time stored by the store (``...Z``) as an aware datetime."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(datetime.UTC)


def times(at_utc: str, timezone_name: str | None) -> tuple[str, str]:
    """A stored time as (UTC ``...Z``, the site's local time with its offset), as displays show it."""
    return utc_and_site_time(parse_utc(at_utc).timestamp(), timezone_name)


def normalise_id(ticket_id: str) -> str:
    """``inc-7`` -> ``INC-7``; TicketError for anything that is not a ticket id."""
    text = str(ticket_id or "").strip().upper()
    if not TICKET_ID_RE.match(text):
        raise TicketError(f"ticket id {_shown(ticket_id)}: expected INC-<n> (error report) or REQ-<n> (request)")
    return text


def _shown(value, limit=60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clean_text(what: str, value, *, required=True, limit=MAX_TEXT, one_line=False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise TicketError(f"{what}: expected text, found {type(value).__name__}")
    text = value.replace("\r\n", "\n").replace("\r", "\n")
    if required and not text.strip():
        raise TicketError(f"{what}: expected some text, found none")
    if len(text) > limit:
        raise TicketError(f"{what}: {len(text)} characters, at most {limit} are kept; shorten it or attach a file")
    bad = _CONTROL_RE.search(text) or (one_line and re.search(r"[\n\t]", text))
    if bad:
        raise TicketError(
            f"{what}: control character {bad.group(0)!r} at position {bad.start()}; "
            f"expected printable text{' on one line' if one_line else ''}"
        )
    return text.strip()


def default_registry() -> str:
    """The registry tickets are checked against: $IPM_REGISTRY, else the demo inventory's."""
    return os.environ.get("IPM_REGISTRY") or str(PROJECT_ROOT / "inventories" / "demo")


class TicketStore:
    """The tickets of ``support_dir`` (see the module docstring).

    ``registry`` is the registry directory (or an inventory naming it) the forms are checked
    against, default :func:`default_registry`; ``clock`` returns the current aware UTC datetime
    (tests pass their own).
    """

    def __init__(
        self,
        support_dir: str | os.PathLike,
        registry: str | os.PathLike | None = None,
        clock: Callable[[], datetime.datetime] | None = None,
    ):
        self.support_dir = Path(support_dir).expanduser()
        self.path = self.support_dir / DB_FILE
        self.registry = str(registry) if registry is not None else default_registry()
        self.clock = clock or utc_now
        self._fleet = None

    # -- the database ----------------------------------------------------------------------

    def _where(self) -> str:
        return display_path(str(self.path))

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        """A connection with the schema in place; None when the store does not exist and ``create`` is False."""
        if self.path.exists() and not self.path.is_file():
            raise StoreError(f"{self._where()}: not a file; expected the ticket database (SQLite)")
        if not self.path.exists():
            if not create:
                return None
            where = display_path(str(self.support_dir))
            if self.support_dir.exists() and not self.support_dir.is_dir():
                raise StoreError(f"support dir {where}: not a directory; point --support-dir at a directory")
            try:
                self.support_dir.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StoreError(
                    f"support dir {where}: cannot be made ({error.strerror}); point --support-dir at a writable place"
                ) from None
        busy = _busy_timeout_ms()
        try:
            connection = sqlite3.connect(str(self.path), timeout=busy / 1000, isolation_level=None)
        except sqlite3.Error as error:
            raise StoreError(f"{self._where()}: cannot open the ticket database: {_sqlite_hint(error)}") from None
        try:
            connection.execute(f"PRAGMA busy_timeout = {busy}")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                self._create_schema(connection)
            elif version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self._where()}: schema version {version} is newer than this tool's ({SCHEMA_VERSION}); "
                    "upgrade ipm.fleet"
                )
            else:
                names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if not {"tickets", "events", "counters"} <= names:
                    raise StoreError(
                        f"{self._where()}: an SQLite file of schema version {version} without the ticket tables, "
                        "not this tool's ticket database; it was left as it is: move it away"
                    )
            if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as error:
            connection.close()
            if not isinstance(error, sqlite3.OperationalError) or "not a database" in str(error):
                raise StoreError(
                    f"{self._where()}: not a usable ticket database ({error}); it was left as it is: "
                    "restore it from a backup of the support dir or move it away"
                ) from None
            raise StoreError(f"{self._where()}: cannot open the ticket database: {_sqlite_hint(error)}") from None
        except BaseException:
            connection.close()
            raise
        return connection

    def _create_schema(self, connection: sqlite3.Connection) -> None:
        connection.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have created it while this one waited for the lock.
            if connection.execute("PRAGMA user_version").fetchone()[0] == 0:
                tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if tables:
                    raise StoreError(
                        f"{self._where()}: an SQLite file holding other tables, not a ticket database; "
                        "it was left as it is: point --support-dir elsewhere or move it away"
                    )
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        connection.execute(statement)
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            connection.execute("COMMIT")
        except BaseException:
            _rollback(connection)
            raise

    def _read(self, query: str, params=()) -> list[sqlite3.Row]:
        connection = self._connect(create=False)
        if connection is None:
            return []
        try:
            connection.row_factory = sqlite3.Row
            return connection.execute(query, params).fetchall()
        except sqlite3.DatabaseError as error:
            hint = _sqlite_hint(error)
            if "no such table" in str(error) or "no such column" in str(error):
                hint = f"{error}: not this tool's ticket database; it was left as it is: move it away"
            raise StoreError(f"{self._where()}: cannot read the tickets: {hint}") from None
        finally:
            connection.close()

    def _write(self, change: Callable[[sqlite3.Connection], object]):
        """Run ``change(connection)`` in one immediate transaction; its result is returned."""
        connection = self._connect(create=True)
        try:
            connection.row_factory = sqlite3.Row
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = change(connection)
                connection.execute("COMMIT")
            except BaseException:
                _rollback(connection)
                raise
            return result
        except sqlite3.DatabaseError as error:
            hint = _sqlite_hint(error)
            if "no such table" in str(error) or "no such column" in str(error):
                hint = f"{error}: not this tool's ticket database; it was left as it is: move it away"
            raise StoreError(f"{self._where()}: the change was not recorded: {hint}") from None
        finally:
            connection.close()

    @staticmethod
    def _append(connection, ticket_id, kind, at, actor, text="", data=None) -> Event:
        seq = connection.execute(
            "SELECT coalesce(max(seq), 0) + 1 FROM events WHERE ticket_id = ?", (ticket_id,)
        ).fetchone()[0]
        payload = json.dumps(data or {}, sort_keys=True, ensure_ascii=False)
        connection.execute(
            "INSERT INTO events (ticket_id, seq, kind, at_utc, actor, text, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ticket_id, seq, kind, at, actor, text, payload),
        )
        connection.execute("UPDATE tickets SET updated_utc = ? WHERE id = ?", (at, ticket_id))
        return Event(ticket_id, seq, kind, at, actor, text, dict(data or {}))

    # -- the registry ----------------------------------------------------------------------

    def fleet(self):
        if self._fleet is None:
            try:
                fleet, problems = reg.load_fleet(self.registry)
            except (OSError, ValueError) as error:
                raise StoreError(f"registry {self.registry}: cannot be read: {error}") from None
            if not fleet.customers and problems:
                first = problems[0]
                raise StoreError(
                    f"registry {self.registry}: {len(problems)} problem(s), first {first.file}: {first.message}; "
                    "`ipm-registry validate` lists them"
                )
            self._fleet = fleet
        return self._fleet

    def _customer(self, customer_id):
        fleet = self.fleet()
        for document in fleet.customers:
            if document["customer"].get("id") == customer_id:
                return document
        known = ", ".join(sorted(str(d["customer"].get("id")) for d in fleet.customers))
        raise TicketError(
            f"customer {_shown(customer_id)}: not in the registry {display_path(fleet.registry_dir)}; known: {known}"
        )

    def _place(self, document, site_id, terminal_id):
        """The site (a dict) of the ticket: the one named, or the terminal's; checks both are the customer's."""
        customer_id = document["customer"]["id"]
        if terminal_id is not None:
            found = self.fleet().find_terminal(terminal_id)
            if found is None:
                raise TicketError(
                    f"terminal {_shown(terminal_id)}: not in the registry; `ipm-registry list` shows the terminals"
                )
            owner, site, _terminal = found
            if owner.get("id") != customer_id:
                raise TicketError(
                    f"terminal {terminal_id} belongs to another customer, not to {customer_id}; "
                    "open the ticket for the terminal's own customer"
                )
            if site_id is not None and site.get("id") != site_id:
                raise TicketError(f"terminal {terminal_id} is at site {site.get('id')}, not at {site_id}")
            return site
        if site_id is not None:
            for site in document["sites"]:
                if site.get("id") == site_id:
                    return site
            known = ", ".join(sorted(str(s.get("id")) for s in document["sites"]))
            raise TicketError(f"site {_shown(site_id)}: not a site of customer {customer_id}; its sites: {known}")
        return None

    @staticmethod
    def _language(language, document, site) -> str:
        if language is None or language == "":
            customer = document["customer"]
            contacts = [c for c in customer.get("contacts") or [] if isinstance(c, dict)]
            language = (
                (site or {}).get("language")
                or next((c.get("language") for c in contacts if c.get("language")), None)
                or next(iter(customer.get("languages") or []), None)
                or "en"
            )
        text = str(language).strip().lower()
        if text not in LANGUAGE_CODES:
            raise TicketError(f"language {_shown(language)}: expected an ISO 639-1 code such as fr, en, de, es")
        return text

    # -- opening ---------------------------------------------------------------------------

    def open_error(
        self, customer, severity, symptoms, contact, language=None, site=None, terminal=None, *, actor
    ) -> Ticket:
        """An error report (``INC-n``, corrective maintenance) on a site or a terminal of ``customer``."""
        if site is None and terminal is None:
            raise TicketError("an error report names a site or a terminal of the customer (--site or --terminal)")
        if str(severity or "").strip().lower() not in SEVERITIES:
            raise TicketError(f"severity {_shown(severity)}: expected one of {', '.join(SEVERITIES)}")
        return self._open(
            "error",
            customer,
            str(severity).strip().lower(),
            _clean_text("symptoms", symptoms),
            contact,
            language,
            site,
            terminal,
            actor,
        )

    def open_request(self, customer, description, contact, language=None, site=None, *, actor) -> Ticket:
        """A feature request (``REQ-n``): evolutive maintenance for ``customer``."""
        return self._open(
            "request", customer, None, _clean_text("description", description), contact, language, site, None, actor
        )

    def _open(self, kind, customer_id, severity, summary, contact, language, site_id, terminal_id, actor) -> Ticket:
        actor = _clean_text("actor", actor, limit=MAX_LINE, one_line=True)
        contact = _clean_text("contact", contact, limit=MAX_LINE, one_line=True)
        document = self._customer(customer_id)
        site = self._place(document, site_id, terminal_id)
        language = self._language(language, document, site)
        prefix, maintenance_type = KINDS[kind]
        at = iso_utc(self.clock())
        timezone = site.get("timezone") if site else None

        def change(connection):
            row = connection.execute("SELECT last FROM counters WHERE prefix = ?", (prefix,)).fetchone()
            number = (row[0] if row else 0) + 1
            connection.execute(
                "INSERT INTO counters (prefix, last) VALUES (?, ?) ON CONFLICT (prefix) DO UPDATE SET last = ?",
                (prefix, number, number),
            )
            ticket = Ticket(
                id=f"{prefix}-{number}",
                kind=kind,
                customer=customer_id,
                site=site.get("id") if site else None,
                terminal=terminal_id,
                severity=severity,
                status="open",
                maintenance_type=maintenance_type,
                contact=contact,
                language=language,
                summary=summary,
                timezone=timezone,
                opened_utc=at,
                opened_by=actor,
                updated_utc=at,
            )
            values = ticket.as_dict()
            columns = ", ".join(values)
            connection.execute(
                f"INSERT INTO tickets ({columns}) VALUES ({', '.join('?' for _ in values)})", tuple(values.values())
            )
            self._append(connection, ticket.id, "opened", at, actor, summary, {"form": kind})
            return ticket

        return self._write(change)

    # -- reading ---------------------------------------------------------------------------

    def get(self, ticket_id) -> Ticket:
        ticket_id = normalise_id(ticket_id)
        rows = self._read("SELECT * FROM tickets WHERE id = ?", (ticket_id,))
        if not rows:
            raise UnknownTicket(f"ticket {ticket_id}: unknown in {self._where()}; `ipm-support ticket list` shows them")
        return Ticket(**dict(rows[0]))

    def list(self, customer=None, status=None) -> list[Ticket]:
        """Tickets, oldest first, optionally of one customer and/or in one status."""
        if status is not None and status not in STATUSES:
            raise TicketError(f"status {_shown(status)}: expected one of {', '.join(STATUSES)}")
        clauses, params = [], []
        for column, value in (("customer", customer), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._read(f"SELECT * FROM tickets{where} ORDER BY opened_utc, id", params)
        return [Ticket(**dict(row)) for row in rows]

    def events(self, ticket_id) -> list[Event]:
        ticket = self.get(ticket_id)
        rows = self._read("SELECT * FROM events WHERE ticket_id = ? ORDER BY seq", (ticket.id,))
        return [
            Event(
                row["ticket_id"],
                row["seq"],
                row["kind"],
                row["at_utc"],
                row["actor"],
                row["text"],
                json.loads(row["data"]),
            )
            for row in rows
        ]

    def folder(self, ticket_id) -> Path:
        """``<support_dir>/tickets/<id>/`` (job artifacts, fetched files), created on demand."""
        ticket = self.get(ticket_id)
        path = self.support_dir / "tickets" / ticket.id
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- changes ---------------------------------------------------------------------------

    def _change(self, ticket_id, actor, allowed, verb, apply) -> Event:
        """Check the ticket's state is in ``allowed`` inside the transaction, then ``apply(connection, ticket, at)``."""
        ticket_id = normalise_id(ticket_id)
        actor = _clean_text("actor", actor, limit=MAX_LINE, one_line=True)

        def change(connection):
            row = connection.execute("SELECT * FROM tickets WHERE id = ?", (ticket_id,)).fetchone()
            if row is None:
                raise UnknownTicket(
                    f"ticket {ticket_id}: unknown in {self._where()}; `ipm-support ticket list` shows them"
                )
            ticket = Ticket(**dict(row))
            if ticket.status not in allowed:
                raise TicketError(_refusal(ticket, verb))
            return apply(connection, ticket, iso_utc(self.clock()))

        if not self.path.exists():
            raise UnknownTicket(f"ticket {ticket_id}: unknown in {self._where()} (no tickets yet)")
        return self._write(change)

    def comment(self, ticket_id, actor, text, first_response=False) -> Event:
        text = _clean_text("comment", text)

        def apply(connection, ticket, at):
            kind = "comment"
            if first_response:
                if ticket.first_response_utc:
                    raise TicketError(
                        f"ticket {ticket.id} had its first response at {ticket.first_response_utc}; "
                        "add this one without --first-response"
                    )
                kind = "first_response"
                connection.execute("UPDATE tickets SET first_response_utc = ? WHERE id = ?", (at, ticket.id))
            return self._append(connection, ticket.id, kind, at, actor, text)

        return self._change(ticket_id, actor, ("open", "waiting", "resolved"), "comment", apply)

    def wait(self, ticket_id, actor, reason) -> Event:
        reason = _clean_text("reason", reason)

        def apply(connection, ticket, at):
            connection.execute(
                "UPDATE tickets SET status = 'waiting', waiting_reason = ? WHERE id = ?", (reason, ticket.id)
            )
            return self._append(connection, ticket.id, "waiting", at, actor, reason)

        return self._change(ticket_id, actor, ("open",), "wait", apply)

    def resume(self, ticket_id, actor, text="") -> Event:
        text = _clean_text("comment", text, required=False)

        def apply(connection, ticket, at):
            connection.execute("UPDATE tickets SET status = 'open', waiting_reason = NULL WHERE id = ?", (ticket.id,))
            return self._append(connection, ticket.id, "resumed", at, actor, text)

        return self._change(ticket_id, actor, ("waiting",), "resume", apply)

    def resolve(self, ticket_id, actor, resolution) -> Event:
        resolution = _clean_text("resolution", resolution)

        def apply(connection, ticket, at):
            return self._resolved(connection, ticket, at, actor, resolution)

        return self._change(ticket_id, actor, ("open", "waiting"), "resolve", apply)

    def _resolved(self, connection, ticket, at, actor, resolution) -> Event:
        connection.execute(
            "UPDATE tickets SET status = 'resolved', resolved_utc = ?, resolution = ?, waiting_reason = NULL "
            "WHERE id = ?",
            (at, resolution, ticket.id),
        )
        return self._append(connection, ticket.id, "resolved", at, actor, resolution)

    def close(self, ticket_id, actor, resolution=None) -> Event:
        """Close the ticket; an open or waiting one is resolved at the same time (``resolution`` required then)."""
        resolution = _clean_text("resolution", resolution, required=False)

        def apply(connection, ticket, at):
            if ticket.status != "resolved":
                if not resolution:
                    raise TicketError(f"ticket {ticket.id} is {ticket.status}: closing it needs a resolution")
                self._resolved(connection, ticket, at, actor, resolution)
            connection.execute("UPDATE tickets SET status = 'closed', closed_utc = ? WHERE id = ?", (at, ticket.id))
            return self._append(connection, ticket.id, "closed", at, actor, resolution or "")

        return self._change(ticket_id, actor, ("open", "waiting", "resolved"), "close", apply)

    def note(self, ticket_id, actor, text, kind="job", data=None) -> Event:
        """A remediation job's note: ``job_started`` (counts as first response when none yet), ``job_finished``, ``job``.

        ``job_finished`` is recorded whatever the ticket's state (a job may end after its ticket was closed);
        the others need a ticket that is not closed.
        """
        if kind not in NOTE_KINDS:
            raise TicketError(f"note kind {_shown(kind)}: expected one of {', '.join(NOTE_KINDS)}")
        text = _clean_text("note", text, required=False)
        data = dict(data or {})
        try:
            json.dumps(data)
        except (TypeError, ValueError) as error:
            raise TicketError(f"note data: expected JSON-serialisable values: {error}") from None

        def apply(connection, ticket, at):
            if kind == "job_started" and not ticket.first_response_utc:
                connection.execute("UPDATE tickets SET first_response_utc = ? WHERE id = ?", (at, ticket.id))
            return self._append(connection, ticket.id, kind, at, actor, text, data)

        # The end of a job that was running when the ticket was closed is still recorded.
        states = STATUSES if kind == "job_finished" else ("open", "waiting", "resolved")
        return self._change(ticket_id, actor, states, "note", apply)


_REFUSALS = {
    ("wait", "waiting"): "is waiting on the customer already; `ticket resume` it when they answer",
    ("resume", "open"): "is not waiting (it is open); only a waiting ticket can be resumed",
    ("resume", "resolved"): "is resolved, not waiting; only a waiting ticket can be resumed",
    ("wait", "resolved"): "is resolved; only an open ticket can wait on the customer",
    ("resolve", "resolved"): "is resolved already; `ticket close` it",
}


def _refusal(ticket: Ticket, verb: str) -> str:
    if ticket.status == "closed":
        already = " already" if verb == "close" else ""
        return f"ticket {ticket.id} is closed{already} (at {ticket.closed_utc}); nothing more is recorded on it; open a new ticket"
    reason = _REFUSALS.get((verb, ticket.status), f"is {ticket.status}; it cannot {verb}")
    return f"ticket {ticket.id} {reason}"
