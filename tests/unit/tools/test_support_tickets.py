"""The ticket store on a real SQLite file, checked against the demo registry: forms, states, parallel writers,
UTC and site time across a DST change, hostile input, a corrupt store."""

from __future__ import annotations

import datetime
import multiprocessing
import sqlite3

import pytest

from ipm_tools import PROJECT_ROOT
from ipm_tools.support.tickets import MAX_TEXT, SCHEMA_VERSION, TicketError, TicketStore, UnknownTicket, times

REGISTRY = str(PROJECT_ROOT / "inventories" / "demo")
UTC = datetime.UTC


@pytest.fixture
def store(tmp_path):
    return TicketStore(tmp_path / "support", registry=REGISTRY)


def _error(store, **changes):
    form = dict(
        customer="parkcite",
        severity="major",
        symptoms="the payment terminal refuses cards",
        contact="Julien Petit",
        terminal="fr-pgl-001",
        actor="alice",
    )
    form.update(changes)
    return store.open_error(**form)


# -- forms ---------------------------------------------------------------------------------


def test_error_report_on_a_terminal_takes_the_site_and_its_language(store):
    ticket = _error(store)
    assert (ticket.id, ticket.kind, ticket.status, ticket.maintenance_type) == ("INC-1", "error", "open", "corrective")
    assert (ticket.site, ticket.timezone, ticket.language) == ("paris-gare-de-lyon", "Europe/Paris", "fr")
    assert store.get("inc-1") == ticket  # ids are read case-insensitively
    assert [e.kind for e in store.events("INC-1")] == ["opened"]
    assert _error(store).id == "INC-2"


def test_feature_request_is_evolutive_and_numbered_apart(store):
    _error(store)
    request = store.open_request("kansai-mobility", "a receipt in Japanese", "Haruto Sato", actor="bob")
    assert (request.id, request.kind, request.maintenance_type, request.severity) == (
        "REQ-1",
        "request",
        "evolutive",
        None,
    )
    assert request.language == "ja"  # no site: the customer contact's language
    assert store.open_request("harbour-parking", "x", "Olivia", language="DE", actor="bob").language == "de"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"customer": "nobody"}, "customer 'nobody': not in the registry"),
        ({"terminal": "xx-999"}, "terminal 'xx-999': not in the registry"),
        ({"customer": "harbour-parking"}, "terminal fr-pgl-001 belongs to another customer, not to harbour-parking"),
        ({"terminal": None, "site": "nowhere"}, "site 'nowhere': not a site of customer parkcite"),
        ({"terminal": None}, "names a site or a terminal"),
        ({"severity": "urgent"}, "severity 'urgent': expected one of critical, major, minor, temporary"),
        ({"language": "xx"}, "language 'xx': expected an ISO 639-1 code"),
        ({"symptoms": "   "}, "symptoms: expected some text"),
        ({"contact": "a\nb"}, "contact: control character '\\n'"),
        ({"site": "paris-gare-de-lyon", "terminal": "fr-pgl-001"}, None),  # consistent: accepted
    ],
)
def test_forms_are_checked_against_the_registry(store, changes, message):
    if message is None:
        assert _error(store, **changes).site == "paris-gare-de-lyon"
        return
    with pytest.raises(TicketError) as caught:
        _error(store, **changes)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert store.list() == []  # nothing recorded


def test_a_site_of_another_customer_is_refused(store):
    harbour_site = next(
        s["id"] for d in store.fleet().customers if d["customer"]["id"] == "harbour-parking" for s in d["sites"]
    )
    with pytest.raises(TicketError, match=f"site '{harbour_site}': not a site of customer parkcite"):
        _error(store, terminal=None, site=harbour_site)


# -- states --------------------------------------------------------------------------------


