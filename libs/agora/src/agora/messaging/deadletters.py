"""Dead letters: the messages consumers gave up on, read back and sent again.

A consumer publishes a message it could not apply to ``agora.<service>.dead.<consumer>`` (see
:mod:`agora.messaging.consumer`), in its own service's stream: the original bytes, the original
headers (``traceparent``), and ``Agora-*`` headers saying what failed. :func:`dead_letters`
lists them across every ``AGORA_*`` stream; :func:`replay` publishes one back to its original
subject and removes it. Every consumer sees the replayed message: those that applied the event
before skip it through their inbox; the one that failed gets it again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NoStreamResponseError, NotFoundError

from agora.messaging.broker import BrokerUnavailable
from agora.messaging.consumer import DeadLetterHeaders as H
from agora.messaging.consumer import own_headers
from agora.messaging.credentials import NatsCredentials, connect_options
from agora.messaging.envelope import SUBJECT_ROOT

STREAM_PREFIX = "AGORA_"
DEAD_SUBJECTS = f"{SUBJECT_ROOT}.*.dead.>"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter, where it is kept, and what it holds."""

    id: str  # the event's id
    service: str  # the consuming service
    consumer: str
    handler: str
    error: str
    delivered: int
    time: datetime | None
    original_subject: str
    stream: str
    seq: int
    payload: bytes = field(repr=False)
    headers: dict[str, str] = field(repr=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "service": self.service,
            "consumer": self.consumer,
            "handler": self.handler,
            "error": self.error,
            "delivered": self.delivered,
            "time": self.time.isoformat() if self.time is not None else None,
            "original_subject": self.original_subject,
        }

    def original_headers(self) -> dict[str, str]:
        """The headers the message had before it died (``traceparent``), minus broker ones."""
        return own_headers(self.headers)


@dataclass(frozen=True, slots=True)
class Replayed:
    """What :func:`replay` sent: one event, to its subject, for the consumers that failed it."""

    id: str
    subject: str
    consumers: tuple[str, ...]
    stream: str
    seq: int


class UnknownDeadLetter(LookupError):
    """No dead letter has this id."""


class ReplayFailed(RuntimeError):
    """The dead letter could not be sent back; it stays in the dead letters."""


@asynccontextmanager
async def connection(
    url: str, *, wait: float = 2.0, credentials: NatsCredentials | None = None
) -> AsyncIterator[JetStreamContext]:
    """JetStream at ``url`` for one command, logged in as ``credentials``' user (the operator's,
    for ``agora events``); BrokerUnavailable when it cannot be reached or refuses the login."""

    seen: list[Exception] = []

    async def quiet(error: Exception) -> None:
        # Told once below, as the reason; not as every attempt's traceback.
        seen.append(error)

    try:
        # One attempt and one retry: nats-py's server selection never gives up when
        # max_reconnect_attempts is 0, and the outer bound holds even if that changes.
        async with asyncio.timeout(3 * wait + 1):
            nc: Client = await nats.connect(
                url,
                connect_timeout=wait,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.2,
                error_cb=quiet,
                **connect_options(credentials),
            )
    except Exception as error:
        reason = seen[-1] if seen else error
        raise BrokerUnavailable(f"cannot reach the broker at {url}: {reason}") from error
    try:
        yield nc.jetstream(timeout=wait)
    finally:
        await nc.close()


async def dead_letters(js: JetStreamContext) -> list[DeadLetter]:
    """Every dead letter in every ``AGORA_*`` stream, oldest first."""
    found: list[DeadLetter] = []
    for stream in await _agora_streams(js):
        seq = 1
        while True:
            try:
                raw = await js.get_msg(stream, seq, subject=DEAD_SUBJECTS, next=True)
            except NotFoundError:
                break
            if raw.seq is None:
                break  # the server answered without a position: nothing further to walk
            found.append(_dead_letter(stream, raw.seq, raw))
            seq = raw.seq + 1
    return sorted(found, key=lambda letter: (letter.time is None, letter.time, letter.seq))


async def replay(js: JetStreamContext, event_id: str) -> Replayed:
    """Send the dead letter ``event_id`` back to its original subject, then delete it.

    The event goes out once even when several consumers dead-lettered it: every consumer of
    the subject sees it again. A fresh ``Nats-Msg-Id`` keeps the broker's de-duplication from
    dropping it as the copy of the original.
    """
    matches = [letter for letter in await dead_letters(js) if letter.id == event_id]
    if not matches:
        raise UnknownDeadLetter(f"no dead letter has the id {event_id!r}")
    first = matches[0]
    if not first.original_subject:
        raise ValueError(f"the dead letter {event_id!r} does not say where it came from")
    headers = first.original_headers()
    headers["Nats-Msg-Id"] = f"{first.id}:replay:{first.stream}:{first.seq}"
    try:
        await js.publish(first.original_subject, first.payload, headers=headers)
    except NoStreamResponseError as error:
        raise ReplayFailed(
            f"no stream takes {first.original_subject} now, so the dead letter {event_id!r} "
            "was kept: has its publisher's stream been deleted?"
        ) from error
    for letter in matches:
        # Gone already when another replay removed it meanwhile: nothing left to list then.
        with contextlib.suppress(NotFoundError):
            await js.delete_msg(letter.stream, letter.seq)
    return Replayed(
        id=first.id,
        subject=first.original_subject,
        consumers=tuple(letter.consumer for letter in matches),
        stream=first.stream,
        seq=first.seq,
    )


async def _agora_streams(js: JetStreamContext) -> list[str]:
    names: list[str] = []
    offset = 0
    while True:
        page = await js.streams_info(offset)
        if not page:
            return names
        offset += len(page)
        names.extend(
            info.config.name
            for info in page
            if info.config.name is not None and info.config.name.startswith(STREAM_PREFIX)
        )


def _dead_letter(stream: str, seq: int, raw: RawStreamMsg) -> DeadLetter:
    headers: dict[str, str] = dict(raw.headers or {})
    # agora.<service>.dead.<consumer>
    parts = (raw.subject or "").split(".")
    service = parts[1] if len(parts) > 1 else ""
    try:
        delivered = int(headers.get(H.DELIVERED, "0"))
    except ValueError:
        delivered = 0
    return DeadLetter(
        id=headers.get(H.EVENT_ID) or f"{stream}:{seq}",
        service=service,
        consumer=headers.get(H.CONSUMER, ""),
        handler=headers.get(H.HANDLER, ""),
        error=headers.get(H.ERROR, ""),
        delivered=delivered,
        time=raw.time,
        original_subject=headers.get(H.ORIGINAL_SUBJECT, ""),
        stream=stream,
        seq=seq,
        payload=raw.data or b"",
        headers=headers,
    )
