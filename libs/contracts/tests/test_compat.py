"""Which schema changes an event type may take without a new version."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.compat import breaking_changes, incompatibilities


def an_object(
    properties: dict[str, Any], required: list[str] | None = None, **more: Any
) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required or [], **more}


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
OPTIONAL_STRING = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}

ORDER = an_object({"order_id": STRING, "total": INTEGER, "note": OPTIONAL_STRING}, ["order_id"])


def test_the_same_schema_is_compatible() -> None:
    assert incompatibilities(ORDER, ORDER) == []


def test_descriptions_titles_and_value_constraints_may_change() -> None:
    described = an_object(
        {
            "order_id": {**STRING, "description": "The order.", "title": "Order Id"},
            "total": {**INTEGER, "exclusiveMinimum": 0},
            "note": OPTIONAL_STRING,
        },
        ["order_id"],
        description="An order was placed.",
    )

    assert incompatibilities(ORDER, described) == []


def test_a_removed_field_is_incompatible() -> None:
    without_total = an_object({"order_id": STRING, "note": OPTIONAL_STRING}, ["order_id"])

    assert incompatibilities(ORDER, without_total) == ["field 'total': removed"]


def test_a_field_changing_from_integer_to_string_is_incompatible() -> None:
    text_total = an_object({"order_id": STRING, "total": STRING, "note": OPTIONAL_STRING})

    assert incompatibilities(ORDER, text_total) == [
        "field 'total': type changed from integer to string"
    ]


def test_a_field_becoming_nullable_is_a_type_change() -> None:
    nullable_id = an_object(
        {"order_id": OPTIONAL_STRING, "total": INTEGER, "note": OPTIONAL_STRING}, ["order_id"]
    )

    assert incompatibilities(ORDER, nullable_id) == [
        "field 'order_id': type changed from string to null | string"
    ]


def test_a_string_gaining_a_format_is_a_type_change() -> None:
    timestamped = an_object(
        {"order_id": STRING, "total": INTEGER, "note": {**STRING, "format": "date-time"}},
        ["order_id"],
    )

    assert incompatibilities(ORDER, timestamped) == [
        "field 'note': type changed from null | string to string (date-time)"
    ]


def test_a_new_required_field_is_incompatible() -> None:
    with_currency = an_object({**ORDER["properties"], "currency": STRING}, ["order_id", "currency"])

    assert incompatibilities(ORDER, with_currency) == ["field 'currency': new required field"]


def test_an_existing_field_becoming_required_is_incompatible() -> None:
    total_required = an_object(ORDER["properties"], ["order_id", "total"])

    assert incompatibilities(ORDER, total_required) == ["field 'total': became required"]


def test_a_new_optional_field_is_compatible() -> None:
    with_coupon = an_object({**ORDER["properties"], "coupon": OPTIONAL_STRING}, ["order_id"])

    assert incompatibilities(ORDER, with_coupon) == []


def test_every_problem_is_reported_at_once() -> None:
    reshaped = an_object({"order_id": INTEGER, "placed_by": STRING}, ["order_id", "placed_by"])

    assert incompatibilities(ORDER, reshaped) == [
        "field 'order_id': type changed from string to integer",
        "field 'total': removed",
        "field 'note': removed",
        "field 'placed_by': new required field",
    ]


STATUS = {"enum": ["placed", "confirmed", "cancelled"], "type": "string"}


@pytest.mark.parametrize(
    ("new_status", "problem"),
    [
        (
            {"enum": ["placed", "confirmed"], "type": "string"},
            "field 'status': values removed: \"cancelled\"",
        ),
        (
            {"enum": ["placed", "confirmed", "cancelled", "refunded"], "type": "string"},
            "field 'status': values added: \"refunded\" (older consumers reject them)",
        ),
        (STRING, "field 'status': no longer limited to a set of values"),
    ],
    ids=["narrowed", "widened", "opened"],
)
def test_changing_the_values_of_an_enum_is_incompatible(
    new_status: dict[str, Any], problem: str
) -> None:
    old = an_object({"status": STATUS}, ["status"])
    new = an_object({"status": new_status}, ["status"])

    assert incompatibilities(old, new) == [problem]


def test_an_enum_reordered_is_the_same_enum() -> None:
    old = an_object({"status": STATUS}, ["status"])
    new = an_object({"status": {"enum": ["cancelled", "placed", "confirmed"], "type": "string"}})

    assert incompatibilities(old, new) == []


def with_address(city: dict[str, Any], *, where: str = "Address") -> dict[str, Any]:
    return an_object(
        {"order_id": STRING, "ship_to": {"$ref": f"#/$defs/{where}"}},
        ["order_id", "ship_to"],
        **{"$defs": {where: an_object({"street": STRING, "city": city}, ["street", "city"])}},
    )


def test_a_change_inside_a_nested_definition_is_found_and_named_by_its_path() -> None:
    assert incompatibilities(with_address(STRING), with_address(INTEGER)) == [
        "field 'ship_to.city': type changed from string to integer"
    ]


def test_a_nested_definition_renamed_but_of_the_same_shape_is_compatible() -> None:
    assert incompatibilities(with_address(STRING), with_address(STRING, where="Place")) == []


def test_a_change_inside_list_items_is_found() -> None:
    def lines(quantity: dict[str, Any]) -> dict[str, Any]:
        line = an_object({"sku": STRING, "quantity": quantity}, ["sku", "quantity"])
        return an_object({"lines": {"type": "array", "items": line}}, ["lines"])

    assert incompatibilities(lines(INTEGER), lines(STRING)) == [
        "field 'lines[].quantity': type changed from integer to string"
    ]


def test_a_recursive_model_is_compared_without_looping() -> None:
    def tree(label: dict[str, Any]) -> dict[str, Any]:
        node = an_object(
            {"label": label, "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}},
            ["label"],
        )
        return {"$ref": "#/$defs/Node", "$defs": {"Node": node}}

    assert incompatibilities(tree(STRING), tree(STRING)) == []
    assert incompatibilities(tree(STRING), tree(INTEGER)) == [
        "field 'label': type changed from string to integer"
    ]


def test_a_reference_outside_the_schema_is_refused_rather_than_guessed() -> None:
    elsewhere = an_object({"ship_to": {"$ref": "address.schema.json"}})

    with pytest.raises(ValueError, match=r"address\.schema\.json"):
        incompatibilities(elsewhere, elsewhere)


def test_only_the_same_event_type_is_compared() -> None:
    reshaped = an_object({"order_id": INTEGER}, ["order_id"])
    published = {"orders.OrderPlaced.v1": ORDER, "orders.OrderShipped.v1": ORDER}
    current = {"orders.OrderPlaced.v1": ORDER, "orders.OrderPlaced.v2": reshaped}

    assert breaking_changes(published, current) == {}
    assert breaking_changes(published, {"orders.OrderPlaced.v1": reshaped}) == {
        "orders.OrderPlaced.v1": [
            "field 'order_id': type changed from string to integer",
            "field 'total': removed",
            "field 'note': removed",
        ]
    }
