"""What a listing answers and takes: the page model and its paging fields; and the subscriptions
built from what bootstrap provides."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from pydantic import BaseModel, ValidationError

from agora.app import Resources, with_provided
from agora.client import ServiceClient
from agora.cursor import Page, PageOut
from agora.query import CURSOR_DESCRIPTION, QueryParams, page_cursor, page_limit
from agora.settings import ServiceSettings


class Row(BaseModel):
    name: str


class RowPage(PageOut[Row]):
    pass


class Clamped(QueryParams):
    limit: int = page_limit(20, 100)
    cursor: str | None = page_cursor()


class Bounded(QueryParams):
    limit: int = page_limit(50, 500, clamped=False)
    cursor: str | None = page_cursor(64)


def test_a_page_answers_its_rows_as_the_api_shows_them_and_its_cursor() -> None:
    page = RowPage.of(Page(["a", "b"], "next"), lambda name: Row(name=name))
    assert page.model_dump() == {"items": [{"name": "a"}, {"name": "b"}], "next_cursor": "next"}
    assert RowPage.of(Page([], None), lambda name: Row(name=name)).next_cursor is None


def test_a_page_is_documented_under_its_own_name_with_its_rows() -> None:
    schema = RowPage.model_json_schema()
    assert schema["title"] == "RowPage"
    assert schema["required"] == ["items", "next_cursor"]
    assert schema["properties"]["items"]["items"] == {"$ref": "#/$defs/Row"}


def test_a_clamped_limit_takes_any_size_from_one_and_says_what_it_serves() -> None:
    assert Clamped.model_validate({}).limit == 20
    assert Clamped.model_validate({"limit": "1000"}).limit == 1000
    with pytest.raises(ValidationError):
        Clamped.model_validate({"limit": "0"})
    field = Clamped.model_fields["limit"]
    assert field.description == "Page size; more than 100 is served as 100."


def test_a_bounded_limit_refuses_a_size_past_its_largest() -> None:
    assert Bounded.model_validate({"limit": "500"}).limit == 500
    with pytest.raises(ValidationError):
        Bounded.model_validate({"limit": "501"})


def test_a_cursor_is_optional_bounded_and_described() -> None:
    assert Clamped.model_validate({"cursor": ""}).cursor is None
    assert Clamped.model_validate({"cursor": "x" * 512}).cursor == "x" * 512
    with pytest.raises(ValidationError):
        Clamped.model_validate({"cursor": "x" * 513})
    with pytest.raises(ValidationError):
        Bounded.model_validate({"cursor": "x" * 65})
    assert Bounded.model_fields["cursor"].description == CURSOR_DESCRIPTION


@dataclass(frozen=True)
class Parts:
    name: str


def test_with_provided_hands_what_was_provided_when_called() -> None:
    resources = Resources(
        settings=ServiceSettings(), uow=None, client=ServiceClient({}), verifier=None
    )
    build = with_provided(Parts, lambda parts: [parts.name])
    resources.provide(Parts("first"))
    resources.provide(Parts("second"))  # a test's replacement, provided before messaging starts
    assert build(resources) == ["second"]
