"""The three reports as documents: title, verification status, sections of tables and charts.

A document is plain data; :mod:`.html` renders it, :func:`tables_csv` and :func:`document_json` write
the same tables. Every label goes through the language's catalog, every value through its formats.
"""

from __future__ import annotations

import csv
import datetime
import io
import json

from ipm_tools.report import charts

RESULT_LABELS = {
    "delivered": "delivered",
    "already_current": "already current",
    "baked": "baked",
    "rolled_back": "rolled back",
    "failed": "failed",
    "deferred": "deferred",
    "incompatible": "incompatible",
    "not_reached": "not reached",
    "reboot_pending": "reboot pending",
    "ok": "ok",
}
MAINTENANCE_LABELS = {
    "preventive": "preventive",
    "corrective": "corrective",
    "evolutive": "evolutive",
    "unspecified": "unspecified",
    "total": "total",
}
SEVERITY_LABELS = {
    "critical": "critical",
    "major": "major",
    "minor": "minor",
    "temporary": "temporary",
}
AUTHORIZATION_LABELS = {
    "authorization_denied": "authorization denied",
    "change_requested": "change requested",
    "change_approved": "change approved",
}


def _result(f, value):
    label = RESULT_LABELS.get(value)
    return f._(label) if label else str(value or "-")


def _table(table_id, columns, rows, cells, footer=None):
    return {"id": table_id, "columns": columns, "rows": rows, "cells": cells, "footer": footer}


def _status(f, verification):
    if verification is None:
        return {"ok": None, "text": f._("Audit log not verified")}
    if verification["ok"]:
        text = f._("Audit log verified: chain, hashes and signed checkpoints are intact.")
        if not verification["signed"]:
            text = f._("Audit log chain verified without the checkpoint key (a re-hashed forgery would pass).")
        return {"ok": True, "text": text}
    return {
        "ok": False,
        "text": f._("AUDIT LOG VERIFICATION FAILED: %(problem)s") % {"problem": verification["problem"]},
    }


def _head_meta(f, data, verification):
    head = data["head"]
    meta = [
        (f._("Records read"), f.number(data["records"])),
        (f._("Head record the report was computed from"), "seq %s, %s" % (head["seq"], head["hash"] or "-")),
    ]
    if verification is not None and verification.get("problem"):
        meta.append((f._("First bad record"), verification["problem"]))
    return meta


def _period_meta(f, data, zone):
    period = data["period"]
    start = datetime.datetime.fromisoformat(period["start"])
    end = datetime.datetime.fromisoformat(period["end"])
    return (
        f._("Period"),
        "%s - %s (%s)"
        % (
            f.moment(start.strftime("%Y-%m-%dT%H:%M:%S.000000Z"), zone),
            f.moment(end.strftime("%Y-%m-%dT%H:%M:%S.000000Z"), zone),
            period["period"],
        ),
    )


def _delivery_table(f, table_id, rows):
    columns = [
        ("time", f._("Time (site)")),
        ("terminal", f._("Terminal")),
        ("site", f._("Site")),
        ("release", f._("Release")),
        ("result", f._("Result")),
        ("operator", f._("Operator")),
        ("change_id", f._("Change")),
    ]
    cells = [
        [
            f.moment(r["time"], r.get("timezone")),
            r["terminal"] or "-",
            r["site"] or "-",
            "%s → %s" % (r.get("from_version") or "-", r.get("release") or "-"),
            _result(f, r["result"]),
            r.get("operator") or "-",
            r.get("change_id") or "-",
        ]
        for r in rows
    ]
    footer = [f._("Total"), f.number(len(rows)), "", "", "", "", ""]
    return _table(table_id, columns, rows, cells, footer)


