"""Stopping a task that lost its first cancellation, as asyncio.wait_for can make one lose it on
Python 3.11: the stop must not hang."""

from __future__ import annotations

import asyncio

from agora.tasks import cancel_and_wait


async def test_a_task_that_swallowed_a_cancellation_is_cancelled_again_until_it_ends() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed == 2:
                    raise
                swallowed += 1  # what a lost cancellation looks like: the loop goes on

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)

    await asyncio.wait_for(cancel_and_wait([task]), timeout=30)

    assert task.cancelled()
    assert swallowed == 2


async def test_tasks_that_ended_or_failed_are_waited_for_without_complaint() -> None:
    async def fails() -> None:
        raise RuntimeError("broken")

    failed = asyncio.create_task(fails())
    finished = asyncio.create_task(asyncio.sleep(0))
    running = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0.01)

    await cancel_and_wait([failed, finished, running])

    assert isinstance(failed.exception(), RuntimeError)
    assert finished.done()
    assert not finished.cancelled()
    assert running.cancelled()


async def test_consumers_stop_even_when_a_loop_lost_its_cancellation() -> None:
    from agora.messaging.consumer import Consumers

    class Stubborn:
        """A subscription's loop that lost its first cancellation, as a fetch can make it."""

        name = "stubborn"
        lost = 0
        started = asyncio.Event()

        async def run(self) -> None:
            self.started.set()
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    if self.lost:
                        raise
                    self.lost += 1

    consumers = Consumers.__new__(Consumers)
    stubborn = Stubborn()
    consumers.loops = [stubborn]  # type: ignore[list-item]
    task = asyncio.create_task(consumers.run())
    await asyncio.wait_for(stubborn.started.wait(), timeout=30)

    # Cancelled once, as a caller that knows nothing of lost cancellations would.
    task.cancel()
    await asyncio.wait([task], timeout=30)

    assert task.cancelled()
    assert stubborn.lost == 1
