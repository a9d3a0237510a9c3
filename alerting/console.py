"""The alerting commands of `tungku`: alerts, operator actions, the journal, permits, replay.

Wiring only: parses arguments, calls the store (`alerting.store`) or the replayer
(`alerting.replay`), prints. Every operator action names its user (`--user`), and the
lifecycle decides whether it is allowed; a refusal is printed with its reason (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import time
from collections.abc import Callable, Coroutine
from datetime import date, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from alerting import lifecycle
from alerting.evaluator import read_pack
from alerting.pack import PackError
from alerting.replay import Replayer
from alerting.store import (
    ActionError,
    AlertRow,
    AlertStore,
    AlertStoreError,
    to_dt,
    to_us,
)

Settings = Any  # ingest.settings.Settings, passed in by the CLI


class ConsoleError(RuntimeError):
    """Raised when a command cannot run: bad arguments, no database, a refused action."""


def _when(text: str) -> int:
    """RFC 3339 (or 'now') as event-time microseconds."""
    if text == "now":
        return time.time_ns() // 1000
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an RFC 3339 time or 'now'") from None
    if dt.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset")
    return to_us(dt)


def _duration_s(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        value = float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 30m, 8h") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("a duration must be positive")
    return value


def add_arguments(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register `alert`, `journal`, `permit` and `replay` on the tungku parser."""
    alert = sub.add_parser(
        "alert", help="alerts and operator actions", description="Alerts and operator actions."
    )
    asub = alert.add_subparsers(dest="alert_command", required=True, metavar="ACTION")
    ls = asub.add_parser("list", help="alerts, most urgent first")
    common(ls)
    ls.add_argument("--site", help="only this site")
    ls.add_argument("--all", action="store_true", help="include alerts in the normal state")
    ls.set_defaults(console=cmd_alert_list)
    for name, helptext in (
        ("ack", "acknowledge an alert"),
        ("shelve", "shelve an alert for a while, with a reason"),
        ("unshelve", "unshelve an alert"),
        ("reset", "reset a latched alert whose condition has cleared"),
        ("comment", "add a comment to an alert's journal"),
        ("remove", "take an alert out of service (authorised)"),
        ("restore", "return an alert to service"),
        ("show", "an alert and its journal"),
    ):
        p = asub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:])
        common(p)
        p.add_argument("alert_id", type=int, help="the alert's id (see `tungku alert list`)")
        if name != "show":
            p.add_argument("--user", required=True, help="who acts (recorded in the journal)")
        if name in ("shelve", "unshelve", "reset", "comment", "remove", "restore", "ack"):
            p.add_argument(
                "--reason",
                required=name in ("shelve", "comment", "remove"),
                default="",
                help="why (required to shelve, comment and remove)",
            )
        if name == "shelve":
            p.add_argument(
                "--for", dest="duration", type=_duration_s, required=True, help="e.g. 30m, 8h"
            )
        if name == "remove":
            p.add_argument("--authorised-by", required=True, help="who authorised it")
        p.set_defaults(console=cmd_alert_action, action=name)

    jr = sub.add_parser("journal", help="the alert journal", description="The alert journal.")
    jsub = jr.add_subparsers(dest="journal_command", required=True, metavar="ACTION")
    ver = jsub.add_parser(
        "verify",
        help="recompute the journal's hash chain",
        description="Recompute every journal entry's hash (sha256 of the previous hash and the "
        "entry) in the database of the settings (TUNGKU_DATABASE_URL, TUNGKU_DB_SCHEMA or "
        "--config) and compare with the chain's head. Exit 0 when intact; 1, naming each "
        "altered, missing or reordered entry, when not.",
    )
    common(ver)
    ver.set_defaults(console=cmd_journal_verify)

    pm = sub.add_parser("permit", help="hot-work permits", description="Hot-work permits.")
    psub = pm.add_subparsers(dest="permit_command", required=True, metavar="ACTION")
    op = psub.add_parser("open", help="record a hot-work permit")
    common(op)
    op.add_argument("--site", required=True)
    op.add_argument("--asset", required=True, help="the furnace or equipment worked on")
    op.add_argument("--area", action="append", default=[], help="a work area it covers")
    op.add_argument("--from", dest="opened", type=_when, default="now", help="RFC 3339 or now")
    op.add_argument("--until", type=_when, default=None, help="RFC 3339 (default: open-ended)")
    op.add_argument("--user", required=True, help="who issued it")
    op.set_defaults(console=cmd_permit_open)
    cl = psub.add_parser("close", help="close a permit")
    common(cl)
    cl.add_argument("permit_id", type=int)
    cl.add_argument("--at", type=_when, default="now", help="RFC 3339 or now")
    cl.set_defaults(console=cmd_permit_close)

    fac = sub.add_parser(
        "facility", help="the minimal facility record", description="The facility record."
    )
    fsub = fac.add_subparsers(dest="facility_command", required=True, metavar="ACTION")
    fd = fsub.add_parser("finding", help="record an open inspection finding on an asset")
    common(fd)
    fd.add_argument("--site", required=True)
    fd.add_argument("--asset", required=True)
    fd.add_argument("--text", required=True)
    fd.add_argument("--from", dest="opened", type=_when, default="now")
    fd.set_defaults(console=cmd_finding)
    rpt = fsub.add_parser(
        "report", help="record a periodic report's due date and submission (late escalates)"
    )
    common(rpt)
    rpt.add_argument("--site", required=True)
    rpt.add_argument("--period", required=True, help="e.g. 2026-S2")
    rpt.add_argument("--due", type=_when, required=True, help="RFC 3339")
    rpt.add_argument("--submitted", type=_when, default=None, help="RFC 3339 (omit: not yet)")
    rpt.set_defaults(console=cmd_report)
    ident = fsub.add_parser("identity", help="set the facility's identity")
    common(ident)
    ident.add_argument("--site", required=True)
    ident.add_argument("--company", required=True)
    ident.add_argument("--iui", default="", help="industrial business licence (IUI) number")
    ident.add_argument("--estate", default="", help="industrial estate, e.g. IMIP")
    ident.set_defaults(console=cmd_identity)
    sm = fsub.add_parser("smk3", help="set the SMK3 certificate expiry date")
    common(sm)
    sm.add_argument("--site", required=True)
    sm.add_argument("--expires", type=date.fromisoformat, required=True, help="YYYY-MM-DD")
    sm.set_defaults(console=cmd_smk3)

    rp = sub.add_parser(
        "replay",
        help="run stored or recorded readings through a rule pack",
        description="Run readings through a rule pack and the alarm lifecycle in memory and "
        "print the transitions the service would journal. Readings come from the database "
        "(--site, --from, --to) or from a file recorded by `tungku simulate --record` "
        "(site,sensor,ts_ms,value). Nothing is written.",
    )
    common(rp)
    rp.add_argument("--pack", default="", help="rule pack file (default: the shipped pack)")
    rp.add_argument("--site", action="append", default=[], help="site(s) to replay")
    rp.add_argument("--from", dest="start", type=_when, default=None, help="RFC 3339")
    rp.add_argument("--to", dest="end", type=_when, default=None, help="RFC 3339")
    rp.add_argument("--recorded", type=Path, default=None, help="a recorded readings CSV")
    rp.set_defaults(console=cmd_replay)


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        return asyncio.run(coro)
    except AlertStoreError as exc:
        raise ConsoleError(str(exc)) from None


