"""The recent-events feed: every message on ``agora.>`` the gateway's broker connection sees,
kept in memory (the last few hundred), reduced to its envelope and a short summary.

A plain NATS subscription, not a JetStream consumer: it takes nothing from the services'
durable consumers, costs the broker nothing to remember, and sees commands and dead letters as
they go by as well as events. What it shows of ``data`` is a handful of identifying fields
(ids, a SKU, a status), never the payload wholesale.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import orjson
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from agora.messaging.broker import Broker, BrokerUnavailable

log = structlog.get_logger("gateway.console")

SUBJECTS = "agora.>"
FEED_SIZE = 200
# The data fields a summary may name: what the message is about, not what it carries.
_SUMMARY_FIELDS = frozenset({"sku", "status", "reason", "quantity", "step", "kind"})
_SUMMARY_LENGTH = 40


@dataclass(frozen=True, slots=True)
class SeenEvent:
    """One message as the feed shows it."""

    received_at: float  # unix seconds
    subject: str  # the NATS subject
    kind: str  # events, commands, dead (from the subject)
    type: str
    source: str
    aggregate: str | None  # the CloudEvents subject: the order, product, user it is about
    id: str | None
    time: str | None
    summary: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def seen_event(subject: str, payload: bytes, *, received_at: float | None = None) -> SeenEvent:
    """What the feed keeps of a message: its envelope, and a summary of a few ``data`` fields."""
    parts = subject.split(".")
    kind = parts[2] if len(parts) > 2 else ""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        body = None
    envelope: Mapping[str, Any] = body if isinstance(body, dict) else {}
    data = envelope.get("data")
    return SeenEvent(
        received_at=time.time() if received_at is None else received_at,
        subject=subject,
        kind=kind,
        type=_text(envelope.get("type")) or "(not a CloudEvent)",
        source=_text(envelope.get("source")) or (parts[1] if len(parts) > 1 else ""),
        aggregate=_text(envelope.get("subject")),
        id=_text(envelope.get("id")),
        time=_text(envelope.get("time")),
        summary=summary(data) if isinstance(data, Mapping) else "",
    )


def summary(data: Mapping[str, Any]) -> str:
    """``order_id=…, status=…``: ids and a few plain fields, each shortened; nothing else."""
    pairs = [
        f"{key}={_short(value)}"
        for key, value in data.items()
        if (key in _SUMMARY_FIELDS or key.endswith("_id"))
        and isinstance(value, str | int | float | bool)
    ]
    return ", ".join(pairs[:4])


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= _SUMMARY_LENGTH else text[: _SUMMARY_LENGTH - 1] + "…"


class RecentEvents:
    """The last ``size`` messages seen, and the subscription that feeds them."""

    def __init__(self, size: int = FEED_SIZE) -> None:
        self._seen: deque[SeenEvent] = deque(maxlen=size)
        self._lock = asyncio.Lock()
        self._client: Client | None = None
        self._subscription: Subscription | None = None

    @property
    def subscribed(self) -> bool:
        return self._subscription is not None and self._client is not None

    def record(self, subject: str, payload: bytes) -> SeenEvent:
        event = seen_event(subject, payload)
        self._seen.append(event)
        return event

    def latest(self, limit: int | None = None) -> list[SeenEvent]:
        """Newest first."""
        newest = list(reversed(self._seen))
        return newest if limit is None else newest[:limit]

    async def attach(self, broker: Broker) -> None:
        """Subscribe now if the broker is connected, and again after every new connection."""

        async def subscribe() -> None:
            await self._subscribe(broker)

        broker.on_connect(subscribe)
        if broker.connected:
            await self._subscribe(broker)

    async def _subscribe(self, broker: Broker) -> None:
        async with self._lock:
            try:
                client = broker.nc
            except BrokerUnavailable:
                return
            # nats-py restores its subscriptions after a reconnect by itself: once per client.
            if client is self._client:
                return
            self._subscription = await client.subscribe(SUBJECTS, cb=self._on_message)
            self._client = client
            log.info("console following events", subjects=SUBJECTS)

    async def _on_message(self, message: Msg) -> None:
        self.record(message.subject, message.data)

    async def detach(self) -> None:
        async with self._lock:
            subscription, self._subscription, self._client = self._subscription, None, None
        if subscription is not None:
            # The connection may be closing or closed already: nothing is left to undo then.
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
