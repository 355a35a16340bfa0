"""``agora verify`` from the console: the consistency checks, run against this gateway as the
admin who pressed the button (with their own token, not a stored password).

What runs them is the :class:`Checks` bootstrap provided, if any (``Resources.provide``), so a
test provides a stand-in instead of patching anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from agora.app import Resources
from consistency.checks import Report, check
from consistency.snapshot import Gateway, ReadFailed, read_settled

# Orders in progress are waited for this long (the command line waits a minute; a page cannot).
WAIT = 5.0
# Everything, reads and waiting included, within this.
DEADLINE = 45.0

Verify = Callable[[str, str], Awaitable[Report]]


async def verify_as(url: str, token: str) -> Report:
    """Every invariant checked through the gateway at ``url``, reading as ``token``'s owner."""
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=30),
        # Sent on every read: the admin's own token, so no password is needed here.
        headers={"Authorization": f"Bearer {token}"},
    ) as session:
        return check(await read_settled(Gateway(session, url), wait=WAIT))


@dataclass(frozen=True, slots=True)
class Checks:
    """What runs the checks in place of :func:`verify_as` (a test's stand-in)."""

    run: Verify


def verifier(resources: Resources) -> Verify:
    try:
        return resources.get(Checks).run
    except LookupError:
        return verify_as


class VerifyFailed(RuntimeError):
    """The system could not be read, so nothing was judged."""


async def run(resources: Resources, url: str, token: str) -> Report:
    try:
        async with asyncio.timeout(DEADLINE):
            return await verifier(resources)(url, token)
    except TimeoutError as error:
        raise VerifyFailed(f"the services did not answer within {DEADLINE:.0f} s") from error
    except (ReadFailed, aiohttp.ClientError) as error:
        raise VerifyFailed(str(error) or type(error).__name__) from error
