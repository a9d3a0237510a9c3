"""The `tungku simulate` and `tungku fleet export` subcommands: arguments in, exit code out.

Owns the command-line options of the simulator, turning them into a `PublishConfig`, stopping
cleanly on SIGINT/SIGTERM, and the exit code (0 only when every published reading was
acknowledged). Also writes a fleet's registry site files (`export_registry`).

It must not hold any simulation or MQTT logic; `ingest.cli` wires these functions into the
`tungku` command.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from ingest.registry import dump_site
from simulator.fleet import Fleet, FleetError, load_default_fleet, load_fleet
from simulator.publisher import Mode, PublishConfig, PublishConfigError, publish_fleet
from simulator.spool import SpoolError

EXIT_OK = 0
EXIT_UNACKED = 1
EXIT_USAGE = 2


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


def _add_fleet_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fleet",
        type=Path,
        metavar="PATH",
        help="fleet file (TOML: sites -> gateways; see simulator/fleet.py); "
        "default: the shipped two-site Morowali fleet (9 gateways, 424 sensors)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `tungku simulate` to its subparser."""
    parser.description = (
        "Simulate smelter site gateways: publish plausible sensor readings to an MQTT broker "
        "under wire contract v1, one client per gateway, QoS 1. Readings the broker cannot "
        "take are spooled on disk and backfilled, in order, when it comes back."
    )
    _add_fleet_argument(parser)
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
        "(plant time then ends at the current time) or --start-ms",
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


def run(args: argparse.Namespace) -> int:
    """Run `tungku simulate`; return the process exit code."""
    try:
        fleet = _load(args.fleet)
        config = config_from_args(args, fleet)
    except (FleetError, PublishConfigError) as exc:
        sys.stderr.write(f"tungku simulate: {exc}\n")
        return EXIT_USAGE
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        sys.stderr.write("tungku simulate: stopping, waiting for acknowledgements\n")
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        report = publish_fleet(fleet, config, stop=stop)
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
