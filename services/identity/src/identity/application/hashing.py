"""Password hashing off the event loop, and a bounded amount of it: the :class:`HashingGate`
that identity's steps pass every argon2 hash and check through."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar, TypeVarTuple

import anyio

Result = TypeVar("Result")
Args = TypeVarTuple("Args")


class HashingBusy(Exception):
    """Too many password checks at once."""

    def __init__(self, retry_after: timedelta) -> None:
        super().__init__("identity is checking as many passwords as it can; try again shortly")
        self.retry_after = retry_after


class HashingGate:
    """Password hashing off the event loop, and a bounded amount of it.

    At most ``at_once`` hashes run at a time, each in a worker thread; at most ``waiting`` more
    wait for a thread. Any further one is refused at once with :class:`HashingBusy`: a flood of
    logins then costs its sender quick 429s, where an unbounded queue would make every caller,
    the flood's and everyone else's, wait into timeouts.
    """

    def __init__(self, *, at_once: int, waiting: int, retry_after: timedelta) -> None:
        self._threads = anyio.CapacityLimiter(at_once)
        self._bound = at_once + waiting
        self._admitted = 0
        self._retry_after = retry_after

    def check(self) -> None:
        """Refuse now what :meth:`run` would refuse, before any other work is spent on it."""
        if self._admitted >= self._bound:
            raise HashingBusy(self._retry_after)

    async def run(self, work: Callable[[*Args], Result], *args: *Args) -> Result:
        # The count changes only on the event loop's thread, with no await between the check
        # and the increment: nothing slips past the bound.
        self.check()
        self._admitted += 1
        job = asyncio.ensure_future(anyio.to_thread.run_sync(work, *args, limiter=self._threads))
        job.add_done_callback(self._done)
        # Shielded: a caller that is cancelled (its client hung up) leaves the job to finish, and
        # the job keeps its place and its thread until then, so cancellations cannot make room
        # for more work than the bound.
        return await asyncio.shield(job)

    def _done(self, job: asyncio.Future[Any]) -> None:
        self._admitted -= 1
        if not job.cancelled():
            job.exception()  # retrieved: a job whose caller left has nobody to raise it to
