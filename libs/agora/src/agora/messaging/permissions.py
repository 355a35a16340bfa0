"""What each broker user may do, from what its service publishes and consumes.

The contracts say which subjects a service publishes (its own events, the commands it sends)
and which it consumes; they are found through the ``agora.traffic`` entry points (Agora's are
``contracts.traffic``), so the chassis names no event. From those subjects, a service's user may:

* publish exactly its publishing subjects, and its own dead letters (``agora.<service>.dead.>``);
* look up, create and update its own stream, and look up the streams it consumes from or sends
  commands to (never create or change another's: a stream's settings decide where its
  messages are copied);
* create durable consumers on a stream it consumes from, each filtered to one subject it
  consumes (the filter is part of the request's subject, and the broker holds the request to
  it), pull from and acknowledge the consumers of those streams;
* subscribe only to its own inbox, ``_INBOX.<service>.>``: every reply (a pulled message, a
  publish's acknowledgement) reaches it there and nowhere another user may listen.

Nothing else: no reading of a stream's messages by position, no consumer on a stream it consumes
nothing from, no plain subscription to a subject (so no copy of another service's commands, which
carry card tokens). The console's user reads every subject and the dead letters and may replay;
the operator's (the runner, ``agora events``, tests) may do everything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from typing import Any, Protocol

from agora.messaging.credentials import inbox_prefix
from agora.messaging.envelope import SUBJECT_ROOT, dead_letter_subject, stream_name

TRAFFIC_ENTRY_POINTS = "agora.traffic"
JS_API = "$JS.API"

Permissions = dict[str, dict[str, list[str]]]


class Traffic(Protocol):
    """The subjects one service publishes to and consumes from."""

    @property
    def publishes(self) -> Sequence[str]: ...

    @property
    def consumes(self) -> Sequence[str]: ...


def declared_traffic() -> dict[str, Traffic]:
    """Each service's subjects, as the installed ``agora.traffic`` entry points declare them."""
    found: dict[str, Traffic] = {}
    for entry in metadata.entry_points(group=TRAFFIC_ENTRY_POINTS):
        found.update(entry.load()())
    return found


def own_events(service: str) -> list[str]:
    """What a service the contracts do not know may publish: its own events."""
    return [f"{SUBJECT_ROOT}.{service}.events.>"]


def service_permissions(service: str, traffic: Traffic | None) -> Permissions:
    """The permissions of ``service``'s broker user."""
    publishes = list(traffic.publishes) if traffic is not None else own_events(service)
    consumes = list(traffic.consumes) if traffic is not None else []
    own = stream_name(service)
    others = {_publisher(subject) for subject in [*publishes, *consumes]} - {service}
    consumed_streams = sorted({stream_name(_publisher(subject)) for subject in consumes})
    allowed = [
        *publishes,
        dead_letter_subject(service, ">"),
        *(f"{JS_API}.STREAM.{verb}.{own}" for verb in ("INFO", "CREATE", "UPDATE")),
        *(f"{JS_API}.STREAM.INFO.{stream_name(other)}" for other in sorted(others)),
        *(
            f"{JS_API}.CONSUMER.CREATE.{stream_name(_publisher(subject))}.*.{subject}"
            for subject in consumes
        ),
        *(f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.*" for stream in consumed_streams),
        *(f"$JS.ACK.{stream}.>" for stream in consumed_streams),
    ]
    return {
        "publish": {"allow": _unique(allowed)},
        "subscribe": {"allow": [f"{inbox_prefix(service)}.>"]},
    }


def console_permissions(user: str) -> Permissions:
    """The gateway's console: the recent messages on every subject, the dead letters of every
    stream, and a replay, which publishes an event or command again where it first went."""
    return {
        "publish": {
            "allow": [
                f"{SUBJECT_ROOT}.*.events.>",
                f"{SUBJECT_ROOT}.*.commands.>",
                f"{JS_API}.INFO",
                f"{JS_API}.STREAM.LIST",
                f"{JS_API}.STREAM.NAMES",
                f"{JS_API}.STREAM.INFO.*",
                f"{JS_API}.STREAM.MSG.GET.*",
                f"{JS_API}.STREAM.MSG.DELETE.*",
            ]
        },
        "subscribe": {"allow": [f"{SUBJECT_ROOT}.>", f"{inbox_prefix(user)}.>"]},
    }


def users_config(
    passwords: Mapping[str, str], permissions: Mapping[str, Permissions | None]
) -> list[dict[str, Any]]:
    """nats-server's ``authorization.users``: each user with its password and permissions
    (None: everything, the operator)."""
    users: list[dict[str, Any]] = []
    for user, password in passwords.items():
        entry: dict[str, Any] = {"user": user, "password": password}
        granted = permissions.get(user)
        if granted is not None:
            entry["permissions"] = granted
        users.append(entry)
    return users


def _publisher(subject: str) -> str:
    # agora.<publisher or receiver>.<events|commands>.<Name>.v<N>: its stream's service.
    return subject.split(".")[1]


def _unique(subjects: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(subjects))
