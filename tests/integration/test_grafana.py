"""The Grafana dashboards (dashboards/grafana) against the real database.

The provisioning names one datasource and every panel uses it; each dashboard is a well-formed
Grafana JSON model whose template variables exist; and every query, expanded the way Grafana
expands it (template variables in the browser, then the PostgreSQL datasource's global
substitutions and macros), runs on a connection like Grafana's (default search_path, read only)
against a site of the default fleet loaded through the real ingest and alert stores, and returns
what its panel needs. The same checker is shown to catch a dashboard broken on purpose.

The expander follows Grafana's code: `interpolateVariable` of the SQL datasources
(public/app/features/plugins/sql/datasource/SqlDatasource.ts), `Interpolate` of sqleng and the
macro engine of pkg/tsdb/grafana-postgresql-datasource/macros.go.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import psycopg
import pytest
import yaml  # PyYAML is pinned (requirements.lock); no stubs
from psycopg import sql as pgsql

from alerting import lifecycle
from alerting.engine import ConditionEvent, EventKind
from alerting.pack import Priority, Severity, default_pack_path, load_pack
from alerting.store import AlertStore, Subject, to_us
from dashboards.kpi import alarm_kpis
from ingest.batch import Batch, GatewaySeen, StatusRecord
from ingest.migrate import session_sql
from ingest.registry import Site
from ingest.store import ReadingStore
from simulator.fleet import load_default_fleet
from simulator.plant import Plant
from tests.fix_ingest import register

GRAFANA: Final = Path(__file__).resolve().parents[2] / "dashboards" / "grafana"
DASHBOARD_FILES: Final = sorted((GRAFANA / "dashboards").glob("*.json"))
PACK: Final = load_pack(default_pack_path())
SITE_ID: Final = "morowali-a"
#: Readings are written every 30 s for 6 h: enough for the 8-hour CO mean to cover half its
#: window (it is drawn from 4 h of data on), and for every rollup branch to have rows.
SAMPLE_S: Final = 30
HOURS: Final = 6
ROW_TYPES: Final = frozenset({"row"})
PANEL_TYPES: Final = frozenset({"timeseries", "table", "stat", "barchart", "bargauge", "text"})
#: Variables Grafana itself defines (browser scoped variables), by name.
BUILTIN_VARIABLES: Final = frozenset({"__interval", "__interval_ms", "__from", "__to"})
#: Macros the PostgreSQL datasource evaluates (macros.go), by name.
MACROS: Final = frozenset(
    {
        "__time", "__timeEpoch", "__timeFilter", "__timeFrom", "__timeTo", "__timeGroup",
        "__timeGroupAlias", "__unixEpochFilter", "__unixEpochNanoFilter", "__unixEpochNanoFrom",
        "__unixEpochNanoTo", "__unixEpochGroup", "__unixEpochGroupAlias", "__unixEpochFrom",
        "__unixEpochTo",
    }
)  # fmt: skip
# PostgreSQL type oids: what Grafana reads as numbers and as time.
NUMERIC_OIDS: Final = frozenset({20, 21, 23, 700, 701, 1700})
TIME_OIDS: Final = frozenset({1114, 1184})


def load_yaml(path: Path) -> dict[str, Any]:
    """A provisioning file as a mapping."""
    data = yaml.safe_load(path.read_text("utf-8"))
    assert isinstance(data, dict), path
    return data


DATASOURCE: Final = load_yaml(GRAFANA / "provisioning" / "datasources" / "tungku.yaml")[
    "datasources"
][0]
DS_REF: Final = {"type": DATASOURCE["type"], "uid": DATASOURCE["uid"]}


def load_dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard JSON file, by file name."""
    return {p.name: json.loads(p.read_text("utf-8")) for p in DASHBOARD_FILES}


# --- the expander: what Grafana sends to PostgreSQL --------------------------------------------


class ExpansionError(ValueError):
    """Raised when a query uses a variable, macro or format this expander (or Grafana) lacks."""


@dataclass(frozen=True, slots=True)
class Window:
    """A dashboard time range and the interval Grafana computed for a panel."""

    label: str
    start: datetime
    end: datetime
    interval_ms: int


@dataclass(frozen=True, slots=True)
class Value:
    """A template variable's current value: one value, or several for a multi-value one."""

    values: tuple[str, ...]
    multi: bool


def go_time(dt: datetime) -> str:
    """A time as Go's RFC3339Nano in UTC: trailing zeros of the fraction dropped, 'Z'."""
    dt = dt.astimezone(UTC)
    out = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond:
        out += f".{dt.microsecond:06d}".rstrip("0")
    return out + "Z"


def format_interval(ms: int) -> str:
    """gtime.FormatInterval: the largest whole unit, e.g. 1s, 1m, 1h, 2d."""
    for unit, size in (("y", 365 * 86_400_000), ("d", 86_400_000), ("h", 3_600_000),
                       ("m", 60_000), ("s", 1000), ("ms", 1)):  # fmt: skip
        if ms >= size:
            return f"{ms // size}{unit}"
    return "1ms"


_DATE_UNIT_S: Final = {"d": 86_400.0, "w": 7 * 86_400.0, "M": 365.25 * 86_400 / 12,
                       "y": 365.25 * 86_400}  # fmt: skip
