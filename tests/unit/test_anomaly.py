"""The streaming anomaly detector (`alerting.anomaly`): scores in [0, 1], learning, novelty of
a new level or pace, one detection per episode, batching invariance, bounded state, saved
state, explanations."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest

from alerting.anomaly import AnomalyDetector, AnomalyError, Params

US = 1_000_000
T0 = 1_800_000_000 * US
Floats = npt.NDArray[np.float64]


def noisy(n: int, seed: int, base: float = 100.0, noise: float = 1.0) -> Floats:
    """A steady signal with Gaussian noise."""
    return base + noise * np.random.default_rng(seed).standard_normal(n)


def run_one_by_one(det: AnomalyDetector, key: int, values: Floats, period_s: float) -> Floats:
    """Score a series one reading per call."""
    out = np.empty(values.size)
    for i, v in enumerate(values.tolist()):
        out[i] = det.score([key], [T0 + int(i * period_s * US)], [v])[0]
    return out


def run_series(
    det: AnomalyDetector, key: int, values: Floats, period_s: float, start: int = 0
) -> Floats:
    """Score a series in one call; its first reading is reading number `start`."""
    ts = T0 + ((start + np.arange(values.size)) * period_s * US).astype(np.int64)
    return det.score(np.full(values.size, key), ts, values)


def test_scores_are_zero_while_learning_then_in_the_unit_interval() -> None:
    """Without a range a sensor scores 0 for its first `learn` effective readings, then in
    [0, 1]."""
    det = AnomalyDetector()
    sc = run_series(det, 1, noisy(3000, 1), 10.0)  # 10 s each: one effective reading each
    learn = int(Params().learn)
    assert np.all(sc[: learn - 1] == 0.0)
    assert np.all((sc >= 0) & (sc <= 1))


def test_fast_sensor_learns_on_plant_time_not_on_samples() -> None:
    """A 1-s sensor counts 0.1 effective reading per sample: learning takes 10x the samples."""
    det = AnomalyDetector()
    values = noisy(9000, 2)
    values[8500:] += 50.0  # a new level after learning (3000 samples = 300 effective)
    values[200:210] += 3.0  # a blip during learning: not scored
    sc = run_series(det, 1, values, 1.0)
    assert np.all(sc[:2980] == 0.0)  # 2991 samples: the first one counts whole
    assert sc[8500:8510].max() > sc[2991:8500].max()  # the jump is the most unusual reading


def test_level_shift_after_a_steady_period_scores_high_and_steady_noise_low() -> None:
    """A new level after days of steady readings is flagged; the steady readings are not."""
    det = AnomalyDetector()
    values = noisy(20_000, 3)
    values[19_000:] += 15.0  # 15 noise sigmas
    sc = run_series(det, 7, values, 10.0)
    steady = sc[2000:19_000]
    assert steady.max() < 0.5
    assert sc[19_000:19_010].max() > 0.55
    assert sc[19_000:19_010].max() > 1.1 * steady.max()


def test_a_sustained_new_level_is_one_detection_not_one_per_reading() -> None:
    """After the first detection, the held surprise keeps the rest of the episode quiet."""
    det = AnomalyDetector()
    values = noisy(6000, 4)
    values[5000:] += 20.0
    sc = run_series(det, 1, values, 10.0)
    hits = np.flatnonzero(sc[5000:] > 0.5)
    assert hits.size >= 1
    assert hits.size <= 3


def test_a_ramp_is_flagged_by_its_pace_before_it_leaves_the_usual_range() -> None:
    """A slow ramp (after learning) is flagged while still within a few noise sigmas of
    the old level: the deviation view sees the change of pace."""
    det = AnomalyDetector()
    values = noisy(8000, 5, noise=2.0)
    ramp = np.arange(2000) * 0.05  # +0.05 per reading: 100 over 2000 readings
    values[6000:] += ramp
    sc = run_series(det, 1, values, 10.0)
    first = int(np.flatnonzero(sc[6000:] > 0.55)[0])
    assert first < 600  # within the first 30 units of the 100 rise


def test_batches_give_the_same_scores_as_one_reading_per_call() -> None:
    """Several sensors, several readings of each per call: scores equal one-by-one scoring."""
    values = {k: noisy(1200, 10 + k) for k in (1, 2, 3)}
    values[2][900:] += 30.0
    one = AnomalyDetector()
    expect = {k: run_one_by_one(one, k, v, 10.0) for k, v in values.items()}
    batched = AnomalyDetector()
    got = {k: np.empty(1200) for k in values}
    for start in range(0, 1200, 37):  # uneven cuts, sensors interleaved within a call
        keys, ts, vals, pos = [], [], [], []
        for i in range(start, min(start + 37, 1200)):
            for k in (3, 1, 2):
                keys.append(k)
                ts.append(T0 + i * 10 * US)
                vals.append(values[k][i])
                pos.append((k, i))
        sc = batched.score(keys, ts, vals)
        for (k, i), x in zip(pos, sc.tolist(), strict=True):
            got[k][i] = x
    for k in values:
        np.testing.assert_array_equal(got[k], expect[k])


def test_non_finite_values_are_neither_scored_nor_learnt() -> None:
    """A NaN or inf reading scores NaN and leaves the sensor's state as it was."""
    det, ref = AnomalyDetector(), AnomalyDetector()
    values = noisy(800, 6)
    ts = T0 + np.arange(800, dtype=np.int64) * 10 * US
    with_bad = det.score(np.ones(800, dtype=np.int64), ts, values)
    assert not np.isnan(with_bad).any()
    sc = det.score([1, 1], [ts[-1] + 10 * US, ts[-1] + 20 * US], [math.nan, math.inf])
    assert np.isnan(sc).all()
    ref.score(np.ones(800, dtype=np.int64), ts, values)
    nxt = [ts[-1] + 30 * US]
    assert det.score([1], nxt, [100.0])[0] == ref.score([1], nxt, [100.0])[0]


