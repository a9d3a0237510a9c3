"""The `tungku` command line: the one place where settings are read and parts are wired.

Settings come from the environment (`TUNGKU_*`) and an optional TOML file (`--config`), read
once here and passed down. Each subcommand has its own `--help`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import psycopg

from alerting import command as rules_command
from alerting import console, scorer
from alerting.evaluator import Evaluator, now_utc, pack_path, read_pack
from alerting.pack import PackError
from alerting.store import AlertStore, AlertStoreError
from alerting.webhook import WebhookError, WebhookSender, parse_endpoints
from alerting.worker import EvaluatorProcess, WorkerConfig
from dashboards import cli as api_cli
from ingest import migrate as migrations
from ingest.logs import configure_logging
from ingest.metrics import create_metrics, parse_metrics
from ingest.registry import RegistryError, parse_site
from ingest.service import IngestService
from ingest.settings import Settings, SettingsError, load_settings
from ingest.store import load_site
from simulator import command as sim_command

EPILOG = """\
Settings: environment variables TUNGKU_<NAME> (e.g. TUNGKU_DATABASE_URL, TUNGKU_MQTT_HOST,
TUNGKU_MAX_BATCH_ROWS) override the [ingest] table of --config FILE, which overrides defaults.
See README.md, "Configuration", for every setting.
"""


class CliError(Exception):
    """Raised when a command cannot do what was asked; the message is shown to the user."""


def _settings(args: argparse.Namespace) -> Settings:
    text = None
    if args.config:
        try:
            text = Path(args.config).read_text("utf-8")
        except OSError as exc:
            raise CliError(f"cannot read config file {args.config}: {exc.strerror}") from None
    return load_settings(os.environ, text, args.config or "<config>")


def _configure_logging(settings: Settings) -> None:
    configure_logging(settings.log_format, settings.log_level)


def _connect(settings: Settings) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(settings.database_url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise CliError(f"cannot connect to {settings.database_url}: {exc}") from None


# --- db ---------------------------------------------------------------------------------------


def cmd_db_migrate(args: argparse.Namespace, out: TextIO) -> int:
    """Create or upgrade the schema."""
    s = _settings(args)
    with _connect(s) as conn:
        try:
            applied = migrations.migrate(conn, s.db_schema)
        except migrations.MigrationError as exc:
            raise CliError(str(exc)) from None
        except psycopg.errors.UndefinedFile as exc:
            raise CliError(
                f"TimescaleDB is not installed in this PostgreSQL ({exc}); "
                "run deploy/setup.sh or deploy/install-timescaledb.sh"
            ) from None
        version = migrations.schema_version(conn, s.db_schema)
        license_ = conn.execute("SHOW timescaledb.license").fetchone()
    for m in applied:
        out.write(f"applied {m.version:04d}_{m.name}\n")
    out.write(
        f"schema {s.db_schema} at version {version}"
        f" ({'up to date' if not applied else f'{len(applied)} applied'});"
        f" timescaledb.license = {license_[0] if license_ else '?'}\n"
    )
    return 0


# --- registry ---------------------------------------------------------------------------------


def cmd_registry_load(args: argparse.Namespace, out: TextIO) -> int:
    """Load site files into the registry."""
    s = _settings(args)
    sites = []
    for path in args.files:
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise CliError(f"cannot read site file {path}: {exc.strerror}") from None
        try:
            sites.append(parse_site(text, str(path)))
        except RegistryError as exc:
            raise CliError(
                f"{exc.source}: {len(exc.problems)} problem(s):\n  " + "\n  ".join(exc.problems)
            ) from None
    with _connect(s) as conn:
        for site in sites:
            summary = load_site(conn, s.db_schema, site)
            out.write(
                f"site {summary.site}: {summary.gateways} gateways, {summary.sensors} sensors"
                f" ({summary.retired_sensors} retired); registry generation {summary.generation}\n"
            )
    return 0


# --- ingest -----------------------------------------------------------------------------------


def cmd_ingest_run(args: argparse.Namespace, out: TextIO) -> int:
    """Run the ingest service until SIGINT or SIGTERM."""
    s = _settings(args)
    _configure_logging(s)
    try:
        pack, body = read_pack(s.rule_pack)
        hooks = parse_endpoints([{"name": n, "url": u, "secret": k} for n, u, k in s.webhooks])
    except PackError as exc:
        raise CliError(
            f"rule pack refused, {len(exc.problems)} problem(s) (see `tungku rules check`):\n  "
            + "\n  ".join(exc.problems)
        ) from None
    except WebhookError as exc:
        raise CliError(f"webhooks: {exc}") from None
    except OSError as exc:
        raise CliError(f"cannot read rule pack {s.rule_pack}: {exc.strerror}") from None
    if s.alerting and pack.effective > now_utc():
        raise CliError(
            f"rule pack {pack.name} {pack.version} is effective from "
            f"{pack.effective.isoformat()}, not yet in force; run the pack in force now and "
            "put this one in its place when it is due"
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        evaluator: Evaluator | EvaluatorProcess | None = None
        sender = None
        if s.alerting and s.alert_worker:
            evaluator = EvaluatorProcess(
                WorkerConfig(
                    database_url=s.database_url,
                    schema=s.db_schema,
                    rule_pack=str(pack_path(s.rule_pack)),
                    sites=s.sites,
                    webhooks=s.webhooks,
                    log_format=s.log_format,
                    log_level=s.log_level,
                    batch_delay_s=s.alert_batch_delay_ms / 1000,
                )
            )
        elif s.alerting:
            store = AlertStore(database_url=s.database_url, schema=s.db_schema, webhooks=hooks)
            evaluator = Evaluator(
                store=store,
                pack=pack,
                pack_body=body,
                sites=s.sites,
                pack_file=pack_path(s.rule_pack),
            )
        if s.alerting and hooks:
            sender = WebhookSender(database_url=s.database_url, schema=s.db_schema, endpoints=hooks)
        await IngestService(
            settings=s, metrics=create_metrics(), evaluator=evaluator, webhooks=sender
        ).run(stop)

    asyncio.run(main())
    return 0


# --- simulate ---------------------------------------------------------------------------------


def _permits_opener(args: argparse.Namespace) -> Callable[[dict[str, Any]], None]:
    """Record a scenario's permits in the facility record before it plays."""

    def open_permits(line: dict[str, Any]) -> None:
        permits = line.get("permits") or []
        if not permits:
            return
        s = _settings(args)

        async def main() -> None:
            store = AlertStore(database_url=s.database_url, schema=s.db_schema)
            try:
                for p in permits:
                    pid = await store.open_permit(
                        site=p["site"],
                        asset=p["asset"],
                        areas=p["areas"],
                        opened_us=p["open_ms"] * 1000,
                        closed_us=None if p["close_ms"] is None else p["close_ms"] * 1000,
                        issued_by=f"simulator scenario {line['scenario']}",
                    )
                    sys.stderr.write(f"tungku simulate: permit {pid} recorded on {p['asset']}\n")
            finally:
                await store.close()

        try:
            asyncio.run(main())
        except AlertStoreError as exc:
            raise CliError(f"cannot record the scenario's permits: {exc}") from None
        time.sleep(3.0)  # a running service refreshes the facility record every 2 s

    return open_permits


