"""agora.backoff: how the chassis tries again after a failure."""

from __future__ import annotations

import asyncio

import pytest
import structlog
from structlog.testing import capture_logs

from agora.backoff import Backoff, retrying, warn

QUICK = Backoff(initial=0.001, max=0.002, jitter=0.001)


class Flaky:
    """Fails with ``error`` the first ``failures`` times it is called, then returns its count."""

    def __init__(self, failures: int, error: BaseException | None = None) -> None:
        self.failures = failures
        self.error = error or ConnectionError("away")
        self.calls = 0

    async def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.calls


async def test_a_call_that_fails_is_tried_again_until_it_returns() -> None:
    flaky = Flaky(failures=4)
    told: list[tuple[str, int]] = []

    result = await retrying(flaky, QUICK, failed=lambda e, n, _: told.append((str(e), n)))

    assert result == 5
    assert told == [("away", 1), ("away", 2), ("away", 3), ("away", 4)]


async def test_a_failure_the_caller_does_not_accept_is_raised_at_once() -> None:
    flaky = Flaky(failures=3, error=ValueError("bad input"))

    with pytest.raises(ValueError, match="bad input"):
        await retrying(flaky, QUICK, on=lambda error: isinstance(error, ConnectionError))
    assert flaky.calls == 1


async def test_the_last_failure_is_raised_once_the_attempts_run_out() -> None:
    flaky = Flaky(failures=10)

    with pytest.raises(ConnectionError):
        await retrying(flaky, Backoff(initial=0.001, max=0.002, jitter=0.0, attempts=3))
    assert flaky.calls == 3


async def test_the_pause_told_grows_to_the_cap() -> None:
    pauses: list[float] = []

    await retrying(
        Flaky(failures=4),
        Backoff(initial=0.001, max=0.004, jitter=0.0),
        failed=lambda _, __, pause: pauses.append(pause),
    )

    assert pauses == [0.001, 0.002, 0.004, 0.004]


class Exit(BaseException):
    """A process ending (not an error to retry)."""


async def test_what_is_no_exception_is_never_retried_even_after_a_retry() -> None:
    calls = 0

    async def away_then_exit() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("away") if calls == 1 else Exit

    with pytest.raises(Exit):
        await retrying(away_then_exit, QUICK)
    assert calls == 2


async def test_a_cancelled_retry_stops() -> None:
    started = asyncio.Event()

    async def away() -> None:
        started.set()
        raise ConnectionError("away")

    task = asyncio.create_task(retrying(away, Backoff(initial=10.0, max=10.0, jitter=0.0)))
    await started.wait()
    await asyncio.sleep(0)
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_warned_failure_says_what_failed_and_when_the_next_try_comes() -> None:
    with capture_logs() as logs:
        told = warn(structlog.get_logger("test"), "peer unreachable, retrying", peer="ledger")
        told(ConnectionError("away"), 2, 0.1234)

    assert logs == [
        {
            "event": "peer unreachable, retrying",
            "error": "ConnectionError('away')",
            "retry_in_s": 0.12,
            "failures": 2,
            "peer": "ledger",
            "log_level": "warning",
        }
    ]
