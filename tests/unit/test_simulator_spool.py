"""The spool: order, deletion and sequence numbers survive a reopen."""

from __future__ import annotations

from pathlib import Path

from simulator.spool import Spool, SpooledMessage


def _msg(seq: int) -> SpooledMessage:
    return SpooledMessage(seq, "tungku/v1/s/g/readings", f'{{"seq":{seq}}}'.encode(), 10 + seq)


def test_messages_come_back_in_order_after_reopen(tmp_path: Path) -> None:
    """Messages appended out of order are read back in seq order after a reopen."""
    spool = Spool(tmp_path / "g.sqlite3")
    spool.append([_msg(s) for s in (3, 1, 2)])
    spool.append([_msg(0)])
    spool.close()
    again = Spool(tmp_path / "g.sqlite3")
    assert again.read() == [_msg(0), _msg(1), _msg(2), _msg(3)]
    assert again.counts() == (4, 10 + 11 + 12 + 13)
    again.close()


def test_read_pages_after_a_seq(tmp_path: Path) -> None:
    """read(after_seq, limit) returns the next page in order."""
    spool = Spool(tmp_path / "g.sqlite3")
    spool.append([_msg(s) for s in range(10)])
    assert [m.seq for m in spool.read(after_seq=4, limit=3)] == [5, 6, 7]
    spool.close()


def test_deleted_messages_stay_deleted(tmp_path: Path) -> None:
    """Acknowledged (deleted) messages are gone after a reopen; the rest remain."""
    spool = Spool(tmp_path / "g.sqlite3")
    spool.append([_msg(s) for s in range(5)])
    spool.delete([0, 1, 3])
    spool.close()
    again = Spool(tmp_path / "g.sqlite3")
    assert [m.seq for m in again.read()] == [2, 4]
    again.close()


def test_seq_keeps_increasing_across_reopen(tmp_path: Path) -> None:
    """take_seq never repeats a number, across close and reopen."""
    spool = Spool(tmp_path / "g.sqlite3")
    first = [spool.take_seq() for _ in range(5)]
    spool.close()
    again = Spool(tmp_path / "g.sqlite3")
    second = [again.take_seq() for _ in range(5)]
    again.close()
    assert first == [0, 1, 2, 3, 4]
    assert second == [5, 6, 7, 8, 9]


def test_seq_skips_past_stored_messages(tmp_path: Path) -> None:
    """A spool holding messages hands out seqs above the highest stored one."""
    spool = Spool(tmp_path / "g.sqlite3")
    spool.append([_msg(41)])
    assert spool.take_seq() == 42
    spool.close()