# --- monitor ----------------------------------------------------------------------------------


def _scrape(url: str) -> dict[str, float] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - a configured http URL
            return parse_metrics(resp.read().decode())
    except OSError:
        return None


def _sum(metrics: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in metrics.items() if k == prefix or k.startswith(prefix + "{"))


def cmd_monitor(args: argparse.Namespace, out: TextIO) -> int:
    """Print live ingest progress from the service's metrics endpoint."""
    s = _settings(args)
    url = args.url or f"http://{s.metrics_host}:{s.metrics_port}/metrics"
    prev: dict[str, float] | None = None
    prev_t = 0.0
    deadline = time.monotonic() + args.duration_s if args.duration_s else None
    out.write(
        f"{'time':>8} {'readings/s':>11} {'readings':>11} {'batches':>8} {'rejects':>8}"
        f" {'unacked':>8} {'gateways online':>16}\n"
    )
    while deadline is None or time.monotonic() < deadline:
        m = _scrape(url)
        now = time.monotonic()
        if m is None:
            out.write(f"{time.strftime('%H:%M:%S')} ingest metrics unreachable at {url}\n")
        else:
            readings = _sum(m, "tungku_readings_accepted_total")
            rate = (
                (readings - _sum(prev, "tungku_readings_accepted_total")) / (now - prev_t)
                if prev is not None and now > prev_t
                else 0.0
            )
            rejects = _sum(m, "tungku_readings_rejected_total") + _sum(
                m, "tungku_messages_rejected_total"
            )
            out.write(
                f"{time.strftime('%H:%M:%S')} {rate:11.0f} {readings:11.0f}"
                f" {_sum(m, 'tungku_batches_committed_total'):8.0f} {rejects:8.0f}"
                f" {_sum(m, 'tungku_unacked_messages'):8.0f}"
                f" {_sum(m, 'tungku_gateways_online'):16.0f}\n"
            )
            prev, prev_t = m, now
        out.flush()
        time.sleep(args.interval_s)
    return 0


# --- rejects ----------------------------------------------------------------------------------


