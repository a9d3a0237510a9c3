"""Exposure windows: hand-computed TWAs, gaps, the pro-rata edge bound, chunking invariance,
agreement with the direct `twa` reference, and the state round trip."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerting.exposure import ExposureError, ExposureWindow, twa

US = 1_000_000
T0 = 1_700_000_000 * US  # an epoch time on a 10-s bucket boundary
HOUR = 3_600.0
NAB = 28_800.0
PSD = 900.0


def series(ts_s: list[float] | np.ndarray, values: list[float] | np.ndarray) -> tuple:
    """Arrays for `add`: seconds after T0 to integer µs since the epoch, values to float64."""
    ts = T0 + np.round(np.asarray(ts_s, dtype=np.float64) * US).astype(np.int64)
    return ts, np.asarray(values, dtype=np.float64)


def feed(window: ExposureWindow, ts_s: list[float] | np.ndarray, values: list[float]) -> None:
    """Add the whole series in one chunk."""
    window.add(*series(ts_s, values))


def comparable(state: dict[str, object]) -> dict[str, object]:
    """A state with last_value as its bit pattern, so NaN compares equal to itself."""
    out = dict(state)
    out["last_value"] = struct.pack("<d", state["last_value"])
    return out


# -- hand-computed cases -------------------------------------------------------------------


def test_eight_hours_low_then_fifteen_minutes_high():
    """8 h of 10 ppm then 15 min of 100 ppm gives the hand-computed NAB and PSD means."""
    # Samples every 10 s: 10 ppm over [0, 8 h), 100 ppm over [8 h, 8 h 15 min]; last at 8.25 h.
    # Window (0.25 h, 8.25 h]: 7.75 h at 10 ppm + 0.25 h at 100 ppm
    #   NAB = (7.75 x 10 + 0.25 x 100) / 8 = (77.5 + 25) / 8 = 12.8125 ppm.
    # Window (8 h, 8.25 h]: all 100 ppm -> PSD = 100 ppm. Edges on bucket boundaries: exact.
    ts = np.arange(0, 8.25 * HOUR + 1, 10.0)
    values = np.where(ts < 8 * HOUR, 10.0, 100.0)
    window = ExposureWindow(max_hold_s=50.0)
    feed(window, ts, values)
    assert window.mean(NAB) == pytest.approx(12.8125, rel=1e-12)
    assert window.mean(PSD) == pytest.approx(100.0, rel=1e-12)
    assert window.coverage(NAB) == 1.0
    assert window.coverage(PSD) == 1.0


def test_irregular_samples_weigh_by_hold_time():
    """Samples at 0, 1, 5, 6 s are weighted by their holds of 1, 4 and 1 s."""
    # v = 2 held 1 s, 3 held 4 s, 7 held 1 s; the last sample (100) is not closed yet at 6 s.
    #   integral = 2 + 12 + 7 = 21, covered = 6 s -> mean 3.5; coverage of 15 min = 6 / 900.
    window = ExposureWindow(max_hold_s=10.0)
    feed(window, [0, 1, 5, 6], [2.0, 3.0, 7.0, 100.0])
    assert window.mean(PSD) == 3.5
    assert window.covered_s(PSD) == 6.0
    assert window.coverage(PSD) == pytest.approx(6 / 900, rel=1e-15)


def test_gap_longer_than_max_hold_is_uncovered_not_zero():
    """A gap beyond max_hold_s is left uncovered and the mean is over covered time only."""
    # max_hold 5 s. 10 held 0-2 s (2 s), 20 held 2-7 s (capped, gap 7-30 s), 40 held 30-32 s.
    #   integral = 20 + 100 + 80 = 200, covered = 9 s -> mean 200 / 9 (not 200 / 32).
    window = ExposureWindow(max_hold_s=5.0)
    feed(window, [0, 2, 30, 32], [10.0, 20.0, 40.0, 0.0])
    assert window.mean(PSD) == pytest.approx(200 / 9, rel=1e-12)
    assert window.covered_s(PSD) == 9.0


@pytest.mark.parametrize(
    ("ts_s", "values", "max_hold_s", "window_s", "expected_coverage"),
    [
        # 15 min of samples every 10 s, last at 900 s: fully covered.
        (list(range(0, 901, 10)), [1.0] * 91, 50.0, PSD, 1.0),
        # Only the last 450 s of the 15 min have samples: half covered.
        (list(range(450, 901, 10)), [1.0] * 46, 50.0, PSD, 0.5),
        # Samples every 60 s with a 30-s hold: half of each minute covered.
        (list(range(0, 901, 60)), [1.0] * 16, 30.0, PSD, 0.5),
        # 1 h fully covered out of 8 h.
        (list(range(0, 3601, 10)), [1.0] * 361, 50.0, NAB, 0.125),
        # A single sample covers nothing yet.
        ([0.0], [1.0], 50.0, PSD, 0.0),
    ],
)
def test_coverage_values(ts_s, values, max_hold_s, window_s, expected_coverage):
    """Coverage is the covered fraction of the window."""
    window = ExposureWindow(max_hold_s=max_hold_s)
    feed(window, ts_s, values)
    assert window.coverage(window_s) == pytest.approx(expected_coverage, abs=1e-12)


def test_empty_window_mean_is_nan():
    """With nothing covered the mean is NaN, never zero."""
    window = ExposureWindow(max_hold_s=5.0)
    assert math.isnan(window.mean(PSD))
    assert window.coverage(PSD) == 0.0
    feed(window, [0.0], [30.0])
    assert math.isnan(window.mean(PSD))


def test_dead_sensor_keeps_last_value_then_goes_uncovered():
    """Evaluated later, a silent sensor's last value holds for max_hold_s, then nothing is added."""
    # 20 ppm every 10 s over [0, 600]; then silence. max_hold 50 s.
    window = ExposureWindow(max_hold_s=50.0)
    feed(window, list(range(0, 601, 10)), [20.0] * 61)
    at_30 = T0 + 630 * US  # 30 s after the last sample: the hold still covers it
    assert window.mean(PSD, at_30) == 20.0
    assert window.covered_s(PSD, at_30) == 630.0
    at_1000 = T0 + 1_000 * US  # window (100, 1000]: covered 100..650 = 550 s
    assert window.mean(PSD, at_1000) == 20.0
    assert window.covered_s(PSD, at_1000) == 550.0
    at_far = T0 + 10_000 * US  # the whole 15 min lies after the hold ran out
    assert math.isnan(window.mean(PSD, at_far))
    assert window.coverage(PSD, at_far) == 0.0


