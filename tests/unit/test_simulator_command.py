"""The simulate command's options map to a validated configuration."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from simulator.command import add_arguments, config_from_args, run
from simulator.fleet import load_default_fleet
from simulator.publisher import Mode, PublishConfig, PublishConfigError


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tungku simulate")
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_count_mode_options() -> None:
    """--count N selects count mode with the fleet's seed unless --seed is given."""
    fleet = load_default_fleet()
    cfg = config_from_args(_parse("--count", "5000", "--readings-per-message", "50"), fleet)
    assert cfg.mode is Mode.COUNT
    assert cfg.count == 5000
    assert cfg.readings_per_message == 50
    assert cfg.seed == fleet.seed
    assert config_from_args(_parse("--count", "1", "--seed", "9"), fleet).seed == 9


def test_realtime_is_the_default() -> None:
    """Without a pacing option the simulator runs in real time."""
    cfg = config_from_args(_parse("--duration-s", "10"), load_default_fleet())
    assert cfg.mode is Mode.REALTIME
    assert cfg.tick_interval_s == 1.0


def test_pacing_options_are_exclusive() -> None:
    """--count and --speed cannot be combined."""
    with pytest.raises(SystemExit):
        _parse("--count", "10", "--speed", "5")


def test_accelerated_run_needs_a_duration() -> None:
    """An accelerated run without duration or start is refused: it would stamp the future."""
    with pytest.raises(PublishConfigError, match="future"):
        PublishConfig(mode=Mode.SPEED, speed=10.0)
    assert run(_parse("--speed", "10", "--quiet")) == 2


def test_bad_fleet_file_exits_with_usage_error(tmp_path: Path) -> None:
    """A fleet file that does not parse ends the command with exit code 2."""
    path = tmp_path / "fleet.toml"
    path.write_text("seed = 1\n", encoding="utf-8")
    assert run(_parse("--fleet", str(path), "--count", "1", "--quiet")) == 2
