"""GET /orders/{id}/events: the order's status as server-sent events, while the test plays
inventory and payments. The app is spoken to as a server would: its answer's body is read chunk
by chunk as the app sends it, so each event is seen when it is sent, not at the end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from fastapi import FastAPI

from agora_tools.testing import PROBLEM, Headers
from contracts.inventory import StockCommitted, StockRejected, StockReleased
from contracts.payments import PaymentDeclined
from orders import application

from .conftest import Checkout
from .test_checkout import LINES, authorized, captured, reserved

WAIT = 10.0  # seconds any one event may take to come (a bound, not a measurement)


class Stream:
    """One open GET of an event stream: its head, and its events as they arrive."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.comments: list[str] = []
        self._buffer = ""

    async def next_event(self) -> dict[str, Any] | None:
        """The next event (its fields, data parsed as JSON); None once the stream has ended."""
        while "\n\n" not in self._buffer:
            chunk = await asyncio.wait_for(self.chunks.get(), WAIT)
            if chunk is None:
                return None
            self._buffer += chunk.decode()
        block, self._buffer = self._buffer.split("\n\n", 1)
        fields: dict[str, Any] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                self.comments.append(line)
                continue
            name, _, value = line.partition(": ")
            fields[name] = json.loads(value) if name == "data" else value
        if "event" not in fields:  # the retry hint, a keep-alive comment
            return await self.next_event()
        return fields

    async def statuses_until_the_end(self) -> list[tuple[str, str]]:
        seen = []
        while (event := await self.next_event()) is not None:
            seen.append((event["data"]["status"], event["data"]["checkout"]["step"]))
        return seen


@asynccontextmanager
async def following(app: FastAPI, order_id: str, headers: Headers) -> AsyncIterator[Stream]:
    stream = Stream()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"/orders/{order_id}/events",
        "raw_path": f"/orders/{order_id}/events".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("orders", 80),
    }
    requested = False
    gone = asyncio.Event()

    async def receive() -> MutableMapping[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            stream.status = message["status"]
            stream.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            stream.chunks.put_nowait(message.get("body", b""))
            if not message.get("more_body", False):
                stream.chunks.put_nowait(None)

    task = asyncio.create_task(app(scope, receive, send))
    try:
        yield stream
    finally:
        gone.set()
        await asyncio.wait_for(task, WAIT)


async def test_the_stream_shows_each_step_as_it_happens_and_ends_confirmed(
    checkout: Checkout, alice: Headers
) -> None:
    order = await checkout.place(alice)
    await checkout.sent()
    async with following(checkout.app, order["id"], alice) as stream:
        first = await stream.next_event()
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["cache-control"] == "no-store"
        assert first is not None
        assert (first["event"], first["id"]) == ("status", "1")
        assert first["data"]["id"] == order["id"]
        assert (first["data"]["status"], first["data"]["checkout"]["step"]) == (
            "PENDING",
            "reserving",
        )

        await checkout.answer(reserved(order["id"]), order["id"])
        second = await stream.next_event()
        assert second is not None
        assert second["data"]["checkout"]["step"] == "authorizing"

        await checkout.answer(authorized(order["id"]), order["id"])
        third = await stream.next_event()
        assert third is not None
        assert third["data"]["checkout"]["step"] == "completing"

        # Changes that come faster than the stream looks are shown as where they led: the
        # status is what a stream promises, and it changes once.
        await checkout.answer(captured(order["id"]), order["id"])
        await checkout.answer(StockCommitted(order_id=order["id"], lines=LINES), order["id"])
        rest = await stream.statuses_until_the_end()
    assert rest == [("CONFIRMED", "done")]


async def test_a_declined_order_ends_the_stream_cancelled_with_its_reason(
    checkout: Checkout, alice: Headers
) -> None:
    order = await checkout.place(alice)
    await checkout.answer(reserved(order["id"]), order["id"])
    async with following(checkout.app, order["id"], alice) as stream:
        first = await stream.next_event()
        assert first is not None
        assert first["data"]["checkout"]["step"] == "authorizing"

        await checkout.answer(
            PaymentDeclined(order_id=order["id"], payment_id="pay-1", reason="declined"),
            order["id"],
        )
        await checkout.answer(
            StockReleased(order_id=order["id"], lines=LINES, reason="requested"),
            order["id"],
        )
        events = []
        while (event := await stream.next_event()) is not None:
            events.append(event)
    assert events[-1]["data"]["status"] == "CANCELLED"
    assert events[-1]["data"]["reason"] == "payment_declined"


async def test_a_finished_order_is_shown_once_and_the_stream_ends(
    checkout: Checkout, alice: Headers, admin: Headers
) -> None:
    order = await checkout.place(alice)
    await checkout.answer(StockRejected(order_id=order["id"], reason="out_of_stock"), order["id"])

    for who in (alice, admin):
        async with following(checkout.app, order["id"], who) as stream:
            assert await stream.statuses_until_the_end() == [("CANCELLED", "done")]


async def test_an_idle_stream_sends_keep_alive_comments(checkout: Checkout, alice: Headers) -> None:
    order = await checkout.place(alice)
    resources = checkout.app.state.resources
    follow = application.Follow(poll=0.01, keepalive=0.02, max_seconds=0.3)
    resources.provide(replace(resources.get(application.Parts), follow=follow))
    async with following(checkout.app, order["id"], alice) as stream:
        assert await stream.statuses_until_the_end() == [("PENDING", "reserving")]
    # Nothing changed: the stream kept itself alive, then ended at its longest, for the client
    # to ask again.
    assert ": keep-alive" in stream.comments


async def test_another_customers_order_has_no_stream(
    checkout: Checkout, alice: Headers, bob: Headers
) -> None:
    order = await checkout.place(alice)

    reply = await checkout.http.get(f"/orders/{order['id']}/events", headers=bob)
    assert reply.status_code == 404
    assert reply.headers["content-type"] == PROBLEM
    nobody = await checkout.http.get(f"/orders/{order['id']}/events")
    assert nobody.status_code == 401
    unknown = await checkout.http.get("/orders/no-such-order/events", headers=alice)
    assert unknown.status_code == 404
