"""A call to another service that got no answer, or an answer not as asked, is a 503 saying who
failed and how."""

from __future__ import annotations

from typing import Any
from unittest.mock import AsyncMock, Mock

import pytest

from agora.calls import call, items, readable
from agora.client import Reply, ServiceClient
from agora.errors import ServiceUnavailable


def _client(request: AsyncMock) -> ServiceClient:
    client = Mock(spec_set=ServiceClient)
    client.request = request
    return client


async def test_an_answer_comes_back_as_it_is() -> None:
    reply = Reply(status=404, headers={}, body=b"{}")
    request = AsyncMock(return_value=reply)
    answer = await call(_client(request), "catalog", "the catalogue", "GET", "/products/X")
    assert answer is reply
    request.assert_awaited_once_with("catalog", "GET", "/products/X", json=None)


async def test_no_answer_is_unavailable_naming_the_service() -> None:
    request = AsyncMock(side_effect=ServiceUnavailable("no replica answered"))
    with pytest.raises(ServiceUnavailable) as raised:
        await call(_client(request), "cart", "the cart", "GET", "/cart")
    assert raised.value.status == 503
    assert raised.value.detail == "the cart is unreachable: no replica answered"


@pytest.mark.parametrize("body", [b"not json", b"{}", b'{"items": 3}'])
def test_a_body_not_as_asked_is_unavailable_saying_what(body: bytes) -> None:
    reply = Reply(status=200, headers={}, body=body)
    with pytest.raises(ServiceUnavailable) as raised, readable("unreadable products"):
        [item["sku"] for item in reply.json()["items"]]
    assert raised.value.detail == "unreadable products"


async def test_items_are_read_one_by_one_from_a_200() -> None:
    body = b'{"items": [{"sku": "A", "quantity": 2}, {"sku": "B", "quantity": 1}]}'
    request = AsyncMock(return_value=Reply(status=200, headers={}, body=body))

    lines = await items(_client(request), "cart", "the cart", "/cart", _line, "lines")

    assert lines == [("A", 2), ("B", 1)]
    request.assert_awaited_once_with("cart", "GET", "/cart", json=None)


@pytest.mark.parametrize(
    ("status", "body", "detail"),
    [
        (500, b"{}", "the cart answered 500 for lines"),
        (404, b'{"items": []}', "the cart answered 404 for lines"),
        (200, b'{"items": [{"sku": "A"}]}', "the cart answered with unreadable lines"),
        (200, b"[]", "the cart answered with unreadable lines"),
    ],
)
async def test_items_not_as_asked_are_unavailable_saying_what(
    status: int, body: bytes, detail: str
) -> None:
    request = AsyncMock(return_value=Reply(status=status, headers={}, body=body))
    with pytest.raises(ServiceUnavailable) as raised:
        await items(_client(request), "cart", "the cart", "/cart", _line, "lines")
    assert raised.value.status == 503
    assert raised.value.detail == detail


def _line(item: Any) -> tuple[str, int]:
    return str(item["sku"]), int(item["quantity"])
