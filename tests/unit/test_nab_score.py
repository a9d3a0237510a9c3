"""Unit tests for the NAB scorer (bench.nab_score): hand-made series, no NAB data read."""

from __future__ import annotations

import numpy as np
import pytest

from bench.nab_score import (
    Profile,
    SeriesResult,
    normalise,
    probation_rows,
    scaled_sigmoid,
    score_corpus,
    score_file,
    sweep_threshold,
    window_rows,
)

STANDARD = Profile(name="standard", tp_weight=1.0, fp_weight=0.11, fn_weight=1.0)
LOW_FN = Profile(name="reward_low_FN_rate", tp_weight=1.0, fp_weight=0.11, fn_weight=2.0)
N_ROWS = 100  # probation: floor(0.15 * 100) = 15 rows
WINDOW = (40, 49)  # ten rows, well after probation


def detections(*rows: int, n_rows: int = N_ROWS) -> np.ndarray:
    """Return a score series that is 1.0 at the given rows and 0.0 elsewhere."""
    scores = np.zeros(n_rows)
    scores[list(rows)] = 1.0
    return scores


def test_sigmoid_shape() -> None:
    """f is 0 at y=0, positive before, negative after, and exactly -1 beyond y=3."""
    assert scaled_sigmoid(0.0) == pytest.approx(0.0)
    assert scaled_sigmoid(-1.0) > 0.98
    assert scaled_sigmoid(1.0) < -0.98
    assert scaled_sigmoid(3.5) == -1.0


@pytest.mark.parametrize(
    ("n_rows", "expected"), [(100, 15), (1000, 150), (4032, 604), (15902, 750)]
)
def test_probation_rows(n_rows: int, expected: int) -> None:
    """The probationary period is floor(15 % of the rows), capped at 750 rows."""
    assert probation_rows(n_rows) == expected


def test_detection_at_left_edge_scores_full_tp_weight() -> None:
    """A detection on a window's first row scores +A_tp."""
    fs = score_file(detections(WINDOW[0]), [WINDOW], 0.5, STANDARD)
    assert fs.raw == pytest.approx(STANDARD.tp_weight)
    assert (fs.tp, fs.fp, fs.fn) == (1, 0, 9)


def test_detection_at_right_edge_scores_about_zero() -> None:
    """A detection on a wide window's last row scores about 0, less than any earlier row."""
    wide = (40, 139)
    fs = score_file(detections(139, n_rows=200), [wide], 0.5, STANDARD)
    assert 0 < fs.raw < 0.03
    narrow = score_file(detections(WINDOW[1]), [WINDOW], 0.5, STANDARD)
    earlier = score_file(detections(WINDOW[1] - 1), [WINDOW], 0.5, STANDARD)
    assert narrow.raw < earlier.raw


def test_missed_window_costs_fn_weight() -> None:
    """An undetected window costs -A_fn, doubled under reward_low_FN_rate."""
    assert score_file(np.zeros(N_ROWS), [WINDOW], 0.5, STANDARD).raw == pytest.approx(-1.0)
    assert score_file(np.zeros(N_ROWS), [WINDOW], 0.5, LOW_FN).raw == pytest.approx(-2.0)


def test_only_earliest_detection_in_window_counts() -> None:
    """Later detections in a window add nothing beyond the earliest one."""
    first = score_file(detections(42), [WINDOW], 0.5, STANDARD)
    many = score_file(detections(42, 45, 48), [WINDOW], 0.5, STANDARD)
    assert many.raw == pytest.approx(first.raw)
    assert many.tp == 3


def test_false_positive_near_window_penalised_less() -> None:
    """A false positive just after a window costs less than one far from any window."""
    near = score_file(detections(WINDOW[1] + 1), [WINDOW], 0.5, STANDARD).raw + 1.0
    far = score_file(detections(WINDOW[1] + 40), [WINDOW], 0.5, STANDARD).raw + 1.0
    before = score_file(detections(30), [WINDOW], 0.5, STANDARD).raw + 1.0
    assert -STANDARD.fp_weight < near < 0
    assert far == pytest.approx(-STANDARD.fp_weight)
    assert before == pytest.approx(-STANDARD.fp_weight)


def test_probationary_rows_ignored() -> None:
    """Detections in the probationary period are neither true nor false positives."""
    fs = score_file(detections(0, 5, 14), [WINDOW], 0.5, STANDARD)
    assert fs.raw == pytest.approx(-1.0)
    assert (fs.tp, fs.fp) == (0, 0)
    assert fs.tn + fs.fn == N_ROWS - 15


def test_threshold_is_at_or_above() -> None:
    """A row whose score equals the threshold is a detection."""
    scores = np.zeros(N_ROWS)
    scores[WINDOW[0]] = 0.7
    assert score_file(scores, [WINDOW], 0.7, STANDARD).tp == 1
    assert score_file(scores, [WINDOW], 0.71, STANDARD).tp == 0


def test_sweep_picks_best_corpus_threshold() -> None:
    """The sweep picks the single threshold that maximises the corpus's total raw score."""
    a = np.zeros(N_ROWS)
    a[WINDOW[0]] = 0.6  # a true positive only at thresholds <= 0.6
    a[[60, 70, 80]] = 0.4  # three far false positives at thresholds <= 0.4
    series = [SeriesResult(scores=a, windows=[WINDOW])]
    threshold, raw = sweep_threshold(series, STANDARD)
    assert threshold == pytest.approx(0.6)
    assert raw == pytest.approx(score_file(a, [WINDOW], 0.6, STANDARD).raw)


def test_normalisation_null_and_perfect() -> None:
    """A detector that never fires scores 0 and one that fires on each window's first row 100."""
    windows = [WINDOW, (70, 79)]
    null = {"f": SeriesResult(scores=np.zeros(N_ROWS), windows=windows)}
    perfect = {"f": SeriesResult(scores=detections(40, 70), windows=windows)}
    for profile in (STANDARD, LOW_FN):
        assert score_corpus(null, [profile])[profile.name] == pytest.approx(0.0)
        assert score_corpus(perfect, [profile])[profile.name] == pytest.approx(100.0)
    assert normalise(0.0, 2, STANDARD) == pytest.approx(50.0)


def test_window_rows_from_timestamps() -> None:
    """Window timestamps map to inclusive row indices, and off-grid windows are refused."""
    ts = np.arange(
        "2024-01-01T00:00", "2024-01-01T10:00", np.timedelta64(1, "h"), dtype="datetime64[us]"
    )
    assert window_rows(ts, [("2024-01-01T02:00", "2024-01-01T04:00")]) == [(2, 4)]
    with pytest.raises(ValueError, match="does not start and end"):
        window_rows(ts, [("2024-01-01T02:30", "2024-01-01T04:00")])