def test_the_life_of_a_ticket(store):
    ticket = _error(store)
    store.comment(ticket.id, "alice", "looking at it", first_response=True)
    store.wait(ticket.id, "alice", "send a photo of the screen")
    assert store.get(ticket.id).status == "waiting"
    store.resume(ticket.id, "bob", "photo received")
    store.note(ticket.id, "runner", "collect_diagnostics started", kind="job_started", data={"job": "j1"})
    store.note(ticket.id, "runner", "collect_diagnostics ok", kind="job_finished", data={"rc": 0})
    store.resolve(ticket.id, "bob", "card reader reseated")
    store.close(ticket.id, "bob")
    final = store.get(ticket.id)
    kinds = [e.kind for e in store.events(ticket.id)]
    assert kinds == [
        "opened",
        "first_response",
        "waiting",
        "resumed",
        "job_started",
        "job_finished",
        "resolved",
        "closed",
    ]
    assert [e.seq for e in store.events(ticket.id)] == list(range(1, 9))
    assert final.status == "closed" and final.resolution == "card reader reseated"
    assert final.first_response_utc == store.events(ticket.id)[1].at_utc  # the comment, not the later job
    assert store.events(ticket.id)[4].data == {"job": "j1"}


def test_a_first_job_counts_as_first_response_and_close_resolves(store):
    ticket = _error(store)
    started = store.note(ticket.id, "runner", "job", kind="job_started")
    assert store.get(ticket.id).first_response_utc == started.at_utc
    store.close(ticket.id, "alice", "restarted the app")
    assert [e.kind for e in store.events(ticket.id)][-2:] == ["resolved", "closed"]
    assert store.get(ticket.id).resolved_utc == store.get(ticket.id).closed_utc


@pytest.mark.parametrize(
    ("steps", "refused", "message"),
    [
        ([], ("resume",), "is not waiting (it is open); only a waiting ticket can be resumed"),
        (["wait"], ("wait",), "is waiting on the customer already"),
        (["close"], ("close",), "is closed already"),
        (["close"], ("comment",), "is closed"),
        (["close"], ("note",), "is closed"),
        (["close"], ("wait",), "is closed"),
        (["resolve"], ("resolve",), "is resolved already"),
        (["resolve"], ("resume",), "is resolved, not waiting"),
        (["resolve"], ("wait",), "is resolved; only an open ticket can wait"),
        (["first"], ("first",), "had its first response at"),
        ([], ("close_bare",), "closing it needs a resolution"),
    ],
)
def test_illegal_transitions_are_refused_in_one_line(store, steps, refused, message):
    ticket = _error(store)
    calls = {
        "wait": lambda: store.wait(ticket.id, "a", "why"),
        "resume": lambda: store.resume(ticket.id, "a"),
        "resolve": lambda: store.resolve(ticket.id, "a", "fixed"),
        "close": lambda: store.close(ticket.id, "a", "fixed"),
        "close_bare": lambda: store.close(ticket.id, "a"),
        "comment": lambda: store.comment(ticket.id, "a", "hello"),
        "note": lambda: store.note(ticket.id, "a", "job", kind="job_started"),
        "first": lambda: store.comment(ticket.id, "a", "hi", first_response=True),
    }
    for step in steps:
        calls[step]()
    before = store.events(ticket.id)
    with pytest.raises(TicketError) as caught:
        calls[refused[0]]()
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"ticket {ticket.id} ")
    assert store.events(ticket.id) == before  # a refused change records nothing


def test_a_job_ending_after_its_ticket_was_closed_is_still_recorded(store):
    ticket = _error(store)
    store.note(ticket.id, "runner", "job started", kind="job_started")
    store.close(ticket.id, "alice", "fixed by hand meanwhile")
    finished = store.note(ticket.id, "runner", "job ended", kind="job_finished", data={"rc": 0})
    assert (finished.seq, store.get(ticket.id).status) == (5, "closed")
    with pytest.raises(TicketError, match="is closed"):
        store.note(ticket.id, "runner", "another job", kind="job_started")


def test_unknown_tickets(store):
    with pytest.raises(UnknownTicket, match="no tickets yet"):
        store.comment("INC-1", "a", "x")
    _error(store)
    with pytest.raises(UnknownTicket, match="ticket INC-7: unknown"):
        store.get("INC-7")
    with pytest.raises(UnknownTicket, match="ticket REQ-1: unknown"):
        store.close("REQ-1", "a", "x")
    for bad in ("7", "INC-0", "INC-1; DROP TABLE tickets", "../INC-1"):
        with pytest.raises(TicketError, match="expected INC-<n>"):
            store.get(bad)


