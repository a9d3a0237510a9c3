"""Bounded hand-over of received messages from paho's network thread to the event loop.

Owns the one bound on what the service holds before decoding. The MQTT v5 Receive Maximum
should already cap the broker's unacknowledged sends, but Mosquitto 2.0.11 was measured here
to exceed it (receive maximum 100, acknowledgements returned in bursts after each commit:
548 messages outstanding). So when the inbox is full, `put` blocks paho's thread: it stops
reading the socket, TCP flow control stops the broker, and the broker keeps the rest queued.

No I/O and no clock reads; one producer thread, one asyncio consumer.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from contextlib import suppress
from typing import Generic, TypeVar

T = TypeVar("T")


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Inbox(Generic[T]):
    """A bounded queue: a producer thread puts (blocking while full), an asyncio task takes."""

    def __init__(self, capacity: int, loop: asyncio.AbstractEventLoop) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._capacity = capacity
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.blocked_puts = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        """Add an item; from the producer thread. Blocks while full, unless closed."""
        with self._cond:
            if len(self._items) >= self._capacity and not self._closed:
                self.blocked_puts += 1
                while len(self._items) >= self._capacity and not self._closed:
                    self._cond.wait()
            self._items.append(item)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            # Only when the consumer sleeps: a wake-up per message costs more than decoding it.
            self._loop.call_soon_threadsafe(_wake, waiter)

    def get_nowait(self) -> T | None:
        """Take the oldest item, or None when empty; from the event loop."""
        with self._cond:
            if not self._items:
                return None
            item = self._items.popleft()
            if len(self._items) < self._capacity:
                self._cond.notify()
            return item

    async def wait(self, timeout_s: float) -> None:
        """Return when an item is available or after timeout_s, whichever comes first."""
        with self._cond:
            if self._items:
                return
            fut: asyncio.Future[None] = self._loop.create_future()
            self._waiter = fut
        try:
            with suppress(TimeoutError):
                await asyncio.wait_for(fut, timeout_s)
        finally:
            with self._cond:
                if self._waiter is fut:
                    self._waiter = None

    def close(self) -> None:
        """Stop blocking producers: puts after this never wait."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
