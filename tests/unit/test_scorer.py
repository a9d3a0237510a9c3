"""`tungku anomaly score` (alerting/scorer.py): a timestamp,value file through the service's
detector, its output, and its errors."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

from alerting.anomaly import AnomalyDetector
from ingest.cli import main

FIXTURE = Path(__file__).parent.parent / "fixtures" / "nab" / "art_daily_jumpsup.csv"


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_scores_the_nab_file_and_flags_its_labelled_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every row comes back with a score in [0, 1]; the highest lies in the labelled window."""
    out = tmp_path / "scored.csv"
    assert main(["anomaly", "score", str(FIXTURE), "-o", str(out)]) == 0
    rows = _rows(out.read_text())
    src = _rows(FIXTURE.read_text())
    assert [r["timestamp"] for r in rows] == [r["timestamp"] for r in src]
    scores = np.array([float(r["anomaly_score"]) for r in rows])
    assert ((scores >= 0) & (scores <= 1)).all()
    top = rows[int(np.argmax(scores))]["timestamp"]
    assert "2014-04-10 16:15:00" <= top <= "2014-04-12 01:45:00"


def test_output_equals_the_service_detector_on_the_same_readings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The command's scores are the detector's, fresh state, file min/max as the range."""
    assert main(["anomaly", "score", str(FIXTURE)]) == 0
    got = np.array([float(r["anomaly_score"]) for r in _rows(capsys.readouterr().out)])
    src = _rows(FIXTURE.read_text())
    ts = np.array(
        [np.datetime64(r["timestamp"].replace(" ", "T"), "us").astype(np.int64) for r in src]
    )
    vals = np.array([float(r["value"]) for r in src])
    want = AnomalyDetector().score(
        np.zeros(ts.size, dtype=np.int64), ts, vals, {0: (vals.min(), vals.max())}
    )
    np.testing.assert_allclose(got, want, atol=5e-7)


def test_learn_mode_scores_zero_while_learning(capsys: pytest.CaptureFixture[str]) -> None:
    """--learn runs as the service does: zeros for the first 300 readings (5-min rows)."""
    assert main(["anomaly", "score", str(FIXTURE), "--learn"]) == 0
    scores = [float(r["anomaly_score"]) for r in _rows(capsys.readouterr().out)]
    assert set(scores[:299]) == {0.0}
    assert max(scores) > 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("time,value\n2024-01-01T00:00:00,1\n", "line 1: the header must be timestamp,value"),
        ("timestamp,value\n2024-01-01T00:00:00,1\nyesterday,2\n", "line 3: 'yesterday'"),
        ("timestamp,value\n2024-01-01T00:00:00,abc\n", "line 2: value 'abc' is not a number"),
        ("timestamp,value\n", "no rows after the header"),
    ],
)
def test_bad_input_is_named_and_leaves_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, message: str
) -> None:
    """A bad file gives exit 2 with the line and problem, and no output file."""
    src = tmp_path / "in.csv"
    src.write_text(body)
    out = tmp_path / "out.csv"
    assert main(["anomaly", "score", str(src), "-o", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_unreadable_input_and_unwritable_output_are_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing input or an output in a missing folder is named, exit 2."""
    assert main(["anomaly", "score", str(tmp_path / "missing.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err
    out = tmp_path / "no-such-dir" / "out.csv"
    assert main(["anomaly", "score", str(FIXTURE), "-o", str(out)]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_rows_going_back_in_time_are_scored_in_file_order_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A row earlier than its predecessor is still scored, and the command says so."""
    src = tmp_path / "in.csv"
    src.write_text(
        "timestamp,value\n2024-01-01T00:10:00,1\n2024-01-01T00:05:00,2\n2024-01-01T00:15:00,3\n"
    )
    assert main(["anomaly", "score", str(src), "--range", "0", "4"]) == 0
    captured = capsys.readouterr()
    assert len(_rows(captured.out)) == 3
    assert "1 rows go back in time" in captured.err
