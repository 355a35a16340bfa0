"""The event envelope (CloudEvents 1.0, structured JSON) and the subject naming rules.

An integration event is a pydantic model whose class names its CloudEvents ``type`` as
``<publisher>.<Name>.v<N>`` (``catalog.ProductCreated.v1``). It travels as ``data`` inside a
:class:`CloudEvent` on the subject ``agora.<publisher>.events.<Name>.v<N>``; commands travel on
``agora.<receiver>.commands.<Name>.v<N>``. The chassis knows no event by name: it reads ``type``.
"""

from __future__ import annotations

import functools
import re
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field

SUBJECT_ROOT = "agora"
_TYPE = re.compile(
    r"^(?P<publisher>[a-z][a-z0-9-]*)\.(?P<name>[A-Z][A-Za-z0-9]*)\.v(?P<version>\d+)$"
)


class EventModel(Protocol):
    """What the chassis needs of an event class: a pydantic model naming its type."""

    type: ClassVar[str]

    def model_dump(self, *, mode: str = ...) -> dict[str, Any]: ...


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 envelope in structured JSON mode."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    source: str
    type: str
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    subject: str | None = None
    datacontenttype: str = "application/json"
    data: dict[str, Any]

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))

    @classmethod
    def from_bytes(cls, payload: bytes) -> CloudEvent:
        return cls.model_validate_json(payload)


class EventType:
    """A parsed ``<publisher>.<Name>.v<N>``."""

    __slots__ = ("name", "publisher", "version")

    def __init__(self, value: str) -> None:
        match = _TYPE.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not an event type of the form publisher.Name.vN")
        self.publisher = match["publisher"]
        self.name = match["name"]
        self.version = int(match["version"])

    def __str__(self) -> str:
        return f"{self.publisher}.{self.name}.v{self.version}"

    @property
    def subject(self) -> str:
        return event_subject(self.publisher, self.name, self.version)


def event_subject(publisher: str, name: str, version: int) -> str:
    return f"{SUBJECT_ROOT}.{publisher}.events.{name}.v{version}"


def command_subject(receiver: str, name: str, version: int) -> str:
    return f"{SUBJECT_ROOT}.{receiver}.commands.{name}.v{version}"


def dead_letter_subject(service: str, consumer: str) -> str:
    return f"{SUBJECT_ROOT}.{service}.dead.{consumer}"


def stream_name(service: str) -> str:
    """The JetStream stream holding everything ``service`` publishes (``agora.<service>.>``)."""
    return f"AGORA_{service.upper().replace('-', '_')}"


def stream_subjects(service: str) -> list[str]:
    return [f"{SUBJECT_ROOT}.{service}.>"]


def subject_of(message: object) -> str:
    """The subject a message of this class travels on.

    An event (the default) goes out on its publisher's event subject. A command, a class that
    says ``kind = "command"``, is named after its receiver (``inventory.ReserveStock.v1``) and
    goes to ``agora.<receiver>.commands.<Name>.v<N>``: the receiver's stream holds it, so it is
    kept for the receiver whoever sends it.
    """
    type_ = getattr(message, "type")  # noqa: B009 (a ClassVar of the model or class)
    return _subject(type_, getattr(message, "kind", "event"))


@functools.cache
def _subject(type_: str, kind: str) -> str:
    # Parsed once per type: every recorded event asks.
    parsed = EventType(type_)
    if kind == "command":
        return command_subject(parsed.publisher, parsed.name, parsed.version)
    return parsed.subject


def envelope(event: EventModel, *, source: str, subject: str | None = None) -> CloudEvent:
    """Wrap an event for the wire: a new id, the time now, its type and data."""
    return CloudEvent(
        source=source, type=event.type, subject=subject, data=event.model_dump(mode="json")
    )