def test_mean_ahead_of_the_latest_sample_is_final_when_the_next_arrives():
    """A mean evaluated ahead of the latest sample is unchanged once a sample arrives then."""
    window = ExposureWindow(max_hold_s=50.0)
    feed(window, list(range(0, 1_201, 10)), [float(i % 7) for i in range(121)])
    at = T0 + 1_230 * US  # 30 s after the last sample, within its 50-s hold
    early = window.mean(PSD, at), window.covered_s(PSD, at)
    window.add(np.array([at], dtype=np.int64), np.array([99.0]))
    assert (window.mean(PSD), window.covered_s(PSD)) == pytest.approx(early, rel=1e-12)


def test_evaluating_before_the_latest_sample_is_refused():
    """at_us before the latest sample cannot be evaluated exactly and raises."""
    window = ExposureWindow(max_hold_s=5.0)
    feed(window, [0, 1, 2], [1.0, 1.0, 1.0])
    with pytest.raises(ExposureError, match="before the latest sample"):
        window.mean(PSD, T0 + 1 * US)


def test_late_and_duplicate_samples_are_ignored():
    """Samples at or before the latest accepted time change nothing."""
    window = ExposureWindow(max_hold_s=10.0)
    feed(window, [0, 1, 5, 6], [2.0, 3.0, 7.0, 100.0])
    before = comparable(window.to_state())
    feed(window, [6, 3, 0], [999.0, 999.0, 999.0])
    assert comparable(window.to_state()) == before
    # Inside one chunk, an out-of-order sample is dropped the same way.
    other = ExposureWindow(max_hold_s=10.0)
    feed(other, [0, 1, 0.5, 5, 5, 6], [2.0, 3.0, 999.0, 7.0, 999.0, 100.0])
    assert comparable(other.to_state()) == before