def test_time_travel_is_refused() -> None:
    """A reading at or before its sensor's last scored one is an error (callers skip them)."""
    det = AnomalyDetector()
    det.score([1], [T0], [1.0])
    with pytest.raises(AnomalyError, match="at or before"):
        det.score([1], [T0], [2.0])


def test_state_is_fixed_size_per_sensor() -> None:
    """State per sensor does not grow with readings, and stays under 25 kB."""
    det = AnomalyDetector()
    run_series(det, 1, noisy(500, 7), 10.0)
    size = sum(a.nbytes for a in det.a.values())
    run_series(det, 1, noisy(5000, 8) + 1e6, 10.0, start=500)  # far outside anything seen
    assert sum(a.nbytes for a in det.a.values()) == size
    assert det.bytes_per_sensor() < 25_000


def test_saved_state_resumes_exactly_and_refuses_other_parameters() -> None:
    """dump/load continues with identical scores; other parameters or versions are refused."""
    values = noisy(3000, 9)
    values[2500:] += 25.0
    whole = run_series(AnomalyDetector(), 1, values, 10.0)
    first = AnomalyDetector()
    run_series(first, 1, values[:2000], 10.0)
    saved = first.dump()
    resumed = AnomalyDetector()
    resumed.load(saved)
    ts = T0 + (np.arange(2000, 3000) * 10 * US).astype(np.int64)
    rest = resumed.score(np.ones(1000, dtype=np.int64), ts, values[2000:])
    np.testing.assert_array_equal(rest, whole[2000:])
    with pytest.raises(AnomalyError, match="other parameters"):
        AnomalyDetector(replace(Params(), hold=50.0)).load(saved)
    with pytest.raises(AnomalyError, match="another version"):
        AnomalyDetector().load({**saved, "version": 0})


def test_given_range_scores_from_the_first_reading() -> None:
    """With a range (NAB's rules allow a file's min/max) there is no learning wait."""
    det = AnomalyDetector()
    values = noisy(400, 11)
    values[350] = 140.0
    ts = T0 + np.arange(400, dtype=np.int64) * 300 * US
    sc = det.score(np.ones(400, dtype=np.int64), ts, values, {1: (95.0, 140.0)})
    assert sc[5:300].max() > 0  # scoring from the start
    assert sc[350] == sc.max()


def test_explanation_names_baseline_usual_range_distance_and_since() -> None:
    """An explanation says the baseline, the usual range, how many spreads off, since when."""
    det = AnomalyDetector()
    values = noisy(5000, 12)
    values[4990:] += 30.0
    ts = T0 + np.arange(5000, dtype=np.int64) * 10 * US
    ex = det.score_explained(np.ones(5000, dtype=np.int64), ts, values)
    i = 4990 + int(np.argmax(ex.scores[4990:]))
    e = ex.at(i)
    assert e is not None
    assert abs(e.expected - 100.0) < 2.0
    assert e.low < 100.0 < e.high
    assert e.spreads > 10
    assert e.since_us == int(ts[4990])
    text = e.describe("f1.hearth.t01")
    assert "f1.hearth.t01" in text
    assert "expected about" in text
    assert "spreads off" in text
