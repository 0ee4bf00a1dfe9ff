"""Audit logs for the report tests and benchmark, written with the collection's own AuditWriter.

The records have the shape the ``ipm.fleet.audit`` callback writes (run_start, task, run_end, signed
checkpoints) and the delivery module's arguments; times are given by a clock so a period is known.
"""

from __future__ import annotations

import datetime
import random
import uuid

from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_context import utc_and_site_time
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import AuditWriter, utc_iso

SITES = (
    ("parkcite", "paris-bercy", "Europe/Paris"),
    ("parkcite", "lyon-part-dieu", "Europe/Paris"),
    ("harbour-parking", "sydney-darling", "Australia/Sydney"),
    ("metro-transit", "chicago-loop", "America/Chicago"),
)
KINDS = ("release", "parameters", "patch")
RESULTS = ("delivered", "already_current", "baked", "rolled_back", "failed", "deferred")
TYPES = ("preventive", "corrective", "evolutive", None)


class Clock:
    def __init__(self, start: datetime.datetime):
        self.now = start

    def __call__(self) -> str:
        return utc_iso(self.now)


def write_log(
    path,
    key,
    *,
    start,
    runs,
    terminals_per_run,
    tasks_per_terminal=3,
    seed=1,
    sites=SITES,
    extra=None,
    run_gap=datetime.timedelta(minutes=40),
    terminals_per_site=50,
    expect=True,
):
    """Write RUNS runs from START (RUN_GAP between two) and return the expected counts per customer.

    Each run touches TERMINALS_PER_RUN terminals of one site; each terminal gets TASKS_PER_TERMINAL plain
    task results, one ``ipm.fleet.delivery`` result and, every third run, one ``ipm.fleet.backup``.
    EXTRA: list of (kind, data) records appended at the end (authorization records, emergencies).
    """
    rng = random.Random(seed)
    clock = Clock(start)
    expected: dict = {}
    writer = AuditWriter(path, key=key, clock=clock).open()
    try:
        for number in range(runs):
            customer, site, zone = sites[number % len(sites)]
            mtype = TYPES[number % len(TYPES)]
            kind = KINDS[number % len(KINDS)]
            run_id = str(uuid.UUID(int=rng.getrandbits(128)))
            operator = "op%d" % (number % 3)
            writer.append(
                "run_start",
                {
                    "run": run_id,
                    "operator": operator,
                    "operator_source": "extra_var:ipm_operator",
                    "playbook": "/srv/ipm/playbooks/%s.yml"
                    % {"release": "rollout", "parameters": "parameters", "patch": "patch"}[kind],
                    "check_mode": False,
                    "change_id": "CHG-%d" % number,
                    "ticket_id": None,
                    "maintenance_type": mtype,
                },
            )
            stats = expected.setdefault(
                customer,
                {
                    "release": 0,
                    "parameters": 0,
                    "patch": 0,
                    "backups": 0,
                    "runs": 0,
                    "terminals": set(),
                    "seconds": 0.0,
                    "changed": {},
                },
            )
            stats["runs"] += 1
            for index in range(terminals_per_run):
                terminal = "%s-%03d" % (site, (number + index) % terminals_per_site)
                if expect:
                    stats["terminals"].add(terminal)
                for step in range(tasks_per_terminal + 2 + (number % 3 == 0)):
                    clock.now += datetime.timedelta(seconds=1)
                    ended, site_time = utc_and_site_time(clock.now.timestamp(), zone)
                    duration = 0.5 + step * 0.25
                    data = {
                        "run": run_id,
                        "host": terminal,
                        "terminal": terminal,
                        "customer": customer,
                        "site": site,
                        "site_timezone": zone,
                        "play": "Roll out",
                        "task": "step %d" % step,
                        "task_path": "/srv/ipm/roles/x/tasks/main.yml:%d" % step,
                        "module": "ansible.builtin.command",
                        "status": "ok",
                        "changed": step == 0,
                        "ignore_errors": False,
                        "check_mode": False,
                        "started": ended,
                        "ended": ended,
                        "site_time": site_time,
                        "duration_s": duration,
                        "args": {"cmd": "true"},
                    }
                    if step == tasks_per_terminal:
                        result = RESULTS[(number + index) % len(RESULTS)]
                        data.update(
                            module="ipm.fleet.delivery",
                            task="Record the delivery",
                            changed=False,
                            args={
                                "kind": kind,
                                "release": "2.4.0",
                                "from_version": "2.3.1",
                                "result": result,
                                "reason": "",
                            },
                        )
                        stats[kind] += 1
                    elif step == tasks_per_terminal + 2:
                        data.update(module="ipm.fleet.backup", task="Back up the terminal into the store", changed=True)
                        stats["backups"] += 1
                    if data["changed"]:
                        stats["changed"][operator] = stats["changed"].get(operator, 0) + 1
                    stats["seconds"] += duration
                    writer.append("task", data)
            clock.now += run_gap
            writer.append("run_end", {"run": run_id, "hosts": {}, "totals": {}, "records": 0}, checkpoint="run_end")
        for kind, data in extra or ():
            clock.now += datetime.timedelta(seconds=5)
            writer.append(kind, data)
    finally:
        writer.close()
    return expected