def test_folder_is_created_on_demand_for_known_tickets(store):
    ticket = _error(store)
    folder = store.folder(ticket.id)
    assert folder == store.support_dir / "tickets" / "INC-1" and folder.is_dir()
    with pytest.raises(UnknownTicket):
        store.folder("INC-2")
    assert not (store.support_dir / "tickets" / "INC-2").exists()


# -- parallel writers ----------------------------------------------------------------------

WRITERS = 8
PER_WRITER = 15


def _writer(support_dir, ticket_id, number, start):
    store = TicketStore(support_dir, registry=REGISTRY)
    start.wait()
    for i in range(PER_WRITER):
        store.note(ticket_id, f"job{number}", f"w{number}-{i}", kind="job", data={"writer": number, "i": i})
    # A ticket opened by every writer too: ids are allocated inside the transaction.
    store.open_request("metro-transit", f"request of writer {number}", "ops", actor=f"job{number}")


def test_eight_parallel_writers_lose_and_duplicate_nothing(store):
    ticket = _error(store)
    context = multiprocessing.get_context("fork")
    start = context.Barrier(WRITERS)
    workers = [
        context.Process(target=_writer, args=(str(store.support_dir), ticket.id, n, start)) for n in range(WRITERS)
    ]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join(120)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
    assert [w.exitcode for w in workers] == [0] * WRITERS
    events = store.events(ticket.id)
    assert [e.seq for e in events] == list(range(1, 2 + WRITERS * PER_WRITER))
    texts = sorted(e.text for e in events[1:])
    assert texts == sorted(f"w{n}-{i}" for n in range(WRITERS) for i in range(PER_WRITER))
    for n in range(WRITERS):  # each writer's own events in its own order
        mine = [e.data["i"] for e in events if e.data.get("writer") == n]
        assert mine == list(range(PER_WRITER))
    requests = sorted(t.id for t in store.list() if t.kind == "request")
    assert requests == sorted(f"REQ-{n}" for n in range(1, WRITERS + 1))
    connection = sqlite3.connect(store.path)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        connection.close()


# -- times ---------------------------------------------------------------------------------


class Clock:
    def __init__(self, moment):
        self.moment = moment

    def __call__(self):
        return self.moment


def test_utc_and_site_time_across_the_spring_dst_change(tmp_path):
    # Europe/Paris moves from +01:00 to +02:00 at 01:00 UTC on 28 March 2027.
    clock = Clock(datetime.datetime(2027, 3, 28, 0, 30, tzinfo=UTC))
    store = TicketStore(tmp_path, registry=REGISTRY, clock=clock)
    ticket = _error(store)
    clock.moment = datetime.datetime(2027, 3, 28, 1, 30, tzinfo=UTC)
    store.comment(ticket.id, "alice", "an hour later", first_response=True)
    opened, answered = store.events(ticket.id)
    assert opened.at_utc == "2027-03-28T00:30:00.000000Z" and answered.at_utc == "2027-03-28T01:30:00.000000Z"
    assert times(opened.at_utc, ticket.timezone) == ("2027-03-28T00:30:00.000000Z", "2027-03-28T01:30:00.000000+01:00")
    assert times(answered.at_utc, ticket.timezone)[1] == "2027-03-28T03:30:00.000000+02:00"


def test_times_are_stored_in_utc_whatever_the_clock_zone(tmp_path):
    tokyo = datetime.timezone(datetime.timedelta(hours=9))
    store = TicketStore(tmp_path, registry=REGISTRY, clock=Clock(datetime.datetime(2027, 1, 5, 9, 0, tzinfo=tokyo)))
    assert _error(store).opened_utc == "2027-01-05T00:00:00.000000Z"


# -- hostile input -------------------------------------------------------------------------


