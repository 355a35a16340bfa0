"""What every integration event is, and how its type names it.

An event is the CloudEvents ``data`` of one thing that happened in a publishing service. Its class
names the CloudEvents ``type`` as ``<publisher>.<Name>.v<N>``: the publisher is the contracts module
the class lives in, and ``N`` changes only with an incompatible change of the payload.
"""

from __future__ import annotations

import re
from typing import ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict

_TYPE = re.compile(
    r"^(?P<publisher>[a-z][a-z0-9-]*)\.(?P<name>[A-Z][A-Za-z0-9]*)\.v(?P<version>[1-9][0-9]*)$"
)


class IntegrationEvent(BaseModel):
    """Base of every published event."""

    # A consumer must read what a newer, compatible publisher sends, extra fields included.
    model_config = ConfigDict(frozen=True, extra="ignore")

    type: ClassVar[str]
    # "event": something that happened, published by the service the type names. "command":
    # something asked of the service the type names, which defines it (see IntegrationCommand).
    kind: ClassVar[str] = "event"


class IntegrationCommand(IntegrationEvent):
    """Base of every command: a request for one service to act, sent through the sender's outbox.

    A command belongs to its receiver, which defines it beside its events (its type is
    ``<receiver>.<Name>.v<N>``, an imperative name) and keeps it compatible as it keeps its events:
    any service may send it, and it travels on ``agora.<receiver>.commands.<Name>.v<N>``.
    """

    kind: ClassVar[str] = "command"


def subject_of(message: type[IntegrationEvent]) -> str:
    """The NATS subject messages of this class travel on."""
    parsed = parse_type(message.type)
    if message.kind == "command":
        return f"agora.{parsed.publisher}.commands.{parsed.name}.v{parsed.version}"
    return parsed.subject


class TypeName(NamedTuple):
    """A parsed ``<publisher>.<Name>.v<N>``."""

    publisher: str
    name: str
    version: int

    @property
    def subject(self) -> str:
        """The NATS subject events of this type travel on."""
        return f"agora.{self.publisher}.events.{self.name}.v{self.version}"


def parse_type(value: str) -> TypeName:
    """Split an event type into publisher, name and version; ValueError when it is not one."""
    match = _TYPE.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not an event type of the form publisher.Name.vN")
    return TypeName(match["publisher"], match["name"], int(match["version"]))
