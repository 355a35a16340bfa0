"""`python -m contracts.export`: what it writes, what it refuses, what --check says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts import all_events
from contracts.export import main


def exported(directory: Path) -> dict[str, str]:
    return {path.name: path.read_text(encoding="utf-8") for path in sorted(directory.iterdir())}


def test_it_writes_a_schema_per_event_type_and_the_asyncapi_document(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path)]) == 0

    written = sorted(exported(tmp_path))
    assert written[0] == "asyncapi.yaml"
    assert written[1:] == sorted(f"{message.type}.schema.json" for message in all_events())
    assert {
        "catalog.ProductCreated.v1.schema.json",
        "inventory.ReserveStock.v1.schema.json",
    } <= set(written)


def test_a_schema_names_its_dialect_and_event_and_describes_the_data(tmp_path: Path) -> None:
    main(["--out", str(tmp_path)])

    schema = json.loads((tmp_path / "identity.UserRegistered.v1.schema.json").read_text())

    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "urn:agora:contracts:identity.UserRegistered.v1"
    assert schema["title"] == "UserRegistered"
    assert schema["description"] == "A customer account was created."
    assert schema["required"] == ["user_id", "email", "registered_at"]
    assert schema["properties"]["registered_at"]["format"] == "date-time"


def test_the_output_is_byte_for_byte_the_same_every_run(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    main(["--out", str(first)])
    main(["--out", str(second)])

    assert exported(first) == exported(second)
    assert all(
        text.endswith("\n") and not text.endswith("\n\n") for text in exported(first).values()
    )


def test_the_asyncapi_document_has_a_channel_and_a_send_operation_per_event(
    tmp_path: Path,
) -> None:
    main(["--out", str(tmp_path)])

    document: dict[str, Any] = yaml.safe_load((tmp_path / "asyncapi.yaml").read_text())

    assert document["asyncapi"] == "3.0.0"
    addresses = {name: channel["address"] for name, channel in document["channels"].items()}
    assert addresses["catalog.ProductCreated.v1"] == "agora.catalog.events.ProductCreated.v1"
    assert addresses["identity.UserRegistered.v1"] == "agora.identity.events.UserRegistered.v1"
    assert set(addresses) == {message.type for message in all_events()}
    operation = document["operations"]["identity.UserRegistered.v1.send"]
    assert operation["action"] == "send"
    assert operation["channel"] == {"$ref": "#/channels/identity.UserRegistered.v1"}
    assert operation["tags"] == [{"name": "identity"}]


def test_a_command_travels_on_its_receivers_command_subject_and_is_received(
    tmp_path: Path,
) -> None:
    main(["--out", str(tmp_path)])

    document: dict[str, Any] = yaml.safe_load((tmp_path / "asyncapi.yaml").read_text())

    channel = document["channels"]["inventory.ReserveStock.v1"]
    assert channel["address"] == "agora.inventory.commands.ReserveStock.v1"
    operation = document["operations"]["inventory.ReserveStock.v1.receive"]
    assert operation["action"] == "receive"
    assert operation["summary"] == "inventory accepts the command ReserveStock v1."


def test_each_message_is_a_cloud_event_whose_data_is_the_event_schema(tmp_path: Path) -> None:
    main(["--out", str(tmp_path)])
    document: dict[str, Any] = yaml.safe_load((tmp_path / "asyncapi.yaml").read_text())

    for event in all_events():
        message = document["components"]["messages"][event.type]
        assert message["contentType"] == "application/cloudevents+json"
        envelope, specific = message["payload"]["allOf"]
        assert envelope == {"$ref": "#/components/schemas/CloudEvent"}
        assert specific["properties"]["type"]["const"] == event.type
        data_file = specific["properties"]["data"]["$ref"]
        assert (tmp_path / data_file).is_file()
    cloud_event = document["components"]["schemas"]["CloudEvent"]
    assert {"specversion", "id", "source", "type", "time", "data"} <= set(cloud_event["required"])


def test_check_fails_and_says_how_to_fix_when_the_files_are_out_of_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["--out", str(tmp_path)])
    schema = tmp_path / "catalog.ProductCreated.v1.schema.json"
    schema.write_text(schema.read_text().replace("A product was added", "Something happened"))
    (tmp_path / "catalog.ProductDeleted.v1.schema.json").write_text("{}\n")
    capsys.readouterr()

    assert main(["--out", str(tmp_path), "--check"]) == 1

    errors = capsys.readouterr().err
    assert "catalog.ProductCreated.v1.schema.json differs" in errors
    assert "catalog.ProductDeleted.v1.schema.json is no longer produced" in errors
    assert "make contracts" in errors


def test_check_passes_and_writes_nothing_when_the_files_are_current(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["--out", str(tmp_path)])
    before = exported(tmp_path)
    capsys.readouterr()

    assert main(["--out", str(tmp_path), "--check"]) == 0

    assert exported(tmp_path) == before
    assert capsys.readouterr() == ("", "")


def test_it_removes_the_schema_of_an_event_type_no_longer_published(tmp_path: Path) -> None:
    retired = tmp_path / "catalog.ProductDeleted.v1.schema.json"
    retired.write_text("{}\n")

    assert main(["--out", str(tmp_path)]) == 0

    assert not retired.exists()


def test_it_refuses_to_overwrite_a_schema_with_an_incompatible_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["--out", str(tmp_path)])
    published = tmp_path / "identity.UserRegistered.v1.schema.json"
    schema = json.loads(published.read_text())
    # As if the published event had a field the current model dropped.
    schema["properties"]["nickname"] = {"type": "string"}
    published.write_text(json.dumps(schema))
    capsys.readouterr()

    assert main(["--out", str(tmp_path)]) == 1

    assert json.loads(published.read_text()) == schema
    errors = capsys.readouterr().err
    assert "identity.UserRegistered.v1: field 'nickname': removed" in errors
    assert "next version" in errors