def _store(s: Settings) -> AlertStore:
    return AlertStore(database_url=s.database_url, schema=s.db_schema)


def _fmt_time(us: int | None) -> str:
    return to_dt(us).strftime("%Y-%m-%d %H:%M:%S") if us is not None else "-"


def _line(a: AlertRow) -> str:
    st = a.state
    val = f"{a.value:.4g}" if a.value is not None else "-"
    lim = f"{a.limit:.4g}" if a.limit is not None else "-"
    extra = f" shelved until {_fmt_time(st.shelved_until_us)}" if st.shelved_until_us else ""
    return (
        f"{a.id:>6} {st.priority.value:<7} {st.state.value:<14} "
        f"{(st.severity.value if st.severity else '-'):<8} {a.site_id}/{a.asset:<14} "
        f"{a.rule_id:<24} {a.subject:<26} value {val} limit {lim} since "
        f"{_fmt_time(st.last_change_us)}{extra}"
    )


def cmd_alert_list(args: argparse.Namespace, s: Settings, out: TextIO) -> int:
    """Print alerts."""

    async def main() -> int:
        store = _store(s)
        try:
            rows = await store.alerts(site=args.site, active_only=not args.all)
        finally:
            await store.close()
        for a in rows:
            out.write(_line(a) + "\n")
        if not rows:
            out.write("no alerts\n")
        return 0

    return _run(main())