_GO_UNIT_S: Final = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                     "h": 3600.0}  # fmt: skip
_GO_PART_RE: Final = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def parse_interval(text: str) -> float:
    """gtime.ParseInterval, in seconds: '1d', '2w', '1M', '1y' or a Go duration ('1m30s')."""
    text = text.strip("'")
    if m := re.fullmatch(r"(\d+)([dwMy])", text):
        return int(m.group(1)) * _DATE_UNIT_S[m.group(2)]
    parts = _GO_PART_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ExpansionError(f"error parsing interval {text}")
    return sum(float(n) * _GO_UNIT_S[u] for n, u in parts)


def quote_literal(value: str) -> str:
    """PostgresQueryModel.quoteLiteral."""
    return "'" + value.replace("'", "''") + "'"


def format_value(value: Value, fmt: str | None, name: str) -> str:
    """SqlDatasource.interpolateVariable, or one of the few named formats these dashboards use."""
    if fmt is None:
        if value.multi:
            return ",".join(quote_literal(v) for v in value.values)
        return value.values[0].replace("'", "''")
    if fmt == "raw":
        return ",".join(value.values)
    if fmt in ("sqlstring", "singlequote"):
        return ",".join(quote_literal(v) for v in value.values)
    raise ExpansionError(f"${{{name}:{fmt}}}: format {fmt!r} is not handled by this checker")


# templateSrv's variable syntaxes: $name, [[name]] or [[name:format]], ${name} or ${name:format}.
VARIABLE_RE: Final = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}"
)
# macros.go: `\$([_a-zA-Z0-9]+)\(([^\)]*)\)`. Arguments cannot hold a ')'.
MACRO_RE: Final = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")


def referenced_variables(sql: str) -> set[str]:
    """Names of the template variables a query refers to (macros and built-ins left out)."""
    names = {m.group(1) or m.group(2) or m.group(4) for m in VARIABLE_RE.finditer(sql)}
    return {n for n in names if not n.startswith("__")}