def test_non_finite_values_cover_nothing():
    """A NaN reading makes its hold uncovered instead of poisoning the mean."""
    # 10 held 0-1 s, NaN held 1-2 s (uncovered), 30 held 2-3 s -> mean 20 over 2 s.
    window = ExposureWindow(max_hold_s=5.0)
    feed(window, [0, 1, 2, 3], [10.0, math.nan, 30.0, 0.0])
    assert window.mean(PSD) == 20.0
    assert window.covered_s(PSD) == 2.0


def test_stel_rolling_peak_of_a_puff():
    """The peak rolling 15-min mean of a 5-min 50-ppm puff over 1 ppm is (5x50 + 10x1) / 15."""
    # Samples every 10 s for 1 h; 50 ppm over [1200, 1500) s, 1 ppm otherwise.
    # Any 15-min window containing the whole puff: (300 x 50 + 600 x 1) / 900 = 17.333... ppm.
    ts = np.arange(0, HOUR + 1, 10.0)
    values = np.where((ts >= 1_200) & (ts < 1_500), 50.0, 1.0)
    window = ExposureWindow(max_hold_s=50.0)
    feed(window, ts, values)
    ends, means, coverages = window.means_at_bucket_ends(PSD)
    peak = 15_600 / 900
    assert np.nanmax(means) == pytest.approx(peak, rel=1e-12)
    # The peak holds exactly for the windows that contain the whole puff: ends 1500..2100 s.
    at_peak = ends[np.isclose(means, peak, rtol=1e-12)]
    assert at_peak.min() == T0 + 1_500 * US
    assert at_peak.max() == T0 + 2_100 * US
    assert coverages[ends >= T0 + 900 * US].min() == 1.0
    # Sample-by-sample evaluation (as the engine would) finds the same peak.
    live = ExposureWindow(max_hold_s=50.0)
    live_means = []
    for t, v in zip(ts, values, strict=True):
        feed(live, [t], [v])
        live_means.append(live.mean(PSD))
    assert np.nanmax(live_means) == pytest.approx(peak, rel=1e-12)


def test_bucket_end_means_agree_with_point_queries():
    """Exact rolling means at bucket ends match the twa reference."""
    rng = np.random.default_rng(7)
    ts = np.cumsum(rng.integers(1, 15, size=400)).astype(np.float64)
    values = rng.uniform(0, 30, size=400)
    window = ExposureWindow(max_hold_s=12.0, windows_s=(600.0, 60.0))
    feed(window, ts, values)
    ends, means, _ = window.means_at_bucket_ends(60.0)
    assert ends.size > 0
    for end, got in zip(ends, means, strict=True):
        end_s = (end - T0) / US
        expected, _ = twa(list(ts), list(values), end_s - 60, end_s, 12.0)
        assert got == pytest.approx(expected, rel=1e-9, nan_ok=True)


@pytest.mark.parametrize("edge_offset_s", [0.0, 1.0, 2.5, 5.0, 7.5, 9.999])
def test_window_edge_pro_rata_within_bound(edge_offset_s):
    """A window start inside a bucket is counted pro rata, within the documented bound."""
    # Values jump each second inside the edge bucket, the worst case for pro rata. The window
    # end sits edge_offset_s past a bucket boundary, so its start does too.
    ts = np.arange(0.0, 1_000.0, 1.0)
    values = np.where(ts % 2 == 0, 0.0, 80.0) * (ts < 300)
    window = ExposureWindow(max_hold_s=5.0)
    feed(window, ts, values)
    # Last sample at 999 s; evaluating at 1000 + offset puts the start edge at 100 + offset.
    at_s = 1_000.0 + edge_offset_s
    at_us = T0 + round(at_s * US)
    got = window.mean(PSD, at_us)
    covered = window.covered_s(PSD, at_us)
    exact, exact_covered = twa(list(ts), list(values), at_s - PSD, at_s, 5.0)
    assert abs(covered - exact_covered) <= window.bucket_s
    assert abs(got - exact) <= window.bucket_s * (80.0 - 0.0) / covered
    if edge_offset_s == 0.0:  # an edge on a bucket boundary is exact
        assert got == pytest.approx(exact, rel=1e-12)