def cmd_alert_action(args: argparse.Namespace, s: Settings, out: TextIO) -> int:
    """Apply an operator action, or show an alert."""
    now = time.time_ns() // 1000

    async def main() -> int:
        store = _store(s)
        try:
            if args.action == "show":
                rows = await store.journal_rows(alert_id=args.alert_id)
                if not rows:
                    out.write(f"alert {args.alert_id} has no journal entries\n")
                    return 1
                for r in rows:
                    out.write(
                        f"{r['seq']:>6} {_fmt_time(r['at_us'])} {r['actor']:<10} "
                        f"{r['action']:<18} {r['from_state']} -> {r['to_state']} "
                        f"{r['severity'] or ''} {r['reason']}\n"
                    )
                return 0
            event = _event(args, now)
            try:
                entry = await store.act(args.alert_id, event, max_shelve_s=s.max_shelve_s)
            except ActionError as exc:
                out.write(f"refused: {exc}\n")
                return 1
            out.write(
                f"alert {args.alert_id}: {entry['action']} by {entry['actor']}: "
                f"{entry['from_state']} -> {entry['to_state']} (journal entry {entry['seq']})\n"
            )
            return 0
        finally:
            await store.close()

    return _run(main())


def _event(args: argparse.Namespace, now: int) -> lifecycle.Event:
    u, why = args.user, getattr(args, "reason", "")
    match args.action:
        case "ack":
            return lifecycle.Acknowledge(at_us=now, actor=u, comment=why)
        case "shelve":
            return lifecycle.Shelve(
                at_us=now, actor=u, reason=why, until_us=now + int(args.duration * 1_000_000)
            )
        case "unshelve":
            return lifecycle.Unshelve(at_us=now, actor=u, reason=why)
        case "reset":
            return lifecycle.Reset(at_us=now, actor=u, reason=why)
        case "comment":
            return lifecycle.Comment(at_us=now, actor=u, text=why)
        case "remove":
            return lifecycle.RemoveFromService(
                at_us=now, actor=u, reason=why, authorised_by=args.authorised_by
            )
        case "restore":
            return lifecycle.ReturnToService(at_us=now, actor=u, reason=why)
    raise ConsoleError(f"unknown action {args.action}")


def cmd_journal_verify(args: argparse.Namespace, s: Settings, out: TextIO) -> int:
    """Verify the journal's hash chain."""

    async def main() -> int:
        store = _store(s)
        try:
            v = await store.verify_journal()
        finally:
            await store.close()
        if v.ok:
            out.write(f"journal intact: {v.entries} entries, last hash {v.last_hash.hex()}\n")
            return 0
        out.write(f"journal TAMPERED: {len(v.problems)} problem(s) in {v.entries} entries\n")
        for p in v.problems:
            out.write(f"  {p}\n")
        return 1

    return _run(main())


def cmd_permit_open(args: argparse.Namespace, s: Settings, out: TextIO) -> int:
    """Record a hot-work permit."""

    async def main() -> int:
        store = _store(s)
        try:
            pid = await store.open_permit(
                site=args.site,
                asset=args.asset,
                areas=args.area,
                opened_us=args.opened,
                closed_us=args.until,
                issued_by=args.user,
            )
        finally:
            await store.close()
        out.write(f"permit {pid} open on {args.site}/{args.asset} from {_fmt_time(args.opened)}\n")
        return 0

    return _run(main())


def cmd_permit_close(args: argparse.Namespace, s: Settings, out: TextIO) -> int:
    """Close a permit."""

    async def main() -> int:
        store = _store(s)
        try:
            await store.close_permit(args.permit_id, args.at)
        except ActionError as exc:
            out.write(f"refused: {exc}\n")
            return 1
        finally:
            await store.close()
        out.write(f"permit {args.permit_id} closed at {_fmt_time(args.at)}\n")
        return 0

    return _run(main())


def cmd_finding(args: argparse.Namespace, s: Settings, out: TextIO) -> int:
    """Record an inspection finding."""

    async def main() -> int:
        store = _store(s)
        try:
            fid = await store.add_finding(
                site=args.site, asset=args.asset, opened_us=args.opened, description=args.text
            )
        finally:
            await store.close()
        out.write(f"finding {fid} open on {args.site}/{args.asset}\n")
        return 0

    return _run(main())


