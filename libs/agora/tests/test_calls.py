"""A call to another service that got no answer, or an answer not as asked, is a 503 saying who
failed and how."""

from __future__ import annotations

from unittest.mock import AsyncMock, Mock

import pytest

from agora.calls import call, readable
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
