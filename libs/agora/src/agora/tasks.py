"""Background tasks: waking them when there is news, and stopping them so that they really stop.

A :class:`Bell` lets a commit wake the loops and streams that would otherwise only look again at
their next poll.

On Python 3.11, ``asyncio.wait_for`` can lose a cancellation that arrives just as the future it
waits on completes (CPython gh-86296, fixed in 3.12): the coroutine carries on as if it had never
been cancelled, and a loop written ``while True`` then runs for ever. nats-py waits that way in
its fetches and requests, so a consumer's task could ignore the one ``cancel()`` of a shutdown,
and the shutdown then hung on it. :func:`cancel_and_wait` cancels again until each task is done.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

import structlog

log = structlog.get_logger("agora.tasks")


class Bell:
    """Rung after a commit that may interest the loops waiting on it (the unit of work's
    after-commit hook calls it); a waiter wakes at once rather than at its next poll. A ring
    while nobody waits is kept for the next wait."""

    def __init__(self) -> None:
        self._rung: asyncio.Event | None = None

    def start(self) -> None:
        """Begin, in the running event loop (an app may be started more than once, in another
        loop each time)."""
        self._rung = asyncio.Event()

    def ring(self) -> None:
        if self._rung is not None:
            self._rung.set()

    def __call__(self) -> None:
        self.ring()

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 (a poll interval)
        """Until rung, or ``timeout`` seconds."""
        if self._rung is None:
            self._rung = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._rung.wait()
        self._rung.clear()


# Seconds between two cancellations of a task that is still running.
RECANCEL_EVERY = 0.5


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and return once every one of them has ended (their errors are dropped:
    they are being stopped)."""
    pending = {task for task in tasks if not task.done()}
    rounds = 0
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_EVERY)
        rounds += 1
        if pending and rounds == 1:
            log.info(
                "a task went on after it was cancelled, cancelling it again",
                tasks=sorted(task.get_name() for task in pending),
            )
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved, so that asyncio does not report it as never retrieved
