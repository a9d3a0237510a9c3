"""`tungku simulate --list-scenarios / --scenario / --expectations-out`: options to outcomes,
without a broker."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from simulator import command
from simulator.scenario import SCENARIOS


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(argv)


def test_list_scenarios_prints_every_scenario_and_writes_their_expectations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--list-scenarios names all seven with their expected alerts; JSON holds them too."""
    out = tmp_path / "exp.json"
    assert command.run(_args("--list-scenarios", "--expectations-out", str(out))) == 0
    text = capsys.readouterr().out
    for name in SCENARIOS:
        assert f"{name}: " in text
    assert "expect hotwork.tc critical on F1" in text
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert [s["name"] for s in doc["scenarios"]] == list(SCENARIOS)


@pytest.mark.parametrize("extra", [("--count", "10"), ("--duration-s", "10")])
def test_scenario_refuses_its_own_length_being_overridden(extra: tuple[str, str]) -> None:
    """--scenario plays its own duration, so --count and --duration-s are usage errors."""
    assert command.run(_args("--scenario", "pump-trip", *extra)) == command.EXIT_USAGE


def test_expectations_out_alone_is_a_usage_error() -> None:
    """--expectations-out needs a scenario (or the list) to describe."""
    assert command.run(_args("--expectations-out", "x.json")) == command.EXIT_USAGE


def test_scenario_start_puts_the_end_of_an_accelerated_run_at_about_now() -> None:
    """At speed X a run of D plant seconds starts D*(1-1/X) seconds before now."""
    assert command.scenario_start_ms(1_000_000_000, 1000, 1000.0) == 1_000_000_000 - 999_000
    assert command.scenario_start_ms(1_000_000_000, 1000, 1.0) == 1_000_000_000
