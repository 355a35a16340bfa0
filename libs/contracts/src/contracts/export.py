"""Write the published contracts: a JSON Schema per event type and one AsyncAPI document.

``python -m contracts.export`` (what ``make contracts`` runs) writes into ``docs/contracts/``:
``<type>.schema.json`` for the ``data`` of every event type, and ``asyncapi.yaml`` describing the
subject each type travels on and its CloudEvents envelope. It refuses to overwrite a schema with
an incompatible one (see :mod:`contracts.compat`): that change needs a new version of the event.
``--check`` writes nothing and fails when the files differ from what would be written.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from contracts import all_events, parse_type
from contracts.base import IntegrationEvent, subject_of
from contracts.compat import breaking_changes

DEFAULT_DIRECTORY = Path("docs/contracts")
ASYNCAPI = "asyncapi.yaml"
SCHEMA_SUFFIX = ".schema.json"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
CLOUDEVENTS_JSON = "application/cloudevents+json"


def schema_file(event_type: str) -> str:
    return f"{event_type}{SCHEMA_SUFFIX}"


def event_schema(event: type[IntegrationEvent]) -> dict[str, Any]:
    """The JSON Schema of an event's ``data``, as consumers validate it."""
    schema = event.model_json_schema(mode="validation")
    if not schema.get("description"):
        raise ValueError(f"{event.__qualname__} needs a docstring: it is the event's description")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:agora:contracts:{event.type}",
        **schema,
    }


def render_schema(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _cloud_event_schema() -> dict[str, Any]:
    # Written out here rather than read from the chassis: contracts depend on no service code,
    # and a reader in another language needs the envelope spelled out anyway.
    return {
        "type": "object",
        "description": "A CloudEvents 1.0 event in structured JSON mode.",
        "required": ["specversion", "id", "source", "type", "time", "datacontenttype", "data"],
        "properties": {
            "specversion": {"type": "string", "const": "1.0"},
            "id": {
                "type": "string",
                "format": "uuid",
                "description": "Unique per event; the broker de-duplicates on it (Nats-Msg-Id).",
            },
            "source": {"type": "string", "description": "The publishing service."},
            "type": {"type": "string", "description": "<publisher>.<Name>.v<N>"},
            "time": {"type": "string", "format": "date-time"},
            "subject": {
                "type": "string",
                "description": "The id of the aggregate the event is about; absent when none.",
            },
            "datacontenttype": {"type": "string", "const": "application/json"},
            "data": {"type": "object", "description": "The event itself, per its type's schema."},
        },
    }


def _headers_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "Nats-Msg-Id": {
                "type": "string",
                "description": "The event id: JetStream drops a second publish of the same event.",
            },
            "traceparent": {
                "type": "string",
                "description": "W3C trace context of the span that recorded the event.",
            },
        },
    }


def asyncapi_document(events: Iterable[type[IntegrationEvent]]) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every event type: its subject, sender and envelope."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for event in sorted(events, key=lambda event: event.type):
        parsed = parse_type(event.type)
        description = inspect.cleandoc(event.__doc__ or "")
        command = event.kind == "command"
        channels[event.type] = {
            "address": subject_of(event),
            "description": description,
            "messages": {parsed.name: {"$ref": f"#/components/messages/{event.type}"}},
        }
        action = "receive" if command else "send"
        operations[f"{event.type}.{action}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{event.type}"},
            "summary": (
                f"{parsed.publisher} accepts the command {parsed.name} v{parsed.version}."
                if command
                else f"{parsed.publisher} publishes {parsed.name} v{parsed.version}."
            ),
            "tags": [{"name": parsed.publisher}],
            "messages": [{"$ref": f"#/channels/{event.type}/messages/{parsed.name}"}],
        }
        messages[event.type] = {
            "name": parsed.name,
            "title": event.type,
            "summary": description.splitlines()[0] if description else "",
            "contentType": CLOUDEVENTS_JSON,
            "tags": [{"name": parsed.publisher}],
            "headers": {"$ref": "#/components/schemas/MessageHeaders"},
            "payload": {
                "allOf": [
                    {"$ref": "#/components/schemas/CloudEvent"},
                    {
                        "type": "object",
                        "properties": {
                            "type": {"type": "string", "const": event.type},
                            "data": {"$ref": f"./{schema_file(event.type)}"},
                        },
                    },
                ]
            },
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Agora integration events",
            "version": metadata.version("contracts"),
            "description": (
                "Every event an Agora service publishes, and every command one accepts, on NATS"
                " JetStream. Each event travels as a"
                " CloudEvents 1.0 structured JSON message on the subject"
                " agora.<publisher>.events.<Name>.v<N>; its data follows the JSON Schema of its"
                " type, beside this file. Commands, which the service named in their type"
                " accepts, travel the same way on agora.<receiver>.commands.<Name>.v<N>."
            ),
        },
        "defaultContentType": CLOUDEVENTS_JSON,
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": {"CloudEvent": _cloud_event_schema(), "MessageHeaders": _headers_schema()},
            "messages": messages,
        },
    }


class _Dumper(yaml.SafeDumper):
    """Block style throughout; several lines of text as a literal block, as written."""


def _represent_text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _represent_text)


def render_asyncapi(document: dict[str, Any]) -> str:
    return yaml.dump(
        document,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )


def render(events: Sequence[type[IntegrationEvent]]) -> dict[str, str]:
    """Every exported file's name and text."""
    files = {schema_file(event.type): render_schema(event_schema(event)) for event in events}
    files[ASYNCAPI] = render_asyncapi(asyncapi_document(events))
    return files


def published_schemas(directory: Path) -> dict[str, dict[str, Any]]:
    """The schemas written in ``directory``, by event type."""
    return {
        path.name.removesuffix(SCHEMA_SUFFIX): json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(directory.glob(f"*{SCHEMA_SUFFIX}"))
    }


def differences(directory: Path, files: dict[str, str]) -> list[str]:
    """Which files in ``directory`` are missing, stale or no longer produced."""
    found: list[str] = []
    for name, text in sorted(files.items()):
        path = directory / name
        if not path.exists():
            found.append(f"{name} is missing")
        elif path.read_text(encoding="utf-8") != text:
            found.append(f"{name} differs from the current contracts")
    produced = set(files)
    for path in sorted(directory.glob(f"*{SCHEMA_SUFFIX}")):
        if path.name not in produced:
            found.append(f"{path.name} is no longer produced by any event")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contracts.export", description=__doc__)
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_DIRECTORY, help="where to write (default: %(default)s)"
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; fail if the files are not current"
    )
    args = parser.parse_args(argv)
    directory: Path = args.out
    events = all_events()
    current = {event.type: event_schema(event) for event in events}
    breaking = breaking_changes(published_schemas(directory), current)
    for event_type, problems in breaking.items():
        for problem in problems:
            print(f"{event_type}: {problem}", file=sys.stderr)
    if breaking:
        print(
            "These changes break the published contract: keep the old class and add one with the"
            " next version (type '...v<N+1>') instead.",
            file=sys.stderr,
        )
        return 1
    files = render(events)
    if args.check:
        stale = differences(directory, files)
        for difference in stale:
            print(difference, file=sys.stderr)
        if stale:
            print("Run `make contracts` and commit docs/contracts/.", file=sys.stderr)
        return 1 if stale else 0
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob(f"*{SCHEMA_SUFFIX}"):
        if path.name not in files:
            path.unlink()
    for name, text in files.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