def test_window_edge_pro_rata_hand_case():
    """Pro rata takes the in-window fraction of the edge bucket's content."""
    # Bucket [0, 10) s: 0 ppm over [0, 4), 100 ppm over [4, 10). Then 0 ppm to 30 s.
    # PSD window ending at 905 s starts at 5 s: pro rata counts half the edge bucket,
    #   integral 600 x 0.5 = 300, covered 5 s; the exact answer is 500 over 5 s.
    # The rest of the window (10, 905] is 0 ppm over [10, 30] = 20 s, plus the last sample's
    # pending hold 30-40 s (capped at max_hold 10 s) = 10 s, then uncovered: covered 35 s.
    # Estimate = 300 / 35 = 60/7; exact = 500 / 35 = 100/7; |diff| = 40/7 ≤ 10 x 100 / 35.
    window = ExposureWindow(max_hold_s=10.0)
    feed(window, [0, 4, 10, 20, 30], [0.0, 100.0, 0.0, 0.0, 0.0])
    at = T0 + 905 * US
    assert window.mean(PSD, at) == pytest.approx(60 / 7, rel=1e-12)
    assert window.covered_s(PSD, at) == pytest.approx(35.0, rel=1e-12)
    exact, exact_covered = twa([0, 4, 10, 20, 30], [0, 100, 0, 0, 0], 5.0, 905.0, 10.0)
    assert (exact, exact_covered) == pytest.approx((100 / 7, 35.0), rel=1e-12)


@pytest.mark.parametrize(
    ("ts_s", "values", "start_s", "end_s", "max_hold_s", "expected"),
    [
        # holds 1, 4, 1 s; last sample held to end (6..8 s, within its 10-s cap)
        ([0, 1, 5, 6], [2, 3, 7, 10], 0.0, 8.0, 10.0, ((2 + 12 + 7 + 20) / 8, 8.0)),
        # window cuts the first hold: (0.5, 6] -> 2 x 0.5 + 12 + 7 = 20 over 5.5 s
        ([0, 1, 5, 6], [2, 3, 7, 10], 0.5, 6.0, 10.0, (20 / 5.5, 5.5)),
        # gap: 10 held 2 s, 20 capped at 5 s, 40 held 2 s -> 200 over 9 s
        ([0, 2, 30, 32], [10, 20, 40, 0], 0.0, 32.0, 5.0, (200 / 9, 9.0)),
        # nothing in the window
        ([0, 1], [5, 5], 100.0, 200.0, 5.0, (math.nan, 0.0)),
    ],
)
def test_reference_twa_hand_cases(ts_s, values, start_s, end_s, max_hold_s, expected):
    """The direct reference computes hand-worked TWAs and covered seconds."""
    mean, covered = twa(ts_s, values, start_s, end_s, max_hold_s)
    assert covered == pytest.approx(expected[1])
    assert mean == pytest.approx(expected[0], nan_ok=True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_hold_s": 0.0},
        {"max_hold_s": -1.0},
        {"max_hold_s": math.nan},
        {"max_hold_s": 5.0, "bucket_s": 0.0},
        {"max_hold_s": 5.0, "bucket_s": 1e-9},
        {"max_hold_s": 5.0, "windows_s": ()},
        {"max_hold_s": 5.0, "windows_s": (5.0,)},
    ],
)
def test_invalid_construction_is_refused(kwargs):
    """Non-positive, non-finite or sub-bucket settings raise ExposureError."""
    with pytest.raises(ExposureError):
        ExposureWindow(**kwargs)


