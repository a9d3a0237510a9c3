"""Advisory load and lead time: the simulator's plants through the engine with the shipped pack.

Owns two measurements of the anomaly rules in the product, in memory (no broker, no database:
the same engine the service runs, fed the simulator's readings in 5-s batches):

- `normal`: a normal plant (the default fleet, both sites) for some hours; prints the advisory
  alerts raised per site (one operator position per site), the most in any 10 minutes, and
  ISA-18.2's acceptable load (1 per 10 minutes per position) for comparison.
- `scenario NAME`: one incident scenario on the scenario fleet; prints, per sensor that got an
  advisory or a safety alert, when each came first (plant seconds), so the lead of the
  detector over the threshold rules can be read off.

    .venv/bin/python -m bench.advisory_load normal --hours 24 [--seed 1]
    .venv/bin/python -m bench.advisory_load scenario tap-runout [--seed 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from alerting.engine import ConditionEvent, Engine, EventKind, SensorInfo
from alerting.pack import Pack, Priority, default_pack_path, load_pack
from simulator.fleet import Fleet, load_default_fleet, load_scenario_fleet
from simulator.plant import Plant
from simulator.scenario import SCENARIOS, ScenarioPlant

T0_US = 1_767_225_600 * 1_000_000  # 2026-01-01T00:00:00Z: plant second 0
BATCH_S = 5


def sensor_infos(fleet: Fleet) -> tuple[list[SensorInfo], dict[tuple[str, str], int]]:
    """The engine's view of a fleet's sensors, and (site, sensor id) -> key."""
    infos, keys = [], {}
    for site in fleet.sites():
        for gw, s in site.sensors():
            key = len(infos) + 1
            infos.append(
                SensorInfo(
                    key, site.id, gw.id, s.id, s.kind, s.unit, s.period_s, s.asset,
                    s.min_value, s.max_value,
                )
            )  # fmt: skip
            keys[(site.id, s.id)] = key
    return infos, keys


def play(
    plant: Plant | ScenarioPlant,
    keys: dict[tuple[str, str], int],
    engine: Engine,
    seconds: int,
) -> tuple[list[ConditionEvent], int, float]:
    """Feed `seconds` of plant ticks to the engine; (events, readings, engine seconds)."""
    events: list[ConditionEvent] = []
    kk: list[int] = []
    tt: list[int] = []
    vv: list[float] = []
    qq: list[int] = []
    n, spent = 0, 0.0
    for k in range(seconds):
        for g in plant.readings(k):
            t = T0_US + k * 1_000_000
            quals = g.qualities or ["good"] * len(g.values)
            for sid, v, q in zip(g.sensor_ids, g.values, quals, strict=True):
                kk.append(keys[(g.site, sid)])
                tt.append(t)
                vv.append(v)
                qq.append(2 if q == "bad" else 1 if q == "uncertain" else 0)
        if (k + 1) % BATCH_S == 0 or k == seconds - 1:
            t0 = time.perf_counter()
            events += engine.process(
                np.array(kk, dtype=np.int64), np.array(tt, dtype=np.int64), np.array(vv),
                np.array(qq, dtype=np.int64),
            )  # fmt: skip
            spent += time.perf_counter() - t0
            n += len(kk)
            kk, tt, vv, qq = [], [], [], []
    return events, n, spent


def _advisories(events: Sequence[ConditionEvent]) -> list[ConditionEvent]:
    return [e for e in events if e.kind is EventKind.ACTIVATE and e.priority is Priority.ADVISORY]


def normal(hours: float, seed: int, pack: Pack) -> int:
    """Print the advisory load of a normal plant."""
    fleet = load_default_fleet()
    infos, keys = sensor_infos(fleet)
    engine = Engine(pack, infos)
    seconds = int(hours * 3600)
    events, n, spent = play(Plant(fleet, seed), keys, engine, seconds)
    adv = _advisories(events)
    safety = [e for e in events if e.kind is EventKind.ACTIVATE and e not in adv]
    print(f"normal plant, seed {seed}: {hours:g} h, {n:,} readings, engine {spent:.1f} s")
    print(f"safety activations: {len(safety)}")
    allowed = seconds / 600
    for site in sorted({i.site for i in infos}):
        mine = [e for e in adv if e.site == site]
        per10 = Counter((e.at_us - T0_US) // 600_000_000 for e in mine)
        first_day = [e for e in mine if e.at_us - T0_US < 86_400_000_000]
        print(
            f"site {site}: {len(mine)} advisories ({len(first_day)} in the first 24 h), "
            f"most in 10 min {max(per10.values(), default=0)}; acceptable {allowed:.0f}"
        )
    by_rule_kind = Counter(e.subject.split(".", 1)[-1] for e in adv)
    print("by signal:", ", ".join(f"{k} {v}" for k, v in by_rule_kind.most_common(12)))
    return 0


def scenario(name: str, seed: int, pack: Pack, since_s: int) -> int:
    """Print first advisory and first safety alert per sensor for one scenario, from
    plant second `since_s` on (the start of a slow fault)."""
    sc = SCENARIOS[name]
    fleet = load_scenario_fleet()
    infos, keys = sensor_infos(fleet)
    engine = Engine(pack, infos)
    events, n, spent = play(ScenarioPlant(fleet, sc, seed), keys, engine, sc.duration_s)
    print(f"scenario {name}, seed {seed}: {sc.duration_s} s, {n:,} readings, engine {spent:.1f} s")
    before = _advisories([e for e in events if e.at_us < T0_US + since_s * 1_000_000])
    print(f"advisories before {since_s} s: {len(before)}; first alerts from {since_s} s:")
    first: dict[str, dict[str, tuple[int, str]]] = defaultdict(dict)
    for e in events:
        if e.kind is not EventKind.ACTIVATE:
            continue
        what = "advisory" if e.priority is Priority.ADVISORY else "safety"
        s = (e.at_us - T0_US) // 1_000_000
        if s >= since_s and what not in first[e.subject]:
            first[e.subject][what] = (s, e.rule_id)
    for subject, got in sorted(first.items(), key=lambda x: min(v[0] for v in x[1].values())):
        adv = got.get("advisory")
        saf = got.get("safety")
        print(
            f"{subject:<32} advisory {adv[0] if adv else '-':>7}   "
            f"safety {saf[0] if saf else '-':>7} {saf[1] if saf else ''}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one of the measurements."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["normal", "scenario"])
    parser.add_argument("name", nargs="?", help="scenario name (scenario)")
    parser.add_argument("--hours", type=float, default=24.0, help="normal: hours of plant")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--since",
        type=int,
        default=0,
        metavar="S",
        help="scenario: first alerts from plant second S",
    )
    parser.add_argument("--pack", type=Path, default=default_pack_path())
    args = parser.parse_args(argv)
    pack = load_pack(args.pack)
    if args.what == "normal":
        return normal(args.hours, args.seed, pack)
    if args.name not in SCENARIOS:
        parser.error(f"scenario must be one of {', '.join(SCENARIOS)}")
    return scenario(args.name, args.seed, pack, args.since)


if __name__ == "__main__":
    sys.exit(main())
