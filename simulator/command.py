"""The `tungku simulate` and `tungku fleet export` subcommands: arguments in, exit code out.

Owns the command-line options of the simulator, turning them into a `PublishConfig`, stopping
cleanly on SIGINT/SIGTERM, and the exit code (0 only when every published reading was
acknowledged). Also writes a fleet's registry site files (`export_registry`), lists the
incident scenarios and plays one (`--scenario`): it prints the scenario's timeline and permits
as one JSON line on stdout before publishing, and can write its expectations as JSON.

It must not hold any simulation or MQTT logic; `ingest.cli` wires these functions into the
`tungku` command.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from ingest.registry import dump_site
from simulator.fleet import (
    Fleet,
    FleetError,
    load_default_fleet,
    load_fleet,
    load_scenario_fleet,
)
from simulator.publisher import (
    Mode,
    PublishConfig,
    PublishConfigError,
    ReadingSource,
    publish_fleet,
    wall_ms,
)
from simulator.scenario import SCENARIOS, Scenario, ScenarioError, ScenarioPlant, describe
from simulator.spool import SpoolError

EXIT_OK = 0
EXIT_UNACKED = 1
EXIT_USAGE = 2
DEFAULT_SCENARIO_SPEED = 1000.0  # plant seconds per wall second when --scenario has no pacing


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def _add_fleet_argument(parser: argparse.ArgumentParser, *, scenario: bool = False) -> None:
    more = (
        "; with --scenario: the shipped scenario fleet (site scenario-site, 3 gateways, 55 sensors)"
        if scenario
        else ""
    )
    parser.add_argument(
        "--fleet",
        type=Path,
        metavar="PATH",
        help="fleet file (TOML: sites -> gateways; see simulator/fleet.py); "
        f"default: the shipped two-site Morowali fleet (9 gateways, 424 sensors){more}",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `tungku simulate` to its subparser."""
    parser.description = (
        "Simulate smelter site gateways: publish plausible sensor readings to an MQTT broker "
        "under wire contract v1, one client per gateway, QoS 1. Readings the broker cannot "
        "take are spooled on disk and backfilled, in order, when it comes back."
    )
    _add_fleet_argument(parser, scenario=True)
    parser.add_argument(
        "--host", default="127.0.0.1", help="MQTT broker host (default %(default)s)"
    )
    parser.add_argument(
        "--port", type=_positive_int, default=1884, help="MQTT broker port (default %(default)s)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="seed of the plant model; the same seed gives the same values (default: the "
        "fleet file's seed)",
    )
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument(
        "--realtime",
        action="store_true",
        help="one tick (one second of plant time) per wall-clock second; the default",
    )
    pace.add_argument(
        "--speed",
        type=_positive_float,
        metavar="X",
        help="accelerated: X seconds of plant time per wall-clock second; needs --duration-s "
        "(plant time then ends at the current time) or --start-ms; with --scenario the "
        f"default pacing is --speed {DEFAULT_SCENARIO_SPEED:g}",
    )
    pace.add_argument(
        "--count",
        type=_positive_int,
        metavar="N",
        help="as fast as possible, exactly N readings; plant time ends near now so no reading "
        "is in the future",
    )
    parser.add_argument(
        "--duration-s",
        type=_positive_int,
        metavar="S",
        help="seconds of plant time to run in --realtime/--speed mode (default: until interrupted)",
    )
    parser.add_argument(
        "--readings-per-message",
        type=_positive_int,
        default=100,
        metavar="N",
        help="readings packed into one MQTT message, at most (default %(default)s); paced "
        "modes also send every tick's readings at once",
    )
    parser.add_argument(
        "--spool-dir",
        type=Path,
        default=Path("var/simulator-spool"),
        metavar="DIR",
        help="store-and-forward buffers, one SQLite file per gateway; also keeps each gateway's "
        "message seq across restarts (default %(default)s)",
    )
    parser.add_argument(
        "--record",
        type=Path,
        metavar="PATH",
        help="write every generated reading as CSV site,sensor,ts_ms,value (value round-trips "
        "exactly) to compare against the database",
    )
    parser.add_argument(
        "--start-ms",
        type=int,
        metavar="MS",
        help="plant time of the first tick, epoch milliseconds (default: chosen so the run "
        "ends at the current time, or now in real time)",
    )
    parser.add_argument(
        "--ack-timeout-s",
        type=_positive_float,
        default=30.0,
        metavar="S",
        help="how long to wait at the end for the broker to acknowledge everything "
        "(default %(default)s)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument(
        "--scenario",
        choices=list(SCENARIOS),
        metavar="NAME",
        help="play an incident scenario of DOMAIN.md §6 over the fleet's normal baseline, "
        "for its own duration, plant time ending at about now; prints its timeline and the "
        "permits it needs as one JSON line on stdout first. Not with --count or --duration-s. "
        f"Names: {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--list-scenarios",
        action="store_true",
        help="list the scenarios (name, title, T0, duration, expected alerts) and exit",
    )
    parser.add_argument(
        "--expectations-out",
        type=Path,
        metavar="FILE",
        help="write the expectations (expected and forbidden alerts, permits, timeline) as "
        "JSON: of the --scenario played (with its absolute times), or of every scenario "
        "with --list-scenarios",
    )


def config_from_args(args: argparse.Namespace, fleet: Fleet) -> PublishConfig:
    """The publish configuration the parsed options describe."""
    if args.count is not None:
        mode, speed = Mode.COUNT, 1.0
    elif args.speed is not None:
        mode, speed = Mode.SPEED, float(args.speed)
    else:
        mode, speed = Mode.REALTIME, 1.0
    return PublishConfig(
        host=args.host,
        port=args.port,
        mode=mode,
        speed=speed,
        count=args.count,
        duration_s=args.duration_s if mode is not Mode.COUNT else None,
        start_ms=args.start_ms,
        seed=fleet.seed if args.seed is None else args.seed,
        readings_per_message=args.readings_per_message,
        spool_dir=args.spool_dir,
        record_path=args.record,
        progress=not args.quiet,
        ack_timeout_s=args.ack_timeout_s,
    )


def _load(path: Path | None) -> Fleet:
    return load_default_fleet() if path is None else load_fleet(path)


def _write_json(path: Path, doc: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def scenario_start_ms(now_ms: int, duration_s: int, speed: float) -> int:
    """Plant time of tick 0 so that a run paced at `speed` ends at about `now_ms` + its length.

    The same rule as the publisher's: the accelerated part of the run lies in the past.
    """
    return now_ms - int(duration_s * max(0.0, 1.0 - 1.0 / speed)) * 1000


def scenario_document(played: ScenarioPlant, start_ms: int, seed: int) -> dict[str, object]:
    """The scenario as played: timeline, permits and expectations, with absolute times."""
    doc = played.scenario.to_json(start_ms)
    doc["site"] = played.site
    doc["seed"] = seed
    doc["params"] = dict(played.params)
    for permit in doc["permits"]:
        permit["site"] = played.site
    return doc


def _list(args: argparse.Namespace) -> int:
    for line in describe(list(SCENARIOS.values())):
        print(line)  # noqa: T201 -- the command's result
    if args.expectations_out is not None:
        try:
            _write_json(
                args.expectations_out, {"scenarios": [s.to_json() for s in SCENARIOS.values()]}
            )
        except OSError as exc:
            sys.stderr.write(f"tungku simulate: cannot write {args.expectations_out}: {exc}\n")
            return EXIT_UNACKED
    return EXIT_OK


def _prepare_scenario(
    args: argparse.Namespace, scenario: Scenario
) -> tuple[Fleet, PublishConfig, ScenarioPlant, dict[str, object]]:
    if args.count is not None or args.duration_s is not None:
        raise PublishConfigError(
            "--scenario plays the scenario's own duration: drop --count/--duration-s"
        )
    fleet = load_scenario_fleet() if args.fleet is None else load_fleet(args.fleet)
    if args.realtime:
        mode, speed = Mode.REALTIME, 1.0
    else:
        mode, speed = Mode.SPEED, float(args.speed or DEFAULT_SCENARIO_SPEED)
    seed = fleet.seed if args.seed is None else args.seed
    played = ScenarioPlant(fleet, scenario, seed)
    start_ms = (
        args.start_ms
        if args.start_ms is not None
        else scenario_start_ms(wall_ms() // 1000 * 1000, scenario.duration_s, speed)
    )
    config = PublishConfig(
        host=args.host,
        port=args.port,
        mode=mode,
        speed=speed,
        duration_s=scenario.duration_s,
        start_ms=start_ms,
        seed=seed,
        readings_per_message=args.readings_per_message,
        spool_dir=args.spool_dir,
        record_path=args.record,
        progress=not args.quiet,
        ack_timeout_s=args.ack_timeout_s,
    )
    return fleet, config, played, scenario_document(played, start_ms, seed)


def run(
    args: argparse.Namespace, before_publish: Callable[[dict[str, Any]], None] | None = None
) -> int:
    """Run `tungku simulate`; return the process exit code. With a scenario, `before_publish`
    gets its timeline line (permits included) before anything is published."""
    if args.list_scenarios:
        return _list(args)
    source: ReadingSource | None = None
    try:
        if args.scenario is not None:
            fleet, config, played, doc = _prepare_scenario(args, SCENARIOS[args.scenario])
            source = played
        elif args.expectations_out is not None:
            raise PublishConfigError("--expectations-out needs --scenario or --list-scenarios")
        else:
            fleet = _load(args.fleet)
            config = config_from_args(args, fleet)
    except (FleetError, PublishConfigError, ScenarioError) as exc:
        sys.stderr.write(f"tungku simulate: {exc}\n")
        return EXIT_USAGE
    if source is not None:
        line = {
            "scenario": doc["name"],
            "site": doc["site"],
            "seed": doc["seed"],
            "start_ms": doc["start_ms"],
            "t0_ms": doc["t0_ms"],
            "end_ms": doc["end_ms"],
            "permits": doc["permits"],
        }
        print(json.dumps(line, ensure_ascii=False), flush=True)  # noqa: T201 -- for the DB side
        if before_publish is not None:
            before_publish(line)
        if args.expectations_out is not None:
            try:
                _write_json(args.expectations_out, doc)
            except OSError as exc:
                sys.stderr.write(f"tungku simulate: cannot write {args.expectations_out}: {exc}\n")
                return EXIT_UNACKED
    return _publish(fleet, config, source)


def _publish(fleet: Fleet, config: PublishConfig, source: ReadingSource | None) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        sys.stderr.write("tungku simulate: stopping, waiting for acknowledgements\n")
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        report = publish_fleet(fleet, config, stop=stop, source=source)
    except SpoolError as exc:
        sys.stderr.write(f"tungku simulate: {exc}\n")
        return EXIT_UNACKED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(report.summary())  # noqa: T201 -- the command's result, for the operator
    if report.all_acked:
        return EXIT_OK
    for error in report.errors[:10]:
        sys.stderr.write(f"tungku simulate: {error}\n")
    sys.stderr.write(
        f"tungku simulate: not every reading was acknowledged: "
        f"{report.readings_published - report.readings_acked} unacknowledged, "
        f"{report.readings_refused} refused, {report.left_in_spool_readings} left in "
        f"{config.spool_dir} (backfilled at the next start)\n"
    )
    return EXIT_UNACKED


def export_registry(fleet: Fleet, out_dir: Path) -> list[Path]:
    """Write one registry site file per fleet site into out_dir; return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for site in fleet.sites():
        path = out_dir / f"{site.id}.toml"
        path.write_text(dump_site(site), encoding="utf-8")
        written.append(path)
    return written


def add_registry_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `tungku fleet export` to its subparser."""
    parser.description = (
        "Write the sensor registry of a simulator fleet: one site file per site, as the "
        "ingest service loads them."
    )
    _add_fleet_argument(parser)
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="directory for <site>.toml files"
    )


def run_registry(args: argparse.Namespace) -> int:
    """Run `tungku fleet export`; return the process exit code."""
    try:
        fleet = _load(args.fleet)
        paths = export_registry(fleet, args.out)
    except FleetError as exc:
        sys.stderr.write(f"tungku fleet export: {exc}\n")
        return EXIT_USAGE
    except OSError as exc:
        sys.stderr.write(f"tungku fleet export: cannot write {args.out}: {exc}\n")
        return EXIT_UNACKED
    for path in paths:
        print(path)  # noqa: T201 -- the command's result: the files written
    return EXIT_OK