def maintenance(f, data, *, customer, drift_rows, incidents, verification, zone, hourly_rate=None, currency=None):
    """The maintenance report of a customer for a period."""
    sections = []
    sections.append(
        {
            "id": "deliveries",
            "title": f._("Release deliveries"),
            "note": f.n_("%(num)s delivery attempt", "%(num)s delivery attempts", len(data["deliveries"])),
            "tables": [_delivery_table(f, "deliveries", data["deliveries"])],
            "charts": [
                charts.bars(
                    f._("Deliveries per week"),
                    list(data["deliveries_per_week"]),
                    [(f._("Deliveries"), list(data["deliveries_per_week"].values()), "main")],
                )
            ],
        }
    )
    sections.append(
        {
            "id": "parameters",
            "title": f._("Parameter changes"),
            "note": f.n_("%(num)s parameter change", "%(num)s parameter changes", len(data["parameter_changes"])),
            "tables": [_delivery_table(f, "parameter_changes", data["parameter_changes"])],
            "charts": [],
        }
    )
    sections.append(
        {
            "id": "patches",
            "title": f._("OS patches"),
            "note": f.n_("%(num)s patch run on a terminal", "%(num)s patch runs on terminals", len(data["patches"])),
            "tables": [_delivery_table(f, "patches", data["patches"])],
            "charts": [],
        }
    )
    backup_rows = data["backups"]
    sections.append(
        {
            "id": "backups",
            "title": f._("Backups"),
            "note": f.n_("%(num)s backup", "%(num)s backups", len(backup_rows)),
            "tables": [
                _table(
                    "backups",
                    [
                        ("time", f._("Time (site)")),
                        ("terminal", f._("Terminal")),
                        ("site", f._("Site")),
                        ("result", f._("Result")),
                        ("operator", f._("Operator")),
                    ],
                    backup_rows,
                    [
                        [
                            f.moment(r["time"], r.get("timezone")),
                            r["terminal"] or "-",
                            r["site"] or "-",
                            _result(f, r["result"]),
                            r.get("operator") or "-",
                        ]
                        for r in backup_rows
                    ],
                    [f._("Total"), f.number(len(backup_rows)), "", "", ""],
                )
            ],
            "charts": [],
        }
    )
    sections.append(_incidents(f, incidents))
    by_site = drift_rows["by_site"]
    drift_table = _table(
        "drift",
        [
            ("site", f._("Site")),
            ("terminals", f._("Terminals")),
            ("drifted", f._("Drifted")),
            ("no_snapshot", f._("Without a snapshot")),
        ],
        [dict(counts, site=site) for site, counts in by_site.items()],
        [
            [site, f.number(c["terminals"]), f.number(c["drifted"]), f.number(c["no_snapshot"])]
            for site, c in by_site.items()
        ],
        [
            f._("Total"),
            f.number(sum(c["terminals"] for c in by_site.values())),
            f.number(sum(c["drifted"] for c in by_site.values())),
            f.number(sum(c["no_snapshot"] for c in by_site.values())),
        ],
    )
    drifted = sum(c["drifted"] for c in by_site.values())
    sections.append(
        {
            "id": "drift",
            "title": f._("Drift from the registry at the end of the period"),
            "note": f.n_("%(num)s terminal drifted", "%(num)s terminals drifted", drifted)
            if drift_rows["available"]
            else f._("No configuration history given: drift not computed."),
            "tables": [drift_table],
            "charts": [
                charts.bars(
                    f._("Drift by site"),
                    list(by_site),
                    [
                        (
                            f._("In line"),
                            [c["terminals"] - c["drifted"] - c["no_snapshot"] for c in by_site.values()],
                            "good",
                        ),
                        (f._("Drifted"), [c["drifted"] for c in by_site.values()], "bad"),
                        (f._("Without a snapshot"), [c["no_snapshot"] for c in by_site.values()], "muted"),
                    ],
                )
            ],
        }
    )
    effort_rows = data["effort"]
    columns = [
        ("maintenance_type", f._("Maintenance type")),
        ("operations", f._("Operations")),
        ("terminals", f._("Terminals touched")),
        ("tasks", f._("Task results")),
        ("hours", f._("Hours on terminals")),
    ]
    if hourly_rate is not None and currency:
        columns.append(("cost", f._("Cost")))

    def effort_cells(r):
        cells = [
            f._(MAINTENANCE_LABELS.get(r["maintenance_type"], r["maintenance_type"])),
            f.number(r["operations"]),
            f.number(r["terminals"]),
            f.number(r["tasks"]),
            f.number(float(r["hours"])),
        ]
        if len(columns) == 6:
            cells.append(f.currency(r["hours"] * hourly_rate, currency))
        return cells

    sections.append(
        {
            "id": "effort",
            "title": f._("Effort"),
            "note": f.n_("%(num)s terminal touched", "%(num)s terminals touched", data["effort_total"]["terminals"]),
            "tables": [
                _table(
                    "effort",
                    columns,
                    effort_rows,
                    [effort_cells(r) for r in effort_rows],
                    effort_cells(data["effort_total"]),
                )
            ],
            "charts": [],
        }
    )
    meta = [
        (f._("Customer"), customer["name"] if customer else data["customer"]),
        _period_meta(f, data, zone),
        *_head_meta(f, data, verification),
    ]
    return {
        "kind": "maintenance",
        "lang": f.language,
        "title": f._("Maintenance report"),
        "subtitle": "%s, %s" % (customer["name"] if customer else data["customer"], data["period"]["period"]),
        "status": _status(f, verification),
        "meta": meta,
        "sections": sections,
        "data": data,
    }


