"""A listing's pages, and what bootstrap provides to the routes: shapes every service uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient

from agora.app import Resources
from agora.cursor import CursorCodec, page_size, paged
from agora.deps import provided
from agora.settings import ServiceSettings


@dataclass(frozen=True, slots=True)
class After:
    name: str


CODEC = CursorCodec(After)


def test_a_page_hands_out_the_cursor_of_its_last_row_when_more_rows_follow() -> None:
    page = paged(CODEC, ["a", "b", "c"], 2, After)
    assert page.items == ["a", "b"]
    assert page.next_cursor is not None
    assert CODEC.decode(page.next_cursor) == After("b")


def test_the_last_page_has_no_cursor() -> None:
    page = paged(CODEC, ["a", "b"], 2, After)
    assert page.items == ["a", "b"]
    assert page.next_cursor is None
    assert paged(CODEC, [], 5, After).items == []


def test_a_page_size_is_at_least_one_and_at_most_the_listings_largest() -> None:
    assert page_size(7, 100) == 7
    assert page_size(1000, 100) == 100
    with pytest.raises(ValueError, match="at least one row"):
        page_size(0, 100)


@dataclass(frozen=True, slots=True)
class Parts:
    greeting: str


Given = Annotated[Parts, Depends(provided(Parts))]


def app_with(resources: Resources) -> FastAPI:
    router = APIRouter()

    @router.get("/greeting")
    async def greeting(parts: Given) -> dict[str, str]:
        return {"greeting": parts.greeting}

    app = FastAPI()
    app.include_router(router)
    app.state.resources = resources
    return app


def resources() -> Resources:
    return Resources(settings=ServiceSettings(), uow=None, client=None, verifier=None)  # type: ignore[arg-type]  # the route never calls out


def test_a_route_gets_what_bootstrap_provided_and_a_test_replaces_it_by_providing_again() -> None:
    held = resources()
    held.provide(Parts("hello"))
    with TestClient(app_with(held)) as client:
        assert client.get("/greeting").json() == {"greeting": "hello"}
        held.provide(Parts("bonjour"))
        assert client.get("/greeting").json() == {"greeting": "bonjour"}


def test_asking_for_what_was_never_provided_names_it() -> None:
    with pytest.raises(LookupError, match="provided no Parts"):
        resources().get(Parts)