@pytest.mark.parametrize("window_s", [5.0, 30_000.0, 0.0])
def test_windows_outside_the_ring_are_refused(window_s):
    """Windows shorter than a bucket or longer than the ring raise ExposureError."""
    window = ExposureWindow(max_hold_s=5.0)
    with pytest.raises(ExposureError):
        window.mean(window_s)


def test_mismatched_chunk_is_refused():
    """Timestamps and values of different lengths, or float timestamps, raise ExposureError."""
    window = ExposureWindow(max_hold_s=5.0)
    with pytest.raises(ExposureError):
        window.add(np.array([1, 2], dtype=np.int64), np.array([1.0]))
    with pytest.raises(ExposureError):
        window.add(np.array([1.0, 2.0]), np.array([1.0, 2.0]))


def test_state_round_trip_and_continuation():
    """from_state(to_state()) is exact and continues exactly like the original."""
    rng = np.random.default_rng(3)
    ts = np.cumsum(rng.integers(1, 20, size=3_000)).astype(np.float64)
    values = rng.uniform(0, 50, size=3_000)
    original = ExposureWindow(max_hold_s=25.0)
    feed(original, ts[:2_000], values[:2_000])
    state = original.to_state()
    restored = ExposureWindow.from_state(state)
    assert comparable(restored.to_state()) == comparable(state)
    feed(original, ts[2_000:], values[2_000:])
    feed(restored, ts[2_000:], values[2_000:])
    assert comparable(restored.to_state()) == comparable(original.to_state())
    assert restored.mean(NAB) == original.mean(NAB)


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("version", 99),
        ("integral", b"\x00" * 8),
        ("covered_dtype", "<f8"),
        ("head", 5),
        ("windows_s", "8h"),
    ],
)
def test_corrupt_state_is_refused(key, bad):
    """A state with a wrong version, length, dtype or inconsistent head raises ExposureError."""
    window = ExposureWindow(max_hold_s=5.0)
    feed(window, [0, 1], [1.0, 2.0])
    state = window.to_state()
    state[key] = bad
    with pytest.raises(ExposureError):
        ExposureWindow.from_state(state)


def test_missing_state_key_is_refused():
    """A state lacking a key raises ExposureError naming it."""
    state = ExposureWindow(max_hold_s=5.0).to_state()
    del state["covered"]
    with pytest.raises(ExposureError, match="covered"):
        ExposureWindow.from_state(state)


# -- invariants ----------------------------------------------------------------------------

# Steps between samples in ms, including 0 (duplicates) and steps beyond max_hold (gaps).
steps_ms = st.lists(st.integers(min_value=0, max_value=40_000), min_size=1, max_size=120)
readings = st.floats(min_value=-5.0, max_value=1_000.0, allow_nan=False)