def _incidents(f, incidents):
    if incidents is None:
        return {
            "id": "incidents",
            "title": f._("Incidents and SLA"),
            "note": f._("No support data directory: incidents and SLA are not reported."),
            "tables": [],
            "charts": [],
        }
    met = sum(1 for r in incidents if r["sla"] == "met")
    breached = sum(1 for r in incidents if r["sla"] == "breached")
    sla_label = {"met": f._("met"), "breached": f._("breached"), "running": f._("running")}
    return {
        "id": "incidents",
        "title": f._("Incidents and SLA"),
        "note": f.n_("%(num)s incident", "%(num)s incidents", len(incidents)),
        "tables": [
            _table(
                "incidents",
                [
                    ("ticket", f._("Ticket")),
                    ("opened", f._("Opened (site)")),
                    ("severity", f._("Severity")),
                    ("terminal", f._("Terminal")),
                    ("sla", f._("SLA")),
                ],
                incidents,
                [
                    [
                        r["ticket"],
                        f.moment(r["opened"], r.get("timezone")),
                        f._(SEVERITY_LABELS[r["severity"]]) if r.get("severity") in SEVERITY_LABELS else "-",
                        r.get("terminal") or "-",
                        sla_label.get(r["sla"], r["sla"]),
                    ]
                    for r in incidents
                ],
                [f._("Total"), f.number(len(incidents)), "", "", "%s / %s" % (f.number(met), f.number(breached))],
            )
        ],
        "charts": [
            charts.bars(
                f._("SLA met vs breached"),
                [f._("met"), f._("breached")],
                [(f._("Incidents"), [met, breached], "main")],
            )
        ],
    }


def audit(f, data, *, verification):
    """The audit report of a period: verification, changes by operator, authorizations, emergencies."""
    operators = data["changes_by_operator"]
    sections = [
        {
            "id": "changes",
            "title": f._("Changes by operator"),
            "note": f.n_("%(num)s change", "%(num)s changes", sum(operators.values())),
            "tables": [
                _table(
                    "changes_by_operator",
                    [("operator", f._("Operator")), ("changes", f._("Changes"))],
                    [{"operator": k, "changes": v} for k, v in operators.items()],
                    [[k, f.number(v)] for k, v in operators.items()],
                    [f._("Total"), f.number(sum(operators.values()))],
                )
            ],
            "charts": [],
        }
    ]
    counts = data["authorization"]
    sections.append(
        {
            "id": "authorization",
            "title": f._("Denials and approvals"),
            "note": "",
            "tables": [
                _table(
                    "authorization",
                    [("kind", f._("Record kind")), ("count", f._("Count"))],
                    [{"kind": k, "count": v} for k, v in counts.items()],
                    [[f._(AUTHORIZATION_LABELS[k]), f.number(v)] for k, v in counts.items()],
                    [f._("Total"), f.number(sum(counts.values()))],
                )
            ],
            "charts": [],
        }
    )
    rows = data["emergencies"]
    sections.append(
        {
            "id": "emergencies",
            "title": f._("Emergency window overrides"),
            "note": f.n_("%(num)s emergency override", "%(num)s emergency overrides", len(rows)),
            "tables": [
                _table(
                    "emergencies",
                    [
                        ("time", f._("Time (site)")),
                        ("terminal", f._("Terminal")),
                        ("operator", f._("Operator")),
                        ("change_id", f._("Change")),
                        ("justification", f._("Justification")),
                    ],
                    rows,
                    [
                        [
                            f.moment(r["time"], r.get("timezone")),
                            r.get("terminal") or "-",
                            r.get("operator") or "-",
                            r.get("change_id") or "-",
                            r["justification"],
                        ]
                        for r in rows
                    ],
                    [f._("Total"), f.number(len(rows)), "", "", ""],
                )
            ],
            "charts": [],
        }
    )
    return {
        "kind": "audit",
        "lang": f.language,
        "title": f._("Audit report"),
        "subtitle": data["period"]["period"],
        "status": _status(f, verification),
        "meta": [_period_meta(f, data, "UTC"), *_head_meta(f, data, verification)],
        "sections": sections,
        "data": data,
    }


