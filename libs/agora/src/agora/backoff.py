"""Trying again after a failure: the one way the chassis waits between tries, through ``stamina``.

The unit of work retries a busy database, the client an unanswered call, and the relay, the
broker connection and the consumers keep trying while the broker is away. Each states its
:class:`Backoff` and calls :func:`retrying`; stamina computes the pauses (exponential, with
jitter, capped); each caller says what it retries in its own log line.

The chassis's tests keep these pauses real and short rather than switching on stamina's testing
mode: that mode caps every retry at a few attempts, and would end the loops that must go on for
as long as the broker is away.

    backoff = Backoff(initial=0.05, max=5.0, jitter=0.05)  # for as long as it takes
    await retrying(publish_all, backoff, failed=warn(log, "relay could not publish, retrying"))
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import stamina
import structlog

T = TypeVar("T")

# Each caller logs its own retries (``failed``, :func:`warn`) in words that say what is being
# retried. stamina's own hooks are off: its log line would repeat ours, a busy SQLite file would
# warn on every short pause, and its counter is labelled by the try's number, which grows
# without bound while a loop waits out a long broker outage.
stamina.instrumentation.set_on_retry_hooks(())

# Whether a failure is worth another try.
Retryable = Callable[[Exception], bool]
# Told of each failure that ``on`` accepts: the failure, how many tries have failed, and the
# pause before the next try if the backoff allows one (at least: stamina adds its jitter).
Failed = Callable[[Exception, int, float], None]


@dataclass(frozen=True, slots=True)
class Backoff:
    """The pauses between tries: the first is ``initial`` seconds plus up to ``jitter`` more,
    each next one twice the last before its jitter, none longer than ``max``. ``attempts`` (tries
    in all) and ``timeout`` (seconds from the first retry) bound them; None is no bound, and
    with neither, tries go on for as long as it takes."""

    initial: float
    max: float
    jitter: float
    attempts: int | None = None
    timeout: float | None = None


async def retrying(
    call: Callable[[], Awaitable[T]],
    backoff: Backoff,
    *,
    on: Retryable | None = None,
    failed: Failed | None = None,
) -> T:
    """``await call()`` until it returns, trying again after a failure that ``on`` accepts
    (default: any ``Exception``) when ``backoff`` allows; the last failure is raised when it no
    longer does, and one ``on`` refuses at once. Cancellation is never retried.

    The first try runs outside stamina: setting up its retry machinery costs more than a
    request's transaction or a call to another service, and most first tries succeed.
    """
    retryable = on or _any
    try:
        return await call()
    except Exception as error:
        if not retryable(error):
            raise
        first: Exception | None = error
    async for trying in stamina.retry_context(
        # stamina is asked about any exception, cancellation and a process's exit included:
        # only an Exception may be retried.
        on=lambda error: isinstance(error, Exception) and retryable(error),
        attempts=backoff.attempts,
        timeout=backoff.timeout,
        wait_initial=backoff.initial,
        wait_max=backoff.max,
        wait_jitter=backoff.jitter,
    ):
        with trying:
            try:
                if first is not None:
                    # Replay the first try's failure so that stamina counts it and backs off.
                    replayed, first = first, None
                    raise replayed
                return await call()
            except Exception as error:
                if failed is not None and retryable(error):
                    failed(error, trying.num, trying.next_wait)
                raise
    raise AssertionError("stamina ends its loop by returning or raising")


def warn(logger: structlog.typing.FilteringBoundLogger, message: str, **fields: object) -> Failed:
    """A hook for ``failed`` that logs each failure as a warning: ``message``, the error, the
    pause before the next try and how many tries have failed, with ``fields``."""

    def failed(error: Exception, failures: int, pause: float) -> None:
        logger.warning(
            message, error=repr(error), retry_in_s=round(pause, 2), failures=failures, **fields
        )

    return failed


def _any(_: Exception) -> bool:
    return True