@st.composite
def sample_series(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Sample times (µs, non-decreasing, possibly repeated) and finite values."""
    steps = draw(steps_ms)
    ts = T0 + draw(st.integers(0, 9_999_999)) + np.cumsum(np.array(steps, dtype=np.int64)) * 1_000
    values = np.array(draw(st.lists(readings, min_size=len(ts), max_size=len(ts))))
    return ts.astype(np.int64), values


# Longer than a bucket, so hold segments cross one or more bucket boundaries; shorter than the
# largest step, so gaps occur too.
SMALL_HOLD_S = 25.0


def small_window() -> ExposureWindow:
    """A window with a short ring so the hypothesis series wrap it."""
    return ExposureWindow(max_hold_s=SMALL_HOLD_S, bucket_s=10.0, windows_s=(300.0, 60.0))


@settings(max_examples=200, deadline=None)
@given(data=sample_series(), cuts=st.lists(st.integers(0, 120), max_size=8))
def test_chunking_is_bit_identical(data, cuts):
    """One chunk or many gives the same state, means and coverage, bit for bit."""
    ts, values = data
    whole = small_window()
    whole.add(ts, values)
    split = small_window()
    for part_ts, part_values in zip(
        np.split(ts, sorted(set(cuts))), np.split(values, sorted(set(cuts))), strict=True
    ):
        split.add(part_ts, part_values)
    assert comparable(split.to_state()) == comparable(whole.to_state())
    for window_s in (300.0, 60.0, 37.0):
        a, b = whole.mean(window_s), split.mean(window_s)
        assert a == b or (math.isnan(a) and math.isnan(b))
        assert whole.coverage(window_s) == split.coverage(window_s)


@settings(max_examples=200, deadline=None)
@given(
    data=sample_series(),
    window_s=st.sampled_from([300.0, 60.0, 10.0, 123.456]),
    ahead_us=st.integers(0, 30_000_000),
)
def test_agrees_with_reference_within_bound(data, window_s, ahead_us):
    """Mean and covered time agree with the direct twa within the documented edge bound."""
    ts, values = data
    window = small_window()
    window.add(ts, values)
    at = int(ts.max()) + ahead_us
    got = window.mean(window_s, at)
    covered = window.covered_s(window_s, at)
    ts_s = [(t - T0) / US for t in ts]
    at_s = (at - T0) / US
    exact, exact_covered = twa(ts_s, list(values), at_s - window_s, at_s, SMALL_HOLD_S)
    assert abs(covered - exact_covered) <= window.bucket_s + 1e-6
    if covered > 0 and not math.isnan(exact):
        held = values[ts >= at - round((window_s + window.bucket_s + SMALL_HOLD_S) * US)]
        bound = window.bucket_s * (held.max() - held.min()) / covered
        assert abs(got - exact) <= bound + 1e-9 * max(1.0, abs(exact))


@settings(max_examples=200, deadline=None)
@given(
    data=sample_series(),
    window_s=st.sampled_from([300.0, 60.0, 15.0]),
    ahead_us=st.integers(0, 30_000_000),
)
def test_mean_lies_within_the_held_values(data, window_s, ahead_us):
    """The mean lies within [min, max] of the values held in the (bucket-widened) window."""
    ts, values = data
    window = small_window()
    window.add(ts, values)
    at = int(ts.max()) + ahead_us
    got = window.mean(window_s, at)
    if math.isnan(got):
        return
    # Holds reaching into (at - W - bucket, at] start after at - W - bucket - max_hold.
    held = values[ts > at - round((window_s + window.bucket_s + SMALL_HOLD_S) * US)]
    slack = 1e-9 * max(1.0, float(np.abs(held).max()))
    assert held.min() - slack <= got <= held.max() + slack


@settings(max_examples=100, deadline=None)
@given(
    data=sample_series(),
    level=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    cuts=st.lists(st.integers(0, 120), max_size=5),
    window_s=st.sampled_from([300.0, 60.0, 10.0, 77.7]),
    ahead_us=st.integers(0, 30_000_000),
)
def test_constant_signal_means_the_constant(data, level, cuts, window_s, ahead_us):
    """A constant signal has that constant as its mean for any window, time and chunking."""
    ts, _ = data
    window = small_window()
    cut = sorted(set(cuts))
    for part in np.split(ts, cut):
        window.add(part, np.full(part.shape, level))
    got = window.mean(window_s, int(ts.max()) + ahead_us)
    assert math.isnan(got) or got == pytest.approx(level, rel=1e-12, abs=1e-300)


@settings(max_examples=100, deadline=None)
@given(data=sample_series(), cut=st.integers(0, 120))
def test_state_round_trip_is_exact(data, cut):
    """to_state / from_state round-trips exactly at any point of a series."""
    ts, values = data
    window = small_window()
    window.add(ts[:cut], values[:cut])
    state = window.to_state()
    restored = ExposureWindow.from_state(state)
    assert comparable(restored.to_state()) == comparable(state)
    window.add(ts[cut:], values[cut:])
    restored.add(ts[cut:], values[cut:])
    assert comparable(restored.to_state()) == comparable(window.to_state())
