"""The committed contracts in docs/contracts/ are current, and no event type broke its own.

A consumer in any language reads docs/contracts/: a JSON Schema per event type and the AsyncAPI
document. These tests keep them equal to the models, and keep every published type compatible
with every schema it was ever committed with; an incompatible change needs a new version.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest

from contracts import IntegrationEvent, all_events, parse_type, publishers
from contracts.compat import breaking_changes, incompatibilities
from contracts.export import differences, event_schema, published_schemas, render, schema_file
from contracts.identity import UserRegistered

ROOT = Path(__file__).resolve().parents[3]
PUBLISHED = ROOT / "docs" / "contracts"


def current_schemas() -> dict[str, dict[str, Any]]:
    return {event.type: event_schema(event) for event in all_events()}


def test_the_committed_contracts_are_what_the_exporter_writes_now() -> None:
    stale = differences(PUBLISHED, render(all_events()))

    assert stale == [], "docs/contracts/ is out of date; run `make contracts` and commit it:\n" + (
        "\n".join(stale)
    )


def test_no_event_type_breaks_its_committed_schema() -> None:
    breaking = breaking_changes(published_schemas(PUBLISHED), current_schemas())

    assert breaking == {}, (
        "an event changed incompatibly; keep its class and add the next version instead: "
        + json.dumps(breaking, indent=2)
    )


def committed_versions(path: Path) -> list[tuple[str, str]]:
    """Every commit that changed ``path`` and the file's text there, newest first."""
    relative = path.relative_to(ROOT).as_posix()
    # Only commits that left the file in place have a text to compare.
    commits = git("log", "--format=%H", "--diff-filter=ACMRT", "--", relative).split()
    return [(commit, git("show", f"{commit}:{relative}")) for commit in commits]


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True
    ).stdout


def test_no_event_type_breaks_any_schema_it_was_ever_committed_with() -> None:
    # Rewriting the committed schema together with an incompatible model would pass the test
    # above; the history remembers what consumers were actually given.
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git history of docs/contracts/")
    current = current_schemas()
    found: dict[str, list[str]] = {}
    for event_type, schema in current.items():
        for commit, text in committed_versions(PUBLISHED / schema_file(event_type)):
            problems = incompatibilities(json.loads(text), schema)
            if problems:
                found[f"{event_type} as of {commit[:12]}"] = problems

    assert found == {}, json.dumps(found, indent=2)


def test_every_event_type_names_its_publisher_module_and_a_version() -> None:
    for publisher, events in publishers().items():
        for event in events:
            parsed = parse_type(event.type)
            assert parsed.publisher == publisher, event.type
            assert event.__module__ == f"contracts.{publisher}", event.type


def test_an_events_class_is_named_for_its_type_and_a_later_version_says_its_number() -> None:
    # OrderConfirmed is v1, OrderConfirmedV2 is v2 (ADR 38): the name tells the version apart.
    for event in all_events():
        parsed = parse_type(event.type)
        version = "" if parsed.version == 1 else f"V{parsed.version}"
        assert event.__name__ == f"{parsed.name}{version}", event.type


def test_event_types_are_unique() -> None:
    types = [event.type for event in all_events()]

    assert len(types) == len(set(types))


def test_every_event_a_publisher_module_defines_is_listed_in_its_events() -> None:
    for publisher, events in publishers().items():
        module = importlib.import_module(f"contracts.{publisher}")
        defined = {
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, IntegrationEvent)
            and value.__module__ == module.__name__
            and "type" in vars(value)
        }
        assert defined == set(events), publisher


def test_the_registry_holds_the_events_services_publish_and_the_commands_they_take() -> None:
    by_kind: dict[str, list[str]] = {"event": [], "command": []}
    for message in all_events():
        by_kind[message.kind].append(message.type)

    assert by_kind["event"] == [
        "catalog.ProductCreated.v1",
        "catalog.ProductUpdated.v1",
        "identity.UserRegistered.v1",
        "inventory.StockCommitted.v1",
        "inventory.StockRejected.v1",
        "inventory.StockReleased.v1",
        "inventory.StockReserved.v1",
        "orders.OrderCancelled.v1",
        "orders.OrderConfirmed.v1",
        "orders.OrderConfirmed.v2",
        "orders.OrderPlaced.v1",
        "payments.PaymentAuthorized.v1",
        "payments.PaymentCaptured.v1",
        "payments.PaymentDeclined.v1",
        "payments.PaymentFailed.v1",
        "payments.PaymentRefunded.v1",
        "payments.PaymentVoided.v1",
        "shipping.ShipmentCreated.v1",
        "shipping.ShipmentDelivered.v1",
        "shipping.ShipmentDispatched.v1",
    ]
    assert by_kind["command"] == [
        "inventory.CommitStock.v1",
        "inventory.ReleaseStock.v1",
        "inventory.ReserveStock.v1",
        "payments.AuthorizePayment.v1",
        "payments.CapturePayment.v1",
        "payments.RefundPayment.v1",
        "payments.VoidPayment.v1",
    ]


def test_a_consumer_ignores_fields_a_newer_publisher_added() -> None:
    data = {
        "user_id": "u-1",
        "email": "ada@example.com",
        "registered_at": "2026-11-24T12:00:00Z",
        "locale": "en",
    }

    event = UserRegistered.model_validate(data)

    assert event == UserRegistered(
        user_id="u-1", email="ada@example.com", registered_at=datetime(2026, 11, 24, 12, tzinfo=UTC)
    )
    assert "locale" not in event.model_dump()


class UserRegisteredV2(IntegrationEvent):
    """A customer account was created; the address is split into local part and domain."""

    type: ClassVar[str] = "identity.UserRegistered.v2"

    user_id: int
    local_part: str
    domain: str


def test_a_new_version_of_an_event_may_change_its_shape_freely() -> None:
    with_v2 = {**current_schemas(), UserRegisteredV2.type: event_schema(UserRegisteredV2)}

    assert breaking_changes(published_schemas(PUBLISHED), with_v2) == {}
    # The same shape under the old type would be refused.
    assert breaking_changes(
        published_schemas(PUBLISHED),
        {UserRegistered.type: event_schema(UserRegisteredV2)},
    ) == {
        UserRegistered.type: [
            "field 'email': removed",
            "field 'registered_at': removed",
            "field 'user_id': type changed from string to integer",
            "field 'local_part': new required field",
            "field 'domain': new required field",
        ]
    }
