"""The incident timeline of a facility or asset over a window.

Readings are downsampled to min/max/mean/count per bucket. The bucket is the smallest of a
ladder of round widths (1 s ... 7 d) that keeps each series within the point budget, and it
decides the source: raw `readings` (quality bad excluded) below a minute, the per-minute rollup
`readings_1m` up to an hour, the per-hour rollup `readings_1h` from an hour on. A day of 200
sensors thus reads ~290k minute rows, a month ~145k hour rows: a month loads as fast as a day.
Series cover whole buckets, [buckets_from, buckets_to): a rollup row is never cut, so every
source counts the same readings. PostgreSQL builds each series' JSON itself; Python embeds it
unparsed (orjson.Fragment).

Beside the readings: every alert with a transition in the window, or active when it opened,
with its transitions; the operators' actions and comments; permits open at any time in it;
incidents; inspectors' annotations; and the limits in force (the rule pack in force at the
window's end, with each level's source) for the sensors shown or the alerts listed. Derived
signals (panel ΔT, cooling-water imbalance) are computed by the engine and not stored: their
alerts appear, their values do not.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

import orjson
import psycopg
from psycopg.rows import dict_row

from alerting.pack import PackError, parse_pack
from dashboards.records import jsonable

#: Bucket widths, seconds. Those from a minute on are whole minutes, from an hour whole hours,
#: so the rollups can be re-bucketed exactly.
STEPS_S: Final = (
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
    172800,
    604800,
)
MAX_WINDOW: Final = timedelta(days=400)
DEFAULT_POINTS: Final = 600


class TimelineError(ValueError):
    """A window or budget the timeline refuses; the message names the problem."""


def choose_bucket(window_s: float, points: int) -> int:
    """The smallest step that keeps a series of this window within `points` buckets."""
    need = window_s / points
    for step in STEPS_S:
        if step >= need:
            return step
    return STEPS_S[-1]


def source_for(bucket_s: int) -> str:
    """Which table a bucket of this width is computed from."""
    if bucket_s < 60:
        return "readings"
    return "readings_1h" if bucket_s % 3600 == 0 else "readings_1m"


# One index range scan per sensor (key order: the rollups' keys carry their values), each
# series' buckets in time order from its subquery, aggregated into JSON arrays as they come.
_SERIES: Final = {
    "readings": (
        "SELECT public.time_bucket(%(b)s, ts) AS t, min(value) AS mn, max(value) AS mx,"
        " avg(value) AS mean, count(*) AS n FROM readings WHERE sensor_key = s.key"
        " AND ts >= %(f)s AND ts < %(to)s AND quality < 2 GROUP BY 1 ORDER BY 1"
    ),
    "rollup": (
        "SELECT public.time_bucket(%(b)s, bucket) AS t, min(vmin) AS mn, max(vmax) AS mx,"
        " sum(vsum) / sum(n) AS mean, sum(n) AS n FROM {table} WHERE sensor_key = s.key"
        " AND bucket >= %(f)s AND bucket < %(to)s GROUP BY 1 ORDER BY 1"
    ),
}
_OUTER: Final = (
    "SELECT json_build_object('sensor', s.id, 'key', s.key, 'kind', s.kind, 'unit', s.unit,"
    " 'asset', s.asset, 'min_value', s.min_value, 'max_value', s.max_value, 'period_s',"
    " s.period_s, 't', coalesce(b.t, '[]'), 'min', coalesce(b.mn, '[]'), 'max',"
    " coalesce(b.mx, '[]'), 'mean', coalesce(b.mean, '[]'), 'n', coalesce(b.n, '[]'))::text AS doc"
    " FROM sensors s LEFT JOIN LATERAL (SELECT json_agg((extract(epoch FROM x.t) * 1000)::bigint)"
    " AS t, json_agg(x.mn) AS mn, json_agg(x.mx) AS mx, json_agg(x.mean) AS mean,"
    " json_agg(x.n) AS n FROM ({inner}) x) b ON true"
    " WHERE s.key = ANY(%(keys)s) ORDER BY s.asset, s.id"
)


def series_sql(source: str) -> str:
    """The query of every series of a timeline from this source."""
    inner = _SERIES["readings"] if source == "readings" else _SERIES["rollup"].format(table=source)
    return _OUTER.format(inner=inner)


def in_scope(asset: str | None, candidate: str) -> bool:
    """True when `candidate` is the asset asked about or a part of it (F1 covers F1-panel-03)."""
    return asset is None or candidate == asset or candidate.startswith(f"{asset}-")


async def _rows(conn: psycopg.AsyncConnection[Any], q: str, params: Any) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(q, params)
    return await cur.fetchall()


async def timeline(
    conn: psycopg.AsyncConnection[Any],
    site: str,
    start: datetime,
    end: datetime,
    *,
    asset: str | None = None,
    points: int = DEFAULT_POINTS,
    kinds: list[str] | None = None,
) -> dict[str, Any]:
    """The timeline document (see the module docstring); series are orjson Fragments."""
    if end <= start:
        raise TimelineError("'to' must be after 'from'")
    if end - start > MAX_WINDOW:
        raise TimelineError(f"a window may span at most {MAX_WINDOW.days} days")
    bucket_s = choose_bucket((end - start).total_seconds(), points)
    source = source_for(bucket_s)
    b = timedelta(seconds=bucket_s)
    # Whole buckets, as time_bucket aligns them: the first holds `start`.
    cur = conn.cursor()
    await cur.execute("SELECT public.time_bucket(%s, %s)", (b, start))
    first = await cur.fetchone()
    assert first is not None  # noqa: S101 - a SELECT of one value
    f: datetime = first[0] if isinstance(first, tuple) else next(iter(first.values()))
    # ... and the last holds the instant before `end`: series cover whole buckets, so a rollup
    # row is never cut (readings after `end` in the last bucket are in it, whatever the source).
    await cur.execute(
        "SELECT public.time_bucket(%s, %s) + %s", (b, end - timedelta(microseconds=1), b)
    )
    last = await cur.fetchone()
    assert last is not None  # noqa: S101 - a SELECT of one value
    to: datetime = last[0] if isinstance(last, tuple) else next(iter(last.values()))
    prefix = f"{asset}-" if asset is not None else ""
    sensors = await _rows(
        conn,
        "SELECT key, id, kind, asset FROM sensors WHERE site_id = %(site)s"
        " AND (retired_at IS NULL OR retired_at > %(f)s)"
        " AND (%(asset)s::text IS NULL OR asset = %(asset)s OR starts_with(asset, %(prefix)s))"
        " AND (%(kinds)s::text[] IS NULL OR kind = ANY(%(kinds)s)) ORDER BY asset, id",
        {"site": site, "f": f, "asset": asset, "prefix": prefix, "kinds": kinds},
    )
    keys = [s["key"] for s in sensors]
    cur = conn.cursor()
    await cur.execute(series_sql(source), {"b": b, "keys": keys, "f": f, "to": to})
    series = [
        orjson.Fragment(r[0] if isinstance(r, tuple) else r["doc"]) for r in await cur.fetchall()
    ]

    params = {"site": site, "f": start, "to": end, "asset": asset, "prefix": prefix}
    entries = await _rows(
        conn,
        "SELECT seq, at, alert_id, rule_id, subject, asset, actor, action, from_state, to_state,"
        " severity, priority, value, limit_value AS limit, reason FROM alert_journal"
        " WHERE site_id = %(site)s AND at >= %(f)s AND at < %(to)s"
        " AND (%(asset)s::text IS NULL OR asset = %(asset)s OR starts_with(asset, %(prefix)s))"
        " ORDER BY seq",
        params,
    )
    before = await _rows(
        conn,
        "SELECT DISTINCT ON (alert_id) alert_id, to_state FROM alert_journal"
        " WHERE site_id = %(site)s AND at < %(f)s"
        " AND (%(asset)s::text IS NULL OR asset = %(asset)s OR starts_with(asset, %(prefix)s))"
        " ORDER BY alert_id, seq DESC",
        params,
    )
    at_start = {r["alert_id"]: r["to_state"] for r in before}
    alert_ids = sorted(
        {e["alert_id"] for e in entries} | {a for a, s in at_start.items() if s != "normal"}
    )
    alerts = await _rows(
        conn,
        "SELECT id, rule_id, subject, asset, title, priority, state FROM alerts"
        " WHERE id = ANY(%s) ORDER BY id",
        (alert_ids,),
    )
    by_alert: dict[int, list[dict[str, Any]]] = {}
    for e in entries:
        by_alert.setdefault(e["alert_id"], []).append(jsonable(e))
    alert_docs = [
        {
            **a,
            "state_at_start": at_start.get(a["id"], "normal"),
            "transitions": by_alert.get(a["id"], []),
        }
        for a in alerts
    ]
    actions = [jsonable(e) for e in entries if e["actor"] != "engine"]

    permits = await _rows(
        conn,
        "SELECT id, kind, asset, areas, opened_at, closed_at, issued_by, description FROM permits"
        " WHERE site_id = %(site)s AND opened_at < %(to)s"
        " AND (closed_at IS NULL OR closed_at > %(f)s) ORDER BY opened_at, id",
        params,
    )
    permits = [
        p
        for p in permits
        if in_scope(asset, p["asset"]) or any(in_scope(asset, x) for x in p["areas"])
    ]
    annotations = await _rows(
        conn,
        "SELECT id, asset, at, until, author, text, created_at FROM annotations"
        " WHERE site_id = %(site)s AND at < %(to)s AND coalesce(until, at) >= %(f)s"
        " AND (%(asset)s::text IS NULL OR asset = '' OR asset = %(asset)s"
        " OR starts_with(asset, %(prefix)s))"
        " ORDER BY at, id",
        params,
    )
    incidents = await _rows(
        conn,
        "SELECT id, asset, occurred_at, kind, fatalities, injuries, investigation_status,"
        " alert_ids FROM incidents WHERE site_id = %(site)s AND occurred_at >= %(f)s"
        " AND occurred_at < %(to)s ORDER BY occurred_at, id",
        params,
    )
    limits, pack_doc = await _limits(conn, end, sensors, {a["rule_id"] for a in alerts})
    return {
        "site": site,
        "asset": asset,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "bucket_s": bucket_s,
        "buckets_from": f.isoformat(),
        "buckets_to": to.isoformat(),
        "source": source,
        "points": points,
        "series": series,
        "limits": limits,
        "pack": pack_doc,
        "alerts": [jsonable(a) for a in alert_docs],
        "actions": actions,
        "permits": [jsonable(p) for p in permits],
        "annotations": [jsonable(a) for a in annotations],
        "incidents": [jsonable(i) for i in incidents],
    }


async def _limits(
    conn: psycopg.AsyncConnection[Any],
    end: datetime,
    sensors: list[dict[str, Any]],
    alert_rules: set[str],
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    rows = await _rows(
        conn,
        "SELECT sha256, name, version, effective, body FROM rule_packs WHERE effective <= %s"
        " ORDER BY effective DESC, loaded_at DESC LIMIT 1",
        (end,),
    )
    if not rows:
        return [], None
    row = rows[0]
    try:
        pack = parse_pack(row["body"], f"rule pack {row['name']} {row['version']}")
    except PackError:
        return [], {"name": row["name"], "version": row["version"], "error": "unreadable"}
    out = []
    for rule in pack.rules:
        matched = [s["id"] for s in sensors if rule.sensors.matches(s["kind"], s["asset"])]
        if not matched and rule.id not in alert_rules:
            continue
        out.append(
            {
                "rule_id": rule.id,
                "title": rule.title,
                "rule_kind": rule.kind.value,
                "direction": rule.direction,
                "measure": rule.measure,
                "sensor_kinds": list(rule.sensors.kinds),
                "sensors": matched,
                "when": rule.when.value,
                "requires_permit": rule.requires_permit,
                "levels": [
                    {
                        "severity": lv.severity.value,
                        "level": lv.level,
                        "priority": lv.priority.value,
                        "on_delay_s": lv.on_delay_s,
                        "source": lv.source,
                    }
                    for lv in rule.levels
                ],
            }
        )
    pack_doc = {
        "name": row["name"],
        "version": row["version"],
        "sha256": row["sha256"],
        "effective": row["effective"].isoformat(),
    }
    return out, pack_doc