def cmd_report(args: argparse.Namespace, s: Settings, out: TextIO) -> int:
    """Record a periodic report."""

    async def main() -> int:
        store = _store(s)
        try:
            await store.record_report(
                site=args.site, period=args.period, due_us=args.due, submitted_us=args.submitted
            )
        finally:
            await store.close()
        state = "submitted" if args.submitted is not None else "not submitted"
        out.write(f"{args.site}: report {args.period} due {_fmt_time(args.due)}, {state}\n")
        return 0

    return _run(main())


def cmd_identity(args: argparse.Namespace, s: Settings, out: TextIO) -> int:
    """Set the facility's identity."""

    async def main() -> int:
        store = _store(s)
        try:
            await store.set_identity(
                site=args.site, company=args.company, iui_number=args.iui, estate=args.estate
            )
        finally:
            await store.close()
        out.write(f"{args.site}: {args.company}\n")
        return 0

    return _run(main())


def cmd_smk3(args: argparse.Namespace, s: Settings, out: TextIO) -> int:
    """Set the SMK3 certificate expiry."""

    async def main() -> int:
        store = _store(s)
        try:
            await store.set_smk3_expiry(args.site, args.expires)
        finally:
            await store.close()
        out.write(f"{args.site}: SMK3 certificate valid through {args.expires}\n")
        return 0

    return _run(main())


def cmd_replay(args: argparse.Namespace, s: Settings, out: TextIO) -> int:
    """Replay readings through a pack and print the transitions."""
    try:
        pack, _body = read_pack(args.pack)
    except PackError as exc:
        raise ConsoleError(
            f"{exc.source}: {len(exc.problems)} problem(s):\n  " + "\n  ".join(exc.problems)
        ) from None
    except OSError as exc:
        raise ConsoleError(f"cannot read rule pack: {exc}") from None

    async def main() -> int:
        store = _store(s)
        try:
            sensors = await store.sensors(args.site)
            compliance = await store.compliance()
            rp = Replayer(pack, sensors, compliance)
            if args.recorded is not None:
                by_id = {(x.site, x.id): x.key for x in sensors}
                for chunk in _recorded(args.recorded, by_id):
                    rp.feed(*chunk)
            else:
                async for chunk in store.readings_between(
                    [x.key for x in sensors], args.start, args.end
                ):
                    rp.feed(*chunk)
        finally:
            await store.close()
        res = rp.result
        for e in res.entries:
            val = "" if e["value"] is None else f" value {e['value']:.6g}"
            lim = "" if e["limit"] is None else f" limit {e['limit']:.6g}"
            out.write(
                f"{to_dt(e['at_us']).isoformat()} {e['site_id']} {e['asset']} {e['rule_id']} "
                f"{e['subject']} {e['action']} {e['from_state']}->{e['to_state']} "
                f"{e['severity'] or '-'} {e['priority']}{val}{lim}\n"
            )
        out.write(
            f"replayed {res.readings} readings with pack {pack.name} {pack.version}: "
            f"{len(res.entries)} transitions, {len(res.states)} alerts, "
            f"journal hash {res.last_hash.hex() or '-'}\n"
        )
        return 0

    return _run(main())


def _recorded(path: Path, by_id: dict[tuple[str, str], int], chunk_rows: int = 50_000) -> Any:
    try:
        fh = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise ConsoleError(f"cannot read {path}: {exc.strerror}") from None
    with fh:
        reader = csv.DictReader(fh)
        need = {"site", "sensor", "ts_ms", "value"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise ConsoleError(f"{path}: header must have columns {', '.join(sorted(need))}")
        keys: list[int] = []
        ts: list[int] = []
        vals: list[float] = []
        for n, row in enumerate(reader, start=2):
            key = by_id.get((row["site"], row["sensor"]))
            if key is None:
                raise ConsoleError(f"{path}:{n}: sensor {row['site']}/{row['sensor']} unknown")
            try:
                ts.append(int(row["ts_ms"]) * 1000)
                vals.append(float(row["value"]))
            except ValueError:
                raise ConsoleError(f"{path}:{n}: ts_ms and value must be numbers") from None
            keys.append(key)
            if len(keys) >= chunk_rows:
                yield _arrays(keys, ts, vals)
                keys, ts, vals = [], [], []
        if keys:
            yield _arrays(keys, ts, vals)


def _arrays(keys: list[int], ts: list[int], vals: list[float]) -> tuple[Any, ...]:
    order = np.lexsort((np.array(keys), np.array(ts)))
    k = np.array(keys, dtype=np.int64)[order]
    return k, np.array(ts, dtype=np.int64)[order], np.array(vals)[order], np.zeros(k.size)
