"""``ipm-support sla``: tickets in a real SQLite store joined with the demo registry's contracts and sites.

The expected figures are worked out by hand in the comments (site-local times).
"""

from __future__ import annotations

import datetime
import json
import shutil
from zoneinfo import ZoneInfo

import pytest

from ansible_collections.ipm.fleet.plugins.plugin_utils import registry as reg
from ipm_tools import PROJECT_ROOT
from ipm_tools.support import sla
from ipm_tools.support.cli import main
from ipm_tools.support.tickets import TicketError, TicketStore

REGISTRY = str(PROJECT_ROOT / "inventories" / "demo")
SYDNEY, PARIS = ZoneInfo("Australia/Sydney"), ZoneInfo("Europe/Paris")


class Clock:
    def __init__(self):
        self.moment = None

    def __call__(self):
        return self.moment


def at(clock, text, zone):
    clock.moment = datetime.datetime.fromisoformat(text).replace(tzinfo=zone).astimezone(datetime.UTC)
    return clock.moment


@pytest.fixture
def filled(tmp_path):
    """Four tickets whose clocks cross a contract change, Australia Day, 14 July and a pause."""
    clock = Clock()
    store = TicketStore(tmp_path / "support", registry=REGISTRY, clock=clock)
    form = dict(severity="critical", symptoms="card reader dead", contact="Olivia Nguyen", actor="lena")
    # INC-1 Sydney, opened Thu 14 Jan 17:00 (old contract mon-fri 08-18: 1h that day). The amendment of
    # 15 Jan (mon-sat 07-19, critical repair 6h) counts from Fri 07:00: response due 08:00, answered 08:30
    # (breached); repair due 07:00 + 5h = 12:00, resolved 11:00 (met, 5h counted).
    at(clock, "2027-01-14T17:00", SYDNEY)
    store.open_error(customer="harbour-parking", terminal="au-sdh-001", **form)
    at(clock, "2027-01-15T08:30", SYDNEY)
    store.comment("INC-1", "lena", "looking at it", first_response=True)
    at(clock, "2027-01-15T11:00", SYDNEY)
    store.resolve("INC-1", "lena", "reader replaced")
    # INC-2 Sydney, opened Mon 25 Jan 18:30: 0.5h, Tue 26 Jan is Australia Day, Wed 07:00-08:00 1h.
    # At Wed 08:00 nothing answered yet: response due 08:30, 0h30 left; repair due 07:00 + 5h30 = 12:30.
    at(clock, "2027-01-25T18:30", SYDNEY)
    store.open_error(customer="harbour-parking", site="sydney-darling-harbour", **form)
    # INC-3 Paris (parkcite, every day 06-23, major 4h/24h), opened Tue 13 Jul 21:00; a job starts at
    # 22:00 (response met, 1h); waiting on the customer 22:30 -> Fri 16 Jul 09:00 (over 14 July); resolved
    # Fri 18:00: 1.5h + 9h = 10.5h counted, met; repair due: 1.5h + Fri 09-23 14h + Sat 06:00 + 8.5h = 14:30.
    at(clock, "2027-07-13T21:00", PARIS)
    store.open_error(
        customer="parkcite", terminal="fr-pgl-001", severity="major", symptoms="printer jams", contact="Julien Petit",
        actor="lena",
    )  # fmt: skip
    at(clock, "2027-07-13T22:00", PARIS)
    store.note("INC-3", "lena", "restart_app", kind="job_started")
    at(clock, "2027-07-13T22:30", PARIS)
    store.wait("INC-3", "lena", "which printer?")
    at(clock, "2027-07-16T09:00", PARIS)
    store.resume("INC-3", "lena")
    at(clock, "2027-07-16T18:00", PARIS)
    store.resolve("INC-3", "lena", "paper path cleaned")
    # INC-4 Paris, major, opened Tue 13 Jul 22:00: 1h, 14 July skipped, Thu 15 Jul 06:00-07:00 1h.
    at(clock, "2027-07-13T22:00", PARIS)
    store.open_error(
        customer="parkcite", terminal="fr-pgl-002", severity="major", symptoms="screen black", contact="Julien Petit",
        actor="lena",
    )  # fmt: skip
    store.open_request(customer="parkcite", description="a Breton menu", contact="Julien Petit", actor="lena")
    return store, clock


def _by_id(slas):
    return {s.ticket.id: s for s in slas}


