"""A facility's computed compliance status, per facility and per asset, with its reasons.

The record's reasons come from `alerting.compliance.Compliance.reasons`, the same code the
alert escalation runs (open and overdue findings, an expired SMK3 certificate, late periodic
reports). This module adds what only the database knows now:
- the record beyond the engine's snapshot: no SMK3 certificate on record, one expiring within
  30 days [A], expired licences, a stop order in force;
- live reasons: a critical alert (priority high or urgent) left unacknowledged longer than
  `critical_ack_sla_s`, and sensor coverage gaps: a sensor silent for 5 of its periods, at
  least 15 s (DOMAIN.md §3, sensor health), at the time asked about.

Status: `non_compliant` when any reason says so, else `attention` when any reason asks for
it, else `compliant`. An asset's status counts the facility-wide reasons too.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row

from alerting.compliance import ATTENTION, NON_COMPLIANT, Reason
from alerting.store import AlertStore, to_dt, to_us

COMPLIANT: Final = "compliant"
SMK3_WARN_DAYS: Final = 30  # [A] a renewal audit takes weeks to arrange
SILENT_PERIODS: Final = 5.0  # [S: DOMAIN.md §3 sensor health] 5 periods ...
SILENT_MIN_S: Final = 15.0  # ... and at least 15 s


def _worst(reasons: list[Reason]) -> str:
    if any(r.severity == NON_COMPLIANT for r in reasons):
        return NON_COMPLIANT
    return ATTENTION if reasons else COMPLIANT


def reason_json(r: Reason) -> dict[str, Any]:
    """A reason as the API gives it."""
    return {
        "code": r.code,
        "severity": r.severity,
        "asset": r.asset,
        "message": r.message,
        "since": to_dt(r.since_us).isoformat() if r.since_us is not None else None,
        "escalates_alerts": r.escalates,
    }


async def compute(
    conn: psycopg.AsyncConnection[Any], schema: str, site: str, at: datetime, *, ack_sla_s: float
) -> dict[str, Any]:
    """The compliance status of a facility at `at`, with reasons, per facility and asset."""
    t_us = to_us(at)
    compliance = await AlertStore.on(conn, schema).compliance()
    reasons = compliance.reasons(site, t_us)
    cur = conn.cursor(row_factory=dict_row)

    await cur.execute(
        "SELECT smk3_expires_on, smk3_certificate FROM facilities WHERE site_id = %s", (site,)
    )
    fac = await cur.fetchone()
    if fac is None or fac["smk3_expires_on"] is None:
        reasons.append(Reason("smk3_missing", ATTENTION, "", "no SMK3 certificate on record"))
    elif not any(r.code == "smk3_expired" for r in reasons):
        left = (fac["smk3_expires_on"] - at.date()).days
        if left < SMK3_WARN_DAYS:
            reasons.append(
                Reason(
                    "smk3_expiring",
                    ATTENTION,
                    "",
                    f"SMK3 certificate expires on {fac['smk3_expires_on']} ({left} days left)",
                )
            )

    await cur.execute(
        "SELECT id, kind, number, expires_on FROM licences WHERE site_id = %s"
        " AND expires_on < %s::date ORDER BY expires_on",
        (site, at),
    )
    for lic in await cur.fetchall():
        reasons.append(
            Reason(
                "licence_expired",
                NON_COMPLIANT,
                "",
                f"{lic['kind']} licence {lic['number']} expired on {lic['expires_on']}",
                to_us(datetime.combine(lic["expires_on"], datetime.min.time(), at.tzinfo))
                + 86_400_000_000,
            )
        )

    await cur.execute(
        "SELECT id, kind, issued_on, reference FROM sanctions WHERE site_id = %s"
        " AND kind = 'stop_order' AND issued_on <= %s::date"
        " AND (lifted_on IS NULL OR lifted_on > %s::date)",
        (site, at, at),
    )
    for s in await cur.fetchall():
        reasons.append(
            Reason(
                "stop_order",
                NON_COMPLIANT,
                "",
                f"stop order {s['reference'] or s['id']} in force since {s['issued_on']}",
                to_us(datetime.combine(s["issued_on"], datetime.min.time(), at.tzinfo)),
            )
        )

    await cur.execute(
        "SELECT id, asset, rule_id, subject, priority, last_change_at FROM alerts"
        " WHERE site_id = %s AND priority IN ('high', 'urgent') AND state IN ('unack', 'rtn_unack')"
        " AND last_change_at <= %s ORDER BY last_change_at",
        (site, at - timedelta(seconds=ack_sla_s)),
    )
    for a in await cur.fetchall():
        reasons.append(
            Reason(
                "critical_unacknowledged",
                NON_COMPLIANT,
                a["asset"],
                f"{a['priority']} alert {a['id']} ({a['rule_id']} on {a['subject']})"
                f" unacknowledged for more than {ack_sla_s:g} s",
                to_us(a["last_change_at"]),
            )
        )

    # The newest reading of each sensor at `at`: one index probe per sensor (primary key
    # (sensor_key, ts)), not a scan of the day's readings.
    await cur.execute(
        "SELECT s.id, s.asset, s.period_s, l.ts FROM sensors s LEFT JOIN LATERAL ("
        " SELECT ts FROM readings r WHERE r.sensor_key = s.key AND r.ts <= %(at)s"
        " AND r.ts > %(at)s - interval '30 days' ORDER BY ts DESC LIMIT 1) l ON true"
        " WHERE s.site_id = %(site)s AND s.retired_at IS NULL ORDER BY s.asset, s.id",
        {"site": site, "at": at},
    )
    sensors = await cur.fetchall()
    assets = sorted({s["asset"] for s in sensors} | {r.asset for r in reasons if r.asset})
    for s in sensors:
        limit = max(SILENT_PERIODS * s["period_s"], SILENT_MIN_S)
        if s["ts"] is None or (at - s["ts"]).total_seconds() > limit:
            since = f"since {s['ts'].isoformat()}" if s["ts"] is not None else "for 30 days"
            reasons.append(
                Reason(
                    "coverage_gap",
                    ATTENTION,
                    s["asset"],
                    f"sensor {s['id']} silent {since}",
                    to_us(s["ts"]) if s["ts"] is not None else None,
                )
            )

    facility_wide = [r for r in reasons if not r.asset]
    return {
        "site": site,
        "at": at.isoformat(),
        "status": _worst(reasons),
        "reasons": [reason_json(r) for r in reasons],
        "assets": [
            {
                "asset": a,
                "status": _worst(facility_wide + [r for r in reasons if r.asset == a]),
                "reasons": [r.code for r in reasons if r.asset == a],
            }
            for a in assets
        ],
    }