def interpolate_variables(sql: str, variables: Mapping[str, Value], window: Window) -> str:
    """What the browser does before sending a query: template variables and $__interval."""
    builtins = {
        "__interval": format_interval(window.interval_ms),
        "__interval_ms": str(window.interval_ms),
        "__from": str(to_us(window.start) // 1000),
        "__to": str(to_us(window.end) // 1000),
    }

    def replace(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(6)
        if name in variables:
            return format_value(variables[name], fmt, name)
        if name in builtins:
            return builtins[name]
        if name.startswith("__"):
            return m.group(0)  # a macro: the datasource's backend expands it
        raise ExpansionError(f"unknown template variable ${name}")

    return VARIABLE_RE.sub(replace, sql)


def evaluate_macro(name: str, args: list[str], window: Window, *, timescaledb: bool) -> str:
    """postgresMacroEngine.evaluateMacro."""
    start, end = go_time(window.start), go_time(window.end)
    epoch_from, epoch_to = to_us(window.start) // 1_000_000, to_us(window.end) // 1_000_000
    col = args[0] if args and args[0] else None
    if name in ("__timeFrom", "__timeTo"):
        return f"'{start}'" if name == "__timeFrom" else f"'{end}'"
    if name in ("__unixEpochNanoFrom", "__unixEpochNanoTo"):
        return str((to_us(window.start if name.endswith("From") else window.end)) * 1000)
    if col is None:
        raise ExpansionError(f"missing time column argument for macro {name}")
    if name == "__time":
        return f'{col} AS "time"'
    if name == "__timeEpoch":
        return f'extract(epoch from {col}) as "time"'
    if name == "__timeFilter":
        return f"{col} BETWEEN '{start}' AND '{end}'"
    if name == "__unixEpochFilter":
        return f"{col} >= {epoch_from} AND {col} <= {epoch_to}"
    if name == "__unixEpochNanoFilter":
        return f"{col} >= {to_us(window.start) * 1000} AND {col} <= {to_us(window.end) * 1000}"
    if name in ("__timeGroup", "__timeGroupAlias", "__unixEpochGroup", "__unixEpochGroupAlias"):
        if len(args) < 2:
            raise ExpansionError(f"macro {name} needs time column and interval")
        if len(args) == 3:
            raise ExpansionError(f"macro {name}: fill modes are not handled by this checker")
        secs = parse_interval(args[1])
        if name.startswith("__unixEpoch"):
            group = f"floor(({col})/{secs:g})*{secs:g}"
        elif timescaledb:
            group = f"time_bucket('{secs:.3f}s',{col})"
        else:
            group = f"floor(extract(epoch from {col})/{secs:g})*{secs:g}"
        return group + ' AS "time"' if name.endswith("Alias") else group
    raise ExpansionError(f"unknown macro {name!r}")


def expand(sql: str, variables: Mapping[str, Value], window: Window, *, timescaledb: bool) -> str:
    """A query as Grafana's PostgreSQL datasource runs it."""
    sql = interpolate_variables(sql, variables, window)
    # sqleng.Interpolate: global substitutions, in this order.
    sql = sql.replace("$__interval_ms", str(window.interval_ms))
    sql = sql.replace("$__interval", format_interval(window.interval_ms))
    sql = sql.replace("$__unixEpochFrom()", str(to_us(window.start) // 1_000_000))
    sql = sql.replace("$__unixEpochTo()", str(to_us(window.end) // 1_000_000))
    original = sql

    def replace(m: re.Match[str]) -> str:
        name = m.group(1)
        if name == "__timeGroup":
            # Before Grafana 5.3 $__timeGroup added its own alias; a ',' right after the first
            # occurrence of the same text still selects that behaviour.
            at = original.find(m.group(0)) + len(m.group(0))
            if original[at : at + 1] == ",":
                name = "__timeGroupAlias"
        args = [a.strip(" ") for a in m.group(2).split(",")]
        return evaluate_macro(name, args, window, timescaledb=timescaledb)

    return MACRO_RE.sub(replace, sql)


# --- the structure of a dashboard --------------------------------------------------------------


def panels_of(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' collapsed panels included, rows themselves left out."""
    for p in dashboard.get("panels", []):
        if p.get("type") in ROW_TYPES:
            yield from p.get("panels", [])
        else:
            yield p


def variable_sql(var: Mapping[str, Any]) -> str | None:
    """The SQL of a query variable (a string, or an object with rawSql in newer Grafana)."""
    q = var.get("query")
    if isinstance(q, dict):
        raw = q.get("rawSql")
        return raw if isinstance(raw, str) else None
    return q if isinstance(q, str) else None


def queries_of(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(where, target, format) of every SQL query of panels and annotations."""
    for p in panels_of(dashboard):
        for t in p.get("targets", []):
            yield f"panel {p.get('id')} '{p.get('title')}' {t.get('refId')}", t, t.get("format", "")
    for a in dashboard.get("annotations", {}).get("list", []):
        if a.get("builtIn"):
            continue
        yield f"annotation '{a.get('name')}'", a.get("target", {}), "annotation"


def structure_problems(dashboard: Mapping[str, Any]) -> list[str]:
    """What makes a dashboard an invalid or dangling Grafana JSON model (empty when fine)."""
    problems: list[str] = []
    problems += [
        f"no {key}"
        for key in ("uid", "title")
        if not isinstance(dashboard.get(key), str) or not dashboard[key]
    ]
    if not isinstance(dashboard.get("schemaVersion"), int) or dashboard["schemaVersion"] < 36:
        problems.append("schemaVersion missing or older than 36")
    if dashboard.get("id") is not None:
        problems.append("id must be null in a provisioned dashboard")
    panels = list(panels_of(dashboard))
    if not panels:
        problems.append("no panels")
    ids = [p.get("id") for p in panels]
    if len(set(ids)) != len(ids) or not all(isinstance(i, int) for i in ids):
        problems.append(f"panel ids must be unique integers: {ids}")
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        where = f"panel {p.get('id')} '{p.get('title')}'"
        if p.get("type") not in PANEL_TYPES:
            problems.append(f"{where}: unknown type {p.get('type')!r}")
        if not p.get("title"):
            problems.append(f"{where}: no title")
        g = p.get("gridPos")
        if not isinstance(g, dict) or not all(isinstance(g.get(k), int) for k in "hwxy"):
            problems.append(f"{where}: no gridPos with integer h, w, x, y")
        elif g["h"] < 1 or g["w"] < 1 or g["x"] < 0 or g["y"] < 0 or g["x"] + g["w"] > 24:
            problems.append(f"{where}: gridPos {g} is outside the 24-column grid")
        else:
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    if (x, y) in cells:
                        problems.append(f"{where} overlaps {cells[(x, y)]}")
                        break
                    cells[(x, y)] = where
                else:
                    continue
                break
        if p.get("type") == "text":
            continue
        if p.get("datasource") != DS_REF:
            problems.append(f"{where}: datasource {p.get('datasource')} is not {DS_REF}")
        targets = p.get("targets")
        if not isinstance(targets, list) or not targets:
            problems.append(f"{where}: no targets")
            continue
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or not all(isinstance(r, str) and r for r in refs):
            problems.append(f"{where}: refIds must be unique and present: {refs}")
    for where, t, fmt in queries_of(dashboard):
        if not isinstance(t.get("rawSql"), str) or not t["rawSql"].strip():
            problems.append(f"{where}: no rawSql")
        if fmt not in ("time_series", "table", "annotation") or (
            fmt == "annotation" and t.get("format") != "table"
        ):
            problems.append(f"{where}: format {t.get('format')!r} is not time_series or table")
        if t.get("rawQuery") is not True or t.get("editorMode") != "code":
            problems.append(f"{where}: not a raw SQL (code) query")
        if t.get("datasource") != DS_REF:
            problems.append(f"{where}: target datasource {t.get('datasource')} is not {DS_REF}")
    # Template variables: named once, each query referring only to variables defined before it.
    defined: set[str] = set()
    for var in dashboard.get("templating", {}).get("list", []):
        name = var.get("name")
        if not isinstance(name, str) or not name or name in defined:
            problems.append(f"variable name {name!r} missing or repeated")
            continue
        if var.get("type") == "query":
            if var.get("datasource") != DS_REF:
                problems.append(f"variable {name}: datasource is not {DS_REF}")
            sql = variable_sql(var)
            if sql is None:
                problems.append(f"variable {name}: no SQL query")
            elif missing := referenced_variables(sql) - defined:
                problems.append(f"variable {name}: refers to undefined {sorted(missing)}")
        elif var.get("type") != "constant":
            problems.append(f"variable {name}: type {var.get('type')!r} not handled here")
        defined.add(name)
    for where, t, _ in queries_of(dashboard):
        sql = t.get("rawSql") or ""
        if missing := referenced_variables(sql) - defined:
            problems.append(f"{where}: refers to undefined variables {sorted(missing)}")
        for m in VARIABLE_RE.finditer(sql):
            name = m.group(1) or m.group(2) or m.group(4)
            if name.startswith("__") and name not in BUILTIN_VARIABLES | MACROS:
                problems.append(f"{where}: unknown macro or built-in ${name}")
    return problems


# --- running the queries -----------------------------------------------------------------------


@contextmanager
def grafana_connection(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection as Grafana's datasource has one: the role's default search_path (public,
    never the service's schema), read-only like the SELECT-only role it should use."""
    with psycopg.connect(
        database_url,
        autocommit=True,
        options="-c search_path=public -c default_transaction_read_only=on"
        " -c statement_timeout=30000",
    ) as conn:
        yield conn


@dataclass
class Result:
    """A query's columns (name, type oid) and rows."""

    columns: list[tuple[str, int]]
    rows: list[tuple[Any, ...]]


def run(conn: psycopg.Connection[Any], sql: str) -> tuple[Result | None, str | None]:
    """Run one expanded query: its result, or the error PostgreSQL (or a notice) raised."""
    notices: list[str] = []

    def keep(diag: psycopg.errors.Diagnostic) -> None:
        notices.append(diag.message_primary or "")

    conn.add_notice_handler(keep)
    try:
        cur = conn.execute(sql.encode())  # bytes: built at run time, sent as it is
        columns = [(c.name, c.type_code) for c in cur.description or []]
        rows = cur.fetchall()
    except psycopg.Error as exc:
        return None, f"{type(exc).__name__}: {str(exc).strip()}"
    finally:
        conn.remove_notice_handler(keep)
    if notices:  # e.g. "identifier ... will be truncated": a label silently cut at 63 bytes
        return None, "notice: " + "; ".join(notices)
    return Result(columns, rows), None


def result_problems(result: Result, fmt: str) -> list[str]:
    """What a panel cannot draw: no rows; for a time series no `time` column, no numeric value,
    times unordered (Grafana's long-to-wide conversion needs them ascending)."""
    if not result.rows:
        return ["returned no rows"]
    names = [n for n, _ in result.columns]
    if fmt == "table":
        return []
    if "time" not in names:
        return [f"no column named time (columns {names})"]
    ti = names.index("time")
    if result.columns[ti][1] not in TIME_OIDS | NUMERIC_OIDS:
        return [f"time column has type oid {result.columns[ti][1]}, not a time or a number"]
    problems: list[str] = []
    if fmt == "annotation":
        if "text" not in names:
            problems.append(f"an annotation query needs a text column (columns {names})")
    elif not any(oid in NUMERIC_OIDS for n, oid in result.columns if n != "time"):
        problems.append(f"no numeric value column (columns {result.columns})")
    times = [r[ti] for r in result.rows]
    if any(t is None for t in times):
        problems.append("a NULL time")
    elif times != sorted(times):
        problems.append("rows are not in ascending time order")
    return problems


def series_names(result: Result) -> set[str]:
    """Names Grafana gives the fields of a result: metric values, else the column names."""
    names = {n for n, _ in result.columns}
    if "metric" in names:
        mi = [n for n, _ in result.columns].index("metric")
        return {str(r[mi]) for r in result.rows}
    return names


def resolve_variables(
    conn: psycopg.Connection[Any],
    dashboard: Mapping[str, Any],
    schema: str,
    window: Window,
    timescaledb: bool,
) -> tuple[dict[str, Value], list[str]]:
    """Each variable's value as Grafana would set it on load: the constant `schema` pointed at
    the test's schema, a query variable's first value, or all of them where All is selectable."""
    values: dict[str, Value] = {}
    problems: list[str] = []
    for var in dashboard.get("templating", {}).get("list", []):
        name = var["name"]
        if var["type"] == "constant":
            values[name] = Value((schema if name == "schema" else str(var["query"]),), False)
            continue
        sql = variable_sql(var) or ""
        try:
            expanded = expand(sql, values, window, timescaledb=timescaledb)
        except ExpansionError as exc:
            problems.append(f"variable {name}: {exc}")
            continue
        result, error = run(conn, expanded)
        if result is None or not result.rows:
            problems.append(f"variable {name}: {error or 'no values'}")
            continue
        options = tuple(str(r[0]) for r in result.rows)
        multi = bool(var.get("multi") or var.get("includeAll"))
        values[name] = Value(options if var.get("includeAll") else options[:1], multi)
    return values, problems


def windows(end: datetime) -> list[Window]:
    """Time ranges ending at `end` whose intervals read each source: raw readings (below
    15 s), the 1-minute rollup (also in buckets shorter than its minutes) and the 1-hour
    rollup."""
    return [
        Window("last 15 min at 1s", end - timedelta(minutes=15), end, 1000),
        Window("last 6 h at 20s", end - timedelta(hours=6), end, 20_000),
        Window("last 6 h at 1m", end - timedelta(hours=6), end, 60_000),
        Window("last 2 days at 1h", end - timedelta(days=2), end, 3_600_000),
    ]


def query_problems(
    conn: psycopg.Connection[Any], dashboard: Mapping[str, Any], schema: str, end: datetime
) -> list[str]:
    """Everything wrong with running a dashboard's queries over each window (empty when fine)."""
    timescaledb = bool(DATASOURCE["jsonData"]["timescaledb"])
    uid = dashboard.get("uid")
    problems: list[str] = []
    # Series and column names each panel's queries returned, over all windows.
    names_by_panel: dict[int, set[str]] = {}
    for window in windows(end):
        values, var_problems = resolve_variables(conn, dashboard, schema, window, timescaledb)
        problems += [f"{uid} [{window.label}] {p}" for p in var_problems]
        if var_problems:
            continue
        for where, target, fmt in queries_of(dashboard):
            try:
                sql = expand(target.get("rawSql", ""), values, window, timescaledb=timescaledb)
            except ExpansionError as exc:
                problems.append(f"{uid} [{window.label}] {where}: {exc}")
                continue
            result, error = run(conn, sql)
            if result is None:
                problems.append(f"{uid} [{window.label}] {where}: {error}\n{sql}")
                continue
            problems += [
                f"{uid} [{window.label}] {where}: {p}" for p in result_problems(result, fmt)
            ]
            panel_id = int(where.split()[1]) if where.startswith("panel ") else -1
            names_by_panel.setdefault(panel_id, set()).update(series_names(result))
    for p in panels_of(dashboard):
        for o in p.get("fieldConfig", {}).get("overrides", []):
            m = o.get("matcher", {})
            if m.get("id") == "byName" and m.get("options") not in names_by_panel.get(
                p["id"], set()
            ):
                problems.append(
                    f"{uid} panel {p['id']} '{p['title']}': override for {m.get('options')!r}"
                    " matches no series or column in any window"
                )
    return problems


# --- a plant in the database ---------------------------------------------------------------------


def default_site() -> Site:
    """The default fleet's site morowali-a (two furnaces, four work areas, utilities)."""
    return next(s for s in load_default_fleet().sites() if s.id == SITE_ID)


async def write_readings(database_url: str, schema: str, site: Site, start: datetime) -> None:
    """HOURS of the plant model's normal signal for every sensor of the site, a reading every
    SAMPLE_S seconds, through the ingest store (which keeps the rollups), and gateway states."""
    query = pgsql.SQL("SELECT id, key FROM {}.sensors WHERE site_id = %s").format(
        pgsql.Identifier(schema)
    )
    with psycopg.connect(database_url) as conn:
        keys: dict[str, int] = dict(conn.execute(query, (site.id,)).fetchall())
    plant = Plant([site], seed=20231224)
    order = np.array([keys[sid] for _, _, sid in plant.sensors()], dtype=np.int64)
    t0 = to_us(start)
    ticks = range(0, HOURS * 3600, SAMPLE_S)
    values = np.stack([plant.values(k) for k in ticks])  # (ticks, sensors)
    ts = np.repeat(np.array([t0 + k * 1_000_000 for k in ticks], dtype=np.int64), order.size)
    sensor_keys = np.tile(order, len(ticks))
    flat = values.reshape(-1)
    store = ReadingStore(database_url=database_url, schema=schema)
    try:
        for i in range(0, flat.size, 20_000):
            sl = slice(i, i + 20_000)
            await store.commit_batch(
                Batch(
                    started_mono_s=0.0,
                    sensor_keys=sensor_keys[sl].tolist(),
                    ts_us=ts[sl].tolist(),
                    values=flat[sl].tolist(),
                    qualities=[0] * flat[sl].size,
                )
            )
        last_us = int(ts[-1])
        status = Batch(started_mono_s=0.0)
        status.statuses = [
            StatusRecord(t0, site.id, g.id, g.id != "utilities", t0) for g in site.gateways
        ]
        await store.commit_batch(status)
        await store.record_gateways_seen(
            {(site.id, g.id): GatewaySeen(max_seq=720, last_received_us=last_us)
             for g in site.gateways}
        )  # fmt: skip
    finally:
        await store.close()


def event(
    at: datetime,
    rule: str,
    subject: str,
    asset: str,
    kind: EventKind = EventKind.ACTIVATE,
    *,
    sev: Severity | None = Severity.WARNING,
    pri: Priority = Priority.LOW,
    latch: bool = False,
    value: float | None = 1.0,
    limit: float | None = 0.5,
) -> ConditionEvent:
    """An engine event of the site."""
    clear = kind is EventKind.CLEAR
    return ConditionEvent(
        to_us(at), SITE_ID, asset, rule, subject, f"{rule} on {subject}", kind,
        severity=None if clear else sev, priority=pri, latch=latch, value=value,
        limit=None if clear else limit, reason="test",
    )  # fmt: skip


async def write_alerts(database_url: str, schema: str, end: datetime) -> None:
    """Alerts through the real alert store: a latched critical acknowledged hours ago, an
    urgent (escalated) one left unacknowledged, a flood of 12 alarms in 4 minutes, a CO warning
    acknowledged, cleared and raised again, an unacknowledged freeboard warning and an
    advisory in the last hour."""
    store = AlertStore(database_url=database_url, schema=schema)

    async def apply(events: Sequence[ConditionEvent]) -> None:
        await store.apply(sorted(events, key=lambda e: e.at_us), pack=PACK, scope="*", state=None)

    async def ack(rule: str, subject: str, at: datetime) -> None:
        row = await store.find_alert(Subject(SITE_ID, rule, subject))
        assert row is not None
        await store.act(row.id, lifecycle.Acknowledge(at_us=to_us(at), actor="sari"))

    def ago(**kw: float) -> datetime:
        return end - timedelta(**kw)

    co, fb = "tapping-floor.co", "f1.freeboard_pressure"
    try:
        await apply([event(ago(hours=5), "cw.panel_dt", "F1-CW-P03.panel_dt", "F1-CW-P03",
                           sev=Severity.CRITICAL, pri=Priority.HIGH, latch=True, value=16.2,
                           limit=15.0)])  # fmt: skip
        await ack("cw.panel_dt", "F1-CW-P03.panel_dt", ago(hours=4, minutes=50))
        # Urgent: what escalation by the compliance record makes of a high-priority alarm.
        await apply([event(ago(hours=2), "gas.h2s.level", "slag-yard.h2s", "slag-yard",
                           sev=Severity.CRITICAL, pri=Priority.URGENT, latch=True, value=21.0,
                           limit=20.0)])  # fmt: skip
        flood = []
        for i in range(12):
            subject, asset = f"F2-CW-P{i + 1:02d}.panel_dt", f"F2-CW-P{i + 1:02d}"
            # From a 10-minute boundary, so fixed 10-min windows hold all 12 whatever the clock.
            start = ago(hours=3)
            start = start.replace(minute=start.minute - start.minute % 10)
            at = start + timedelta(seconds=20 * i)
            flood += [
                event(at, "cw.panel_dt.rate", subject, asset),
                event(at + timedelta(seconds=60), "cw.panel_dt.rate", subject, asset,
                      EventKind.CLEAR),
            ]  # fmt: skip
        await apply(flood)
        await apply([event(ago(minutes=40), "gas.co.level", co, "tapping-floor",
                           pri=Priority.MEDIUM, value=27.0, limit=25.0)])  # fmt: skip
        await ack("gas.co.level", co, ago(minutes=38))
        await apply(
            [
                event(ago(minutes=30), "gas.co.level", co, "tapping-floor", EventKind.CLEAR),
                event(ago(minutes=20), "anomaly.process", "f1.hearth.t03", "F1",
                      pri=Priority.ADVISORY, value=0.61, limit=0.52),
                event(ago(minutes=14), "freeboard.pressure", fb, "F1", pri=Priority.MEDIUM,
                      value=2.5, limit=0.0),
                event(ago(minutes=12), "gas.co.level", co, "tapping-floor",
                      pri=Priority.MEDIUM, value=31.0, limit=25.0),
            ]
        )  # fmt: skip
        await ack("gas.co.level", co, ago(minutes=10))
    finally:
        await store.close()


@pytest.fixture
def plant_end(database_url: str, db_schema: str) -> datetime:
    """Site morowali-a of the default fleet registered in the test's schema, 6 h of readings up
    to the returned end (the current minute), gateway states and alerts."""
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    site = default_site()
    register(database_url, db_schema, site)
    asyncio.run(write_readings(database_url, db_schema, site, end - timedelta(hours=HOURS)))
    asyncio.run(write_alerts(database_url, db_schema, end))
    return end


# --- the tests -----------------------------------------------------------------------------------


def test_provisioning_defines_the_datasource_and_the_dashboard_folder() -> None:
    """The datasource is the TimescaleDB-flavoured PostgreSQL one, uid tungku-timescaledb,
    database tungku, credentials from the environment; the provider loads the dashboards
    folder into the folder Tungku."""
    ds = DATASOURCE
    assert ds["uid"] == "tungku-timescaledb"
    assert ds["type"] == "grafana-postgresql-datasource"
    assert ds["jsonData"]["database"] == "tungku"
    assert ds["jsonData"]["timescaledb"] is True
    assert ds["jsonData"]["postgresVersion"] == 1500
    for value in (
        ds["url"],
        ds["user"],
        ds["secureJsonData"]["password"],
        ds["jsonData"]["sslmode"],
    ):
        assert re.fullmatch(r"\$\{?TUNGKU_GRAFANA_DB_[A-Z]+\}?", value), value
    assert "password" not in ds  # only ever in secureJsonData
    provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "tungku.yaml")["providers"][0]
    assert provider["type"] == "file"
    assert provider["folder"] == "Tungku"
    assert provider["options"]["path"]
    assert DASHBOARD_FILES, "no dashboards"


def test_dashboard_uids_are_unique_and_schema_is_a_constant_defaulting_to_tungku() -> None:
    """No two dashboards share a uid; each has the constant variable `schema` = tungku."""
    boards = load_dashboards()
    uids = [d["uid"] for d in boards.values()]
    assert len(set(uids)) == len(uids), uids
    for name, d in boards.items():
        schema = next(v for v in d["templating"]["list"] if v["name"] == "schema")
        assert (schema["type"], schema["query"]) == ("constant", "tungku"), name


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_is_a_well_formed_grafana_model(path: Path) -> None:
    """Title, uid, panels on the grid each with the provisioned datasource, targets with a
    refId and raw SQL, and only template variables that exist."""
    assert structure_problems(json.loads(path.read_text("utf-8"))) == []


def test_structure_check_catches_broken_models() -> None:
    """A missing gridPos, another datasource, a target without refId, an undefined variable and
    overlapping panels are each reported."""
    board = load_dashboards()["plant-overview.json"]
    breakages: dict[str, Callable[[dict[str, Any]], None]] = {
        "no gridPos": lambda d: d["panels"][0].pop("gridPos"),
        "datasource": lambda d: d["panels"][1].update(datasource={"type": "x", "uid": "y"}),
        "refIds": lambda d: d["panels"][4]["targets"][0].pop("refId"),
        "undefined": lambda d: d["panels"][4]["targets"][0].update(
            rawSql=d["panels"][4]["targets"][0]["rawSql"].replace("$site", "$sitee")
        ),
        "overlaps": lambda d: d["panels"][5].update(gridPos=dict(d["panels"][4]["gridPos"])),
    }
    for needle, breakage in breakages.items():
        broken = copy.deepcopy(board)
        breakage(broken)
        problems = structure_problems(broken)
        assert any(needle in p for p in problems), (needle, problems)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("$__timeFilter(r.ts)", "r.ts BETWEEN '2026-12-08T10:00:00Z' AND '2026-12-08T16:00:00.5Z'"),
        ("$__timeFrom()::timestamptz", "'2026-12-08T10:00:00Z'::timestamptz"),
        ("$__timeTo()", "'2026-12-08T16:00:00.5Z'"),
        ("$__timeGroupAlias(v.t, $__interval)", "time_bucket('60.000s',v.t) AS \"time\""),
        ("$__timeGroup(v.t, 1h) AS t", "time_bucket('3600.000s',v.t) AS t"),
        ("SELECT $__timeGroup(ts, 5m), v", "SELECT time_bucket('300.000s',ts) AS \"time\", v"),
        ("$__interval_ms < 60000", "60000 < 60000"),
        ("'$__interval'", "'1m'"),
        ("$__unixEpochFrom() $__unixEpochTo()", "1796724000 1796745600"),
        ("$__unixEpochFilter(t)", "t >= 1796724000 AND t <= 1796745600"),
        ("'$site' ${schema}.sensors", "'o''brien' t_x.sensors"),
        ("IN ($asset)", "IN ('F1','F''2')"),
        ("[[schema]].readings ${asset:raw}", "t_x.readings F1,F'2"),
    ],
)
def test_expander_produces_what_grafana_sends(sql: str, expected: str) -> None:
    """Macros, global substitutions and variables expand as Grafana's PostgreSQL datasource
    expands them (TimescaleDB on, 1-minute interval): quoting, time format, time_bucket."""
    window = Window(
        "t",
        datetime(2026, 12, 8, 10, tzinfo=UTC),
        datetime(2026, 12, 8, 16, 0, 0, 500_000, tzinfo=UTC),
        60_000,
    )
    variables = {
        "site": Value(("o'brien",), False),
        "schema": Value(("t_x",), False),
        "asset": Value(("F1", "F'2"), True),
    }
    assert expand(sql, variables, window, timescaledb=True) == expected


def test_expander_without_timescaledb_groups_by_epoch_seconds() -> None:
    """With the datasource's TimescaleDB switch off, $__timeGroup is Grafana's floor/epoch form."""
    w = Window("t", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC), 300_000)
    got = expand("$__timeGroupAlias(ts, $__interval)", {}, w, timescaledb=False)
    assert got == 'floor(extract(epoch from ts)/300)*300 AS "time"'


@pytest.mark.parametrize("sql", ["$nope", "$__timeGroupAlias(ts)", "$__bogus(ts)", "${a:json}"])
def test_expander_refuses_what_grafana_would_not_run(sql: str) -> None:
    """An unknown variable, a macro missing its interval, an unknown macro and an unhandled
    variable format are errors, not silently passed through."""
    w = Window("t", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC), 60_000)
    with pytest.raises(ExpansionError):
        expand(sql, {"a": Value(("x",), True)}, w, timescaledb=True)


def test_every_query_runs_and_feeds_its_panel(
    database_url: str, db_schema: str, plant_end: datetime
) -> None:
    """Every variable, panel and annotation query of every dashboard, over 15 min, 6 h and
    2 days (raw readings, 1-minute and 1-hour rollups), runs on a Grafana-like connection and
    returns rows; time series have an ordered time column and a numeric value; overrides
    name series that exist."""
    problems: list[str] = []
    with grafana_connection(database_url) as conn:
        for board in load_dashboards().values():
            problems += query_problems(conn, board, db_schema, plant_end)
    assert problems == [], "\n\n".join(problems)


def test_the_checker_catches_a_broken_dashboard(
    database_url: str, db_schema: str, plant_end: datetime
) -> None:
    """A copy of the plant overview with its furnace-power query broken (a misspelt column,
    a misspelt kind that selects nothing, a table not qualified with ${schema}, no time
    column, an unknown variable) is reported, each time for that panel only."""
    board = load_dashboards()["plant-overview.json"]
    panel = next(p for p in board["panels"] if p["title"] == "Furnace power")
    sql = panel["targets"][0]["rawSql"]
    breakages = {
        "misspelt column": sql.replace("sum(v.vsum)", "sum(v.vsun)"),
        "misspelt kind": sql.replace("'furnace_power'", "'furnace_powr'"),
        "unqualified table": sql.replace("${schema}.readings_1m", "readings_1m"),
        "no time column": sql.replace(
            "$__timeGroupAlias(v.t, $__interval)", "$__timeGroup(v.t, $__interval) AS t"
        ),
        "unknown variable": sql.replace("'$site'", "'$plant'"),
    }
    with grafana_connection(database_url) as conn:
        assert query_problems(conn, board, db_schema, plant_end) == []
        for what, broken_sql in breakages.items():
            assert broken_sql != sql, what
            broken = copy.deepcopy(board)
            next(p for p in broken["panels"] if p["id"] == panel["id"])["targets"][0]["rawSql"] = (
                broken_sql
            )
            problems = query_problems(conn, broken, db_schema, plant_end)
            assert problems, what
            assert all("'Furnace power'" in p for p in problems), (what, problems)


def panel_rows(
    conn: psycopg.Connection[Any], board: Mapping[str, Any], title: str, schema: str, w: Window
) -> list[dict[str, Any]]:
    """The rows of a panel's first query over a window, as column -> value."""
    values, problems = resolve_variables(conn, board, schema, w, timescaledb=True)
    assert problems == []
    panel = next(p for p in panels_of(board) if p["title"] == title)
    result, error = run(conn, expand(panel["targets"][0]["rawSql"], values, w, timescaledb=True))
    assert result is not None, error
    names = [n for n, _ in result.columns]
    return [dict(zip(names, r, strict=True)) for r in result.rows]


def test_alarm_kpi_panels_agree_with_the_kpi_report(
    database_url: str, db_schema: str, plant_end: datetime
) -> None:
    """Over the last 6 h the alarm-KPI dashboard counts the alarms, advisories, rate, busiest
    10 minutes, priority split, top contributor and times to acknowledge that dashboards/kpi.py
    reports from the same journal."""
    start = plant_end - timedelta(hours=6)

    async def report() -> dict[str, Any]:
        aconn = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
        try:
            await aconn.execute(session_sql(db_schema))
            return await alarm_kpis(aconn, SITE_ID, start, plant_end)
        finally:
            await aconn.close()

    k = asyncio.run(report())
    board = load_dashboards()["alarm-kpis.json"]
    w = Window("last 6 h", start, plant_end, 60_000)
    with grafana_connection(database_url) as conn:

        def rows(title: str) -> list[dict[str, Any]]:
            return panel_rows(conn, board, title, db_schema, w)

        assert rows("Alarms") == [{"alarms": k["alarms"]["total"]}]
        assert rows("Advisories") == [{"advisories": k["alarms"]["advisories"]}]
        rate = rows("Alarms per hour")[0]["alarms per hour"]
        assert float(rate) == pytest.approx(k["alarms"]["per_hour"]["mean"], abs=1e-3)
        busiest = rows("Busiest 10 minutes")[0]["most alarms in 10 min"]
        assert busiest == k["alarms"]["per_10min"]["max"] == 12
        counts = k["priority"]["counts"]
        split = {r["priority"]: r for r in rows("Priority split")}
        assert {p: r["alarms"] for p, r in split.items()} == {
            "low": counts["low"],
            "medium": counts["medium"],
            "high": counts["high"] + counts["urgent"],
        }
        for p, pct in k["priority"]["pct"].items():
            assert float(split[p]["share %"]) == pytest.approx(pct, abs=0.05)
        top = rows("Top 10 contributors")
        want = k["top_contributors"]["contributors"]
        assert (top[0]["rule"], top[0]["subject"], top[0]["alarms"]) == (
            want[0]["rule_id"], want[0]["subject"], want[0]["alarms"]
        )  # fmt: skip
        assert [r["alarms"] for r in top] == [c["alarms"] for c in want]
        tta = {r["priority"]: r for r in rows("Time to acknowledge")}
        expected = {"all": k["time_to_ack"]} | {
            p: v for p, v in k["time_to_ack"]["by_priority"].items() if v["alarms"]
        }
        assert set(tta) == set(expected)
        for p, v in expected.items():
            got = tta[p]
            assert (got["alarms"], got["acknowledged"]) == (v["alarms"], v["acknowledged"]), p
            for col, key in (("median", "median_s"), ("p90", "p90_s"), ("max", "max_s")):
                assert got[col] == pytest.approx(v[key], abs=1e-3), (p, col)
