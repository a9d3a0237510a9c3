"""The bounded hand-over from paho's thread to the event loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ingest.inbox import Inbox


@pytest.mark.asyncio
async def test_producer_blocks_when_full_and_resumes_when_taken() -> None:
    """A full inbox holds the producer thread back until the consumer takes an item."""
    inbox: Inbox[int] = Inbox(2, asyncio.get_running_loop())
    done = threading.Event()

    def produce() -> None:
        for i in range(3):
            inbox.put(i)
        done.set()

    t = threading.Thread(target=produce)
    t.start()
    await asyncio.sleep(0.2)
    assert not done.is_set()
    assert len(inbox) == 2
    assert inbox.get_nowait() == 0
    await asyncio.to_thread(done.wait, 5)
    assert done.is_set()
    assert [inbox.get_nowait(), inbox.get_nowait(), inbox.get_nowait()] == [1, 2, None]
    assert inbox.blocked_puts == 1
    t.join()


@pytest.mark.asyncio
async def test_waiting_consumer_is_woken_by_a_put() -> None:
    """A consumer waiting on an empty inbox wakes as soon as an item arrives."""
    inbox: Inbox[str] = Inbox(10, asyncio.get_running_loop())
    threading.Timer(0.05, inbox.put, args=("x",)).start()
    t0 = time.monotonic()
    await inbox.wait(5.0)
    assert time.monotonic() - t0 < 2.0
    assert inbox.get_nowait() == "x"


@pytest.mark.asyncio
async def test_wait_times_out_on_an_empty_inbox() -> None:
    """Waiting on an empty inbox returns after the timeout with nothing to take."""
    inbox: Inbox[str] = Inbox(10, asyncio.get_running_loop())
    await inbox.wait(0.05)
    assert inbox.get_nowait() is None


@pytest.mark.asyncio
async def test_closed_inbox_never_blocks_the_producer() -> None:
    """After close (shutdown), puts go through even when full, so paho's thread can stop."""
    inbox: Inbox[int] = Inbox(1, asyncio.get_running_loop())
    inbox.put(1)
    inbox.close()
    inbox.put(2)
    assert len(inbox) == 2
