"""The `tungku rules` subcommands: check rule pack files and show a pack's rules.

Owns the options of `tungku rules check` and `tungku rules show`, the text they print and
their exit codes: 0 when every pack is valid, 1 when a pack has problems (each printed on its
own line, prefixed by the file name), 2 when a file cannot be read.

It must not parse or validate anything itself (that is `alerting.pack`); `ingest.cli` wires
these functions into the `tungku` command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime, time
from pathlib import Path
from typing import TextIO

from alerting.pack import (
    Level,
    Pack,
    PackError,
    Rule,
    RuleKind,
    default_pack_path,
    load_pack,
)

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_UNREADABLE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the actions of `tungku rules` (check, show) to its subparser."""
    parser.description = (
        "Alert rule packs: versioned TOML files of alert rules (thresholds, rates, "
        "deviations from baseline, gas exposure, sensor health, the hot-work interlock), "
        "each level with its source. See alerting/pack.py for the format."
    )
    sub = parser.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    check = sub.add_parser(
        "check",
        help="validate rule pack files",
        description="Parse and validate each rule pack file and print either a one-line "
        "summary or every problem found, one per line, with its location (rule id, table, "
        "key, or TOML line). Exit status: 0 all valid, 1 a pack has problems, 2 a file "
        "cannot be read.",
    )
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    check.set_defaults(func=lambda args, out: check_files(args.files, out, sys.stderr))
    show = sub.add_parser(
        "show",
        help="print a rule pack's rules as a table",
        description="Print each rule of a pack (id, kind, plant state it runs in, sensor "
        "kinds) and under it each level: value, on-delay, priority, latch and source. "
        "Exit status as for check.",
    )
    show.add_argument(
        "file",
        nargs="?",
        type=Path,
        metavar="FILE",
        help=f"rule pack file (default: the shipped pack, {default_pack_path().name})",
    )
    show.set_defaults(
        func=lambda args, out: show_file(args.file or default_pack_path(), out, sys.stderr)
    )


def _load(path: Path, out: TextIO, err: TextIO) -> tuple[Pack | None, int]:
    """The pack, or None with the exit code after reporting why not."""
    try:
        return load_pack(path), EXIT_OK
    except OSError as exc:
        err.write(f"tungku: error: cannot read rule pack {path}: {exc.strerror or exc}\n")
        return None, EXIT_UNREADABLE
    except PackError as exc:
        for problem in exc.problems:
            out.write(f"{exc.source}: {problem}\n")
        return None, EXIT_INVALID


def format_effective(moment: datetime) -> str:
    """A pack's effective time: the date alone when it is midnight UTC."""
    return moment.date().isoformat() if moment.time() == time(0, 0) else moment.isoformat()


def summary(pack: Pack) -> str:
    """One line naming a valid pack."""
    return (
        f"pack {pack.name} {pack.version}, effective {format_effective(pack.effective)}, "
        f"{len(pack.rules)} rules"
    )


def check_files(paths: Sequence[Path], out: TextIO, err: TextIO) -> int:
    """Validate each file; the exit code is the worst outcome of them all."""
    worst = EXIT_OK
    for path in paths:
        pack, code = _load(path, out, err)
        if pack is not None:
            out.write(f"{path}: ok — {summary(pack)}\n")
        worst = max(worst, code)
    return worst


def _condition(rule: Rule, level: Level) -> str:
    """What crossing this level means, in words and the rule's own unit."""
    v = f"{level.level:g}"
    match rule.kind:
        case RuleKind.THRESHOLD:
            return f"{'<' if rule.direction == 'low' else '>'} {v}"
        case RuleKind.RATE if rule.measure == "swing":
            return f"swing > {v} within {rule.window_s:g} s"
        case RuleKind.RATE:
            return f"{rule.measure} > {v} per {rule.per_s:g} s over {rule.window_s:g} s"
        case RuleKind.DEVIATION:
            return f"{rule.measure} > {v} from {rule.baseline_s:g}-s baseline"
        case RuleKind.EXPOSURE:
            return f"{rule.measure} > {v}"
        case RuleKind.STALE:
            periods = f" and {level.periods:g} periods" if level.periods else ""
            return f"silent {v} s{periods}"
        case RuleKind.STUCK:
            return f"spread < {v} over {rule.window_s:g} s"
        case RuleKind.QUALITY:
            return "bad reading"
        case RuleKind.GATEWAY:
            return "offline"
    return v  # pragma: no cover - every kind is matched above


def show_pack(pack: Pack, out: TextIO) -> None:
    """Print the pack as a table: a line per rule, an indented line per level."""
    out.write(f"{summary(pack)}; sha256 {pack.sha256[:12]}\n\n")
    heads: list[tuple[str, str, str, str]] = []
    lines: list[list[tuple[str, str, str, str]]] = []
    for rule in pack.rules:
        kind = f"{rule.kind} {rule.direction if rule.kind is RuleKind.THRESHOLD else rule.measure}"
        when = f"{rule.when}{' +permit' if rule.requires_permit else ''}"
        sensors = ", ".join(rule.sensors.kinds) or "(gateways)"
        if rule.sensors.assets:
            sensors += f" on {', '.join(rule.sensors.assets)}"
        heads.append((rule.id, kind.strip(), when, sensors))
        lines.append(
            [
                (
                    str(lv.severity),
                    _condition(rule, lv),
                    (f"after {lv.on_delay_s:g} s" if lv.on_delay_s else "at once")
                    + f", {lv.priority}{', latched' if lv.latch else ''}",
                    lv.source,
                )
                for lv in rule.levels
            ]
        )
    w = [max(len(h[i]) for h in [("ID", "KIND", "WHEN", ""), *heads]) for i in range(3)]
    levels = [lv for group in lines for lv in group]
    c = max(len(lv[1]) for lv in levels)
    d = max(len(lv[2]) for lv in levels)
    out.write(f"{'ID':<{w[0]}}  {'KIND':<{w[1]}}  {'WHEN':<{w[2]}}  SENSORS\n")
    for head, group in zip(heads, lines, strict=True):
        out.write(f"{head[0]:<{w[0]}}  {head[1]:<{w[1]}}  {head[2]:<{w[2]}}  {head[3]}\n")
        for severity, condition, delay, source in group:
            out.write(f"    {severity:<8}  {condition:<{c}}  {delay:<{d}}  {source}\n")


def show_file(path: Path, out: TextIO, err: TextIO) -> int:
    """Print the pack in this file as a table, or its problems."""
    pack, code = _load(path, out, err)
    if pack is not None:
        show_pack(pack, out)
    return code