def test_contract_change_and_australia_day(filled):
    store, _ = filled
    now = datetime.datetime(2027, 1, 27, 8, 0, tzinfo=SYDNEY).astimezone(datetime.UTC)
    slas = _by_id(sla.report(store, customer="harbour-parking", now=now))
    one, two = slas["INC-1"], slas["INC-2"]
    assert one.response.deadline == datetime.datetime(2027, 1, 15, 8, 0, tzinfo=SYDNEY)
    assert (one.response.state, one.response.counted) == ("breached", datetime.timedelta(hours=2, minutes=30))
    assert one.repair.deadline == datetime.datetime(2027, 1, 15, 12, 0, tzinfo=SYDNEY)
    assert (one.repair.state, one.repair.counted, one.repair.target) == (
        "met",
        datetime.timedelta(hours=5),
        datetime.timedelta(hours=6),
    )
    assert [s.contract for s in one.repair.segments if s.counted] == ["contract", "change from 2027-01-15"]
    assert (one.country, one.region, one.timezone) == ("AU", "NSW", "Australia/Sydney")
    assert two.response.state == "running" and two.response.left == datetime.timedelta(minutes=30)
    assert two.response.deadline == datetime.datetime(2027, 1, 27, 8, 30, tzinfo=SYDNEY)
    assert two.repair.deadline == datetime.datetime(2027, 1, 27, 12, 30, tzinfo=SYDNEY)
    assert "holiday: Australia Day" in [s.reason for s in two.response.segments]
    assert sla.summary(list(slas.values()))["harbour-parking"] == {
        "response": {"met": 0, "breached": 1, "running": 1},
        "repair": {"met": 1, "breached": 0, "running": 1},
    }


def test_pause_over_a_holiday_and_a_holiday_skipped(filled):
    store, _ = filled
    now = datetime.datetime(2027, 7, 15, 7, 0, tzinfo=PARIS)
    slas = _by_id(sla.report(store, customer="parkcite", month="2027-07", now=now))
    assert set(slas) == {"INC-3", "INC-4"}  # the feature request has no clock
    three, four = slas["INC-3"], slas["INC-4"]
    assert (three.response.state, three.response.counted) == ("met", datetime.timedelta(hours=1))
    assert (three.repair.state, three.repair.counted) == ("met", datetime.timedelta(hours=10, minutes=30))
    assert three.repair.deadline == datetime.datetime(2027, 7, 17, 14, 30, tzinfo=PARIS)
    reasons = [s.reason for s in three.repair.segments]
    assert reasons == ["counted", "waiting on customer", "counted"]
    assert four.response.counted == datetime.timedelta(hours=2)
    assert four.response.deadline == datetime.datetime(2027, 7, 15, 9, 0, tzinfo=PARIS)
    assert [s.reason for s in four.response.segments] == [
        "counted",
        "outside coverage",
        "holiday: National Day",
        "outside coverage",
        "counted",
    ]


@pytest.fixture
def run(filled, capsys):
    store, _ = filled

    def run(*argv):
        code = main(["--support-dir", str(store.support_dir), "--registry", REGISTRY, "sla", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_cli_table_json_and_timeline(run):
    code, out, err = run("--now", "2027-07-15T05:00Z")
    assert code == 0 and err == ""
    lines = out.splitlines()
    inc1 = lines.index(next(line for line in lines if line.startswith("INC-1 ")))
    assert "due 2027-01-14 21:00Z (site 2027-01-15 08:00+1100)" in lines[inc1 + 1] and "BREACHED" in lines[inc1 + 1]
    assert "customer harbour-parking: response met 0 breached 2 running 0; repair met 1 breached 1 running 0" in out
    code, out, _ = run("--json", "--month", "2027-07", "--now", "2027-07-15T05:00Z")
    document = json.loads(out)
    assert [t["ticket"] for t in document["tickets"]] == ["INC-3", "INC-4"]
    inc4 = document["tickets"][1]
    assert inc4["response"]["due_utc"] == "2027-07-15T07:00:00Z"
    assert inc4["response"]["due_site"] == "2027-07-15T09:00:00+02:00"
    assert inc4["response"]["left_hours"] == 2.0 and inc4["holidays"] == {"country": "FR", "region": None}
    code, out, _ = run("--ticket", "INC-4", "--now", "2027-07-15T05:00Z")
    assert code == 0 and "response timeline (site time Europe/Paris):" in out
    assert "holiday: National Day" in out and "2027-07-14 06:00+0200 -> 2027-07-14 23:00+0200" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--customer", "nobody"), "customer 'nobody': not in the registry"),
        (("--month", "2027-13"), "--month '2027-13': expected YYYY-MM"),
        (("--ticket", "INC-99"), "INC-99"),
        (("--now", "yesterday"), "--now 'yesterday': expected an ISO 8601 instant"),
    ],
)
def test_cli_mistakes_are_one_line_exit_2(run, argv, message):
    code, out, err = run(*argv)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_request_has_no_clock(run):
    code, out, _ = run("--ticket", "REQ-1")
    assert code == 0 and "no SLA clock" in out