def site(f, *, site_doc, customer, terminals, as_of, zone):
    """Configuration of every terminal of a site as of a date (from the configuration history)."""
    summary_rows, summary_cells, parameter_rows, parameter_cells = [], [], [], []
    for row in terminals:
        snapshot = row["snapshot"]
        facts = (snapshot or {}).get("facts") or {}
        application = facts.get("application") or {}
        os_facts = facts.get("os") or {}
        summary_rows.append(
            {
                "terminal": row["terminal"],
                "model": row["model"],
                "snapshot": snapshot["taken_at"] if snapshot else None,
                "release": application.get("current"),
                "os": os_facts.get("id"),
            }
        )
        taken = snapshot["taken_at"] if snapshot else None
        summary_cells.append(
            [
                row["terminal"],
                row["model"] or "-",
                f.moment(
                    datetime.datetime.fromisoformat(taken).astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    zone,
                )
                if taken
                else f._("no snapshot"),
                application.get("current") or "-",
                os_facts.get("id") or "-",
            ]
        )
        values = (facts.get("parameters") or {}).get("values") or {}
        for name, value in sorted(values.items()):
            parameter_rows.append({"terminal": row["terminal"], "parameter": name, "value": value})
            parameter_cells.append(
                [row["terminal"], name, json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value]
            )
    with_snapshot = sum(1 for r in terminals if r["snapshot"])
    sections = [
        {
            "id": "terminals",
            "title": f._("Terminals"),
            "note": f.n_("%(num)s terminal", "%(num)s terminals", len(terminals)),
            "tables": [
                _table(
                    "terminals",
                    [
                        ("terminal", f._("Terminal")),
                        ("model", f._("Model")),
                        ("snapshot", f._("Snapshot (site)")),
                        ("release", f._("Release")),
                        ("os", f._("Operating system")),
                    ],
                    summary_rows,
                    summary_cells,
                    [f._("Total"), f.number(len(terminals)), f.number(with_snapshot), "", ""],
                )
            ],
            "charts": [],
        },
        {
            "id": "parameters",
            "title": f._("Parameters"),
            "note": "",
            "tables": [
                _table(
                    "parameters",
                    [("terminal", f._("Terminal")), ("parameter", f._("Parameter")), ("value", f._("Value"))],
                    parameter_rows,
                    parameter_cells,
                    [f._("Total"), f.number(len(parameter_rows)), ""],
                )
            ],
            "charts": [],
        },
    ]
    return {
        "kind": "site",
        "lang": f.language,
        "title": f._("Site configuration"),
        "subtitle": "%s (%s)" % (site_doc.get("name") or site_doc["id"], customer.get("name") or customer["id"]),
        "status": {"ok": None, "text": ""},
        "meta": [
            (f._("Site"), site_doc["id"]),
            (f._("Configuration as of"), f.moment(as_of, zone)),
        ],
        "sections": sections,
        "data": {"site": site_doc["id"], "as_of": as_of, "terminals": summary_rows, "parameters": parameter_rows},
    }


def tables_csv(document) -> str:
    """Every table of DOCUMENT as one CSV: a ``table`` column, then the table's own columns (raw values)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for section in document["sections"]:
        for table in section["tables"]:
            keys = [key for key, _label in table["columns"]]
            writer.writerow(["table", *keys])
            for row in table["rows"]:
                writer.writerow([table["id"], *(_cell(row.get(key)) for key in keys)])
    return buffer.getvalue()


def _cell(value):
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "" if value is None else value


def document_json(document) -> str:
    tables = {
        table["id"]: {"columns": [key for key, _label in table["columns"]], "rows": table["rows"]}
        for section in document["sections"]
        for table in section["tables"]
    }
    payload = {
        "report": document["kind"],
        "language": document["lang"],
        "title": document["title"],
        "status": document["status"],
        "tables": tables,
        "data": document["data"],
    }
    return json.dumps(payload, indent=1, sort_keys=True, default=str) + "\n"