def test_sql_looking_and_unicode_text_is_stored_verbatim(store):
    hostile = 'x\'); DROP TABLE tickets; -- "quoted" %s ? :name \\ é 東京 🅿'
    ticket = _error(store, symptoms=hostile, contact="O'Brien; --")
    store.comment(ticket.id, "alice", hostile)
    again = store.get(ticket.id)
    assert again.summary == hostile and again.contact == "O'Brien; --"
    assert [e.text for e in store.events(ticket.id)] == [hostile, hostile]
    assert len(store.list()) == 1


def test_long_text_up_to_the_limit_is_kept_whole_beyond_it_refused(store):
    exact = ("0123456789" * (MAX_TEXT // 10 + 1))[:MAX_TEXT]
    ticket = _error(store, symptoms=exact)
    assert store.get(ticket.id).summary == exact
    with pytest.raises(TicketError, match=f"comment: {MAX_TEXT + 1} characters, at most {MAX_TEXT}"):
        store.comment(ticket.id, "alice", exact + "!")
    with pytest.raises(TicketError, match="contact: 201 characters"):
        _error(store, contact="c" * 201)
    assert len(store.events(ticket.id)) == 1


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x07", "\x7f", "\x0c"])
def test_control_characters_are_refused(store, char):
    with pytest.raises(TicketError, match="symptoms: control character"):
        _error(store, symptoms=f"screen shows {char}[31m red")
    assert store.list() == []


def test_newlines_and_tabs_are_kept_carriage_returns_folded(store):
    ticket = _error(store, symptoms="line one\r\n\tline two")
    assert store.get(ticket.id).summary == "line one\n\tline two"


# -- the file ------------------------------------------------------------------------------


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path):
    support = tmp_path / "support"
    support.mkdir()
    garbage = b"this is not a database\n" * 200
    (support / "tickets.sqlite").write_bytes(garbage)
    store = TicketStore(support, registry=REGISTRY)
    for attempt in (store.list, lambda: store.get("INC-1"), lambda: _error(store)):
        with pytest.raises(TicketError, match=r"not a usable ticket database .* left as it is"):
            attempt()
    assert (support / "tickets.sqlite").read_bytes() == garbage
    assert sorted(p.name for p in support.iterdir()) == ["tickets.sqlite"]


def test_a_truncated_store_is_refused_and_left_alone(store):
    _error(store)
    # A clean copy without its WAL, then cut in half: the header survives, the pages do not.
    whole = sqlite3.connect(store.path)
    whole.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    whole.close()
    data = store.path.read_bytes()
    store.path.write_bytes(data[: len(data) // 2])
    for name in ("tickets.sqlite-wal", "tickets.sqlite-shm"):
        (store.support_dir / name).unlink(missing_ok=True)
    cut = store.path.read_bytes()
    with pytest.raises(TicketError) as caught:
        store.list()
        store.comment("INC-1", "alice", "x")
    assert "tickets.sqlite" in str(caught.value) and "\n" not in str(caught.value)
    assert store.path.read_bytes() == cut


def test_an_sqlite_file_of_something_else_is_not_taken_over(tmp_path):
    path = tmp_path / "tickets.sqlite"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE photos (name TEXT)")
    other.execute("INSERT INTO photos VALUES ('cat')")
    other.commit()
    other.close()
    store = TicketStore(tmp_path, registry=REGISTRY)
    with pytest.raises(TicketError, match="an SQLite file holding other tables"):
        _error(store)
    check = sqlite3.connect(path)
    try:
        assert check.execute("SELECT name FROM sqlite_master").fetchall() == [("photos",)]
        assert check.execute("PRAGMA user_version").fetchone()[0] == 0
    finally:
        check.close()


def test_a_store_from_a_newer_version_is_refused(store):
    _error(store)
    connection = sqlite3.connect(store.path)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(TicketError, match="newer than this tool's"):
        store.list()


def test_reading_a_missing_store_creates_nothing(tmp_path):
    store = TicketStore(tmp_path / "nowhere", registry=REGISTRY)
    assert store.list() == []
    with pytest.raises(UnknownTicket):
        store.get("INC-1")
    assert not (tmp_path / "nowhere").exists()