def test_resolved_while_waiting_after_the_deadline_is_breached(tmp_path):
    # parkcite critical: response 1h, repair 4h (every day 06-23). Opened Mon 1 Feb 09:00 Paris, answered
    # 09:10, waiting from 14:00 (5h counted: repair due 13:00, already passed), resolved while still waiting.
    clock = Clock()
    store = TicketStore(tmp_path / "support", registry=REGISTRY, clock=clock)
    at(clock, "2027-02-01T09:00", PARIS)
    store.open_error(
        customer="parkcite", terminal="fr-pgl-001", severity="critical", symptoms="x", contact="y", actor="lena"
    )
    at(clock, "2027-02-01T09:10", PARIS)
    store.comment("INC-1", "lena", "on it", first_response=True)
    at(clock, "2027-02-01T14:00", PARIS)
    store.wait("INC-1", "lena", "send a photo")
    now = at(clock, "2027-02-01T15:00", PARIS)
    waiting = sla.report(store, now=now)[0]
    assert waiting.repair.state == "breached" and waiting.repair.left == -datetime.timedelta(hours=1)
    at(clock, "2027-02-03T10:00", PARIS)
    store.resolve("INC-1", "lena", "fixed")
    done = sla.report(store, now=clock.moment)[0]
    assert done.repair.deadline == datetime.datetime(2027, 2, 1, 13, 0, tzinfo=PARIS)
    assert (done.repair.state, done.repair.counted) == ("breached", datetime.timedelta(hours=5))
    assert done.repair.segments[-1].reason == "waiting on customer"
    # opened and put on hold before anything counted: no deadline while it waits
    at(clock, "2027-02-06T05:00", PARIS)
    store.open_error(
        customer="parkcite", terminal="fr-pgl-001", severity="minor", symptoms="x", contact="y", actor="lena"
    )
    store.wait("INC-2", "lena", "which terminal?")
    held = sla.report(store, now=at(clock, "2027-02-09T05:00", PARIS))[1]
    assert (
        held.repair.deadline is None and held.repair.state == "running" and held.repair.counted == datetime.timedelta()
    )


def _registry_copy(tmp_path, edit):
    root = tmp_path / "registry"
    shutil.copytree(PROJECT_ROOT / "registry" / "demo", root)
    path = root / "customers" / "harbour-parking.yml"
    path.write_text(edit(path.read_text()))
    return root


def test_registry_checks_contract_changes(tmp_path):
    root = _registry_copy(tmp_path, lambda text: text.replace('- from: "2027-01-15"', '- from: "2027-02-30"'))
    _, problems = reg.load_fleet(str(root))
    assert [(p.keys, p.message) for p in problems if "harbour" in str(p.file)] == [
        (("customer", "contract", "changes", 0, "from"), "not a date")
    ]
    moved = tmp_path / "moved"
    twice = """    changes:
      - {from: "2027-03-01", targets: {critical: {response_hours: 1, repair_hours: 4}, major: {response_hours: 8, repair_hours: 48}, minor: {response_hours: 48, repair_hours: 240}, temporary: {response_hours: 24, repair_hours: 72}}}
"""
    moved.mkdir()
    root = _registry_copy(moved, lambda text: text.replace("    changes:\n", twice, 1))
    _, problems = reg.load_fleet(str(root))
    assert [(p.keys, p.message) for p in problems if "harbour" in str(p.file)] == [
        (("customer", "contract", "changes", 1, "from"), "contract changes out of order")
    ]


def test_a_bad_contract_is_one_line_naming_the_file(tmp_path):
    root = _registry_copy(
        tmp_path, lambda text: text.replace('start: "07:00", end: "19:00"', 'start: "07:00", end: "7pm"')
    )
    store = TicketStore(tmp_path / "support", registry=str(root))
    store.open_error(
        customer="harbour-parking", terminal="au-sdh-001", severity="minor", symptoms="x", contact="y", actor="lena"
    )
    with pytest.raises(TicketError) as error:
        sla.report(store)
    assert "customers/harbour-parking.yml" in str(error.value) and "end" in str(error.value)