def cmd_rejects(args: argparse.Namespace, out: TextIO) -> int:
    """Show the most recent rejects."""
    s = _settings(args)
    with _connect(s) as conn:
        conn.execute(migrations.session_sql(s.db_schema))
        rows = conn.execute(
            "SELECT received_at, topic, reason, rejected_readings, accepted_readings, detail"
            " FROM rejects ORDER BY id DESC LIMIT %s",
            (args.limit,),
        ).fetchall()
    for received_at, topic, reason, rej, acc, detail in rows:
        part = f" [{rej} bad, {acc} kept]" if rej else ""
        out.write(f"{received_at:%Y-%m-%d %H:%M:%S} {topic} {reason}{part}: {detail}\n")
    if not rows:
        out.write("no rejects\n")
    return 0


# --- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The full `tungku` argument parser."""
    p = argparse.ArgumentParser(
        prog="tungku",
        description="Tungku: smelter telemetry ingestion (MQTT -> TimescaleDB), alert rule packs "
        "and simulation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="FILE", help="TOML settings file (table [ingest])")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = sub.add_parser("db", help="database schema", description="Manage the database schema.")
    dbsub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    mig = dbsub.add_parser(
        "migrate",
        help="create or upgrade the schema (idempotent)",
        description="Create the TimescaleDB extension, the schema and its tables, applying "
        "each versioned migration once. Safe to run again; safe to run concurrently.",
    )
    mig.set_defaults(func=cmd_db_migrate)

    reg = sub.add_parser(
        "registry", help="sensor registry", description="Manage the sensor registry."
    )
    regsub = reg.add_subparsers(dest="registry_command", required=True, metavar="ACTION")
    load = regsub.add_parser(
        "load",
        help="load site files (TOML) into the registry",
        description="Validate and store site files: site -> gateways -> sensors with kind, unit "
        "and physical range. Sensors missing from a site's file are retired, not deleted. A "
        "running service picks up the change within registry_refresh_s.",
    )
    load.add_argument("files", nargs="+", metavar="SITE.toml")
    load.set_defaults(func=cmd_registry_load)

    ing = sub.add_parser("ingest", help="the ingest service", description="The ingest service.")
    ingsub = ing.add_subparsers(dest="ingest_command", required=True, metavar="ACTION")
    run = ingsub.add_parser(
        "run",
        help="run the ingest service (until SIGINT/SIGTERM)",
        description="Subscribe to tungku/v1/+/+/readings and .../status with a persistent MQTT "
        "v5 session, validate, batch, commit to TimescaleDB, and acknowledge each message "
        "only after its rows are committed. Logs JSON to stderr; metrics on "
        "http://<metrics_host>:<metrics_port>/metrics.",
    )
    run.set_defaults(func=cmd_ingest_run)

    mon = sub.add_parser(
        "monitor",
        help="live progress of a running ingest service",
        description="Poll the ingest metrics endpoint and print readings/s, totals, batches, "
        "rejects, unacknowledged messages and gateways online.",
    )
    mon.add_argument("--url", help="metrics URL (default from settings)")
    mon.add_argument("--interval-s", type=float, default=2.0, help="seconds between lines")
    mon.add_argument("--duration-s", type=float, default=0.0, help="stop after this (0: never)")
    mon.set_defaults(func=cmd_monitor)

    rej = sub.add_parser(
        "rejects",
        help="show recent rejected messages and readings",
        description="List the newest rows of the rejects table: when, topic, reason, how many "
        "readings of the message were bad and kept, and the first problem. Each row keeps the "
        "whole payload (rejects.payload) and one entry per bad reading (rejects.errors) for "
        "inspection in SQL.",
    )
    rej.add_argument(
        "--limit", type=int, default=20, metavar="N", help="rows to show (default %(default)s)"
    )
    rej.set_defaults(func=cmd_rejects)

    rules = sub.add_parser("rules", help="alert rule packs (check, show)")
    rules_command.add_arguments(rules)

    console.add_arguments(sub, lambda _p: None)
    api_cli.add_arguments(sub, lambda _p: None)
    scorer.add_arguments(sub)

    sim = sub.add_parser("simulate", help="simulate smelter gateways publishing readings")
    sim_command.add_arguments(sim)
    sim.add_argument(
        "--no-permits",
        action="store_true",
        help="with --scenario: do not record the scenario's hot-work permits in the database "
        "(by default they are recorded, then the command waits 3 s for a running service to "
        "pick them up)",
    )
    sim.set_defaults(
        func=lambda args, out: sim_command.run(
            args, before_publish=None if args.no_permits else _permits_opener(args)
        )
    )

    fleet = sub.add_parser("fleet", help="simulator fleets", description="Simulator fleets.")
    fleetsub = fleet.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    export = fleetsub.add_parser("export", help="write a fleet's registry as site files")
    sim_command.add_registry_arguments(export)
    export.set_defaults(func=lambda args, out: sim_command.run_registry(args))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `tungku`."""
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "console", None) is not None:
            return int(args.console(args, _settings(args), sys.stdout))
        return int(args.func(args, sys.stdout))
    except (CliError, SettingsError, console.ConsoleError, api_cli.UserCommandError) as exc:
        sys.stderr.write(f"tungku: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
