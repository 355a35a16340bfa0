"""Shipping for the fuzz tests: the TypeScript service as ``agora up`` runs it, in a process.

Its package is built as ``agora up`` builds it (``npm ci`` and ``npm run build`` when out of date,
agora_tools.runtimes), then ``node dist/src/main.js serve`` runs on a SQLite file of the test's
own, with a nats-server of the test's own and an identity stand-in that serves only the key set
(JWKS) the tokens here are signed with. Its shipments are made the way the system makes them: an
OrderConfirmed v2 published on the broker, which shipping's consumer turns into a shipment.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from agora.messaging.envelope import envelope
from agora.topology import find_topology_file, load_topology
from agora_tools import runtimes
from agora_tools.harness import ADDRESS
from agora_tools.testing import NatsServer, SigningKey, found_within, free_port, http_receiver
from contracts.base import subject_of
from contracts.orders import OrderConfirmedV2, OrderLine, ShippingAddress

SHIPPING_KEY = SigningKey("fuzz-shipping-key")
CONFIRMATIONS = subject_of(OrderConfirmedV2)
JWKS_PATH = "/.well-known/jwks.json"
ADA = "0a0a0a0a-0000-4000-8000-00000000000a"
BOB = "0b0b0b0b-0000-4000-8000-00000000000b"
# Every wait here is for something that takes a second or two: a generous bound.
WITHIN = 60.0


@dataclass(frozen=True)
class Shipping:
    """Shipping running, the users it knows and their shipments (as the admin reads them)."""

    url: str
    admin: dict[str, str]
    ada: dict[str, str]
    bob: dict[str, str]
    shipments: dict[str, list[dict[str, Any]]]  # by user: "ada", "bob"


def built_shipping(*options: str) -> list[str]:
    """Bring shipping's package up to date as ``agora up`` does; the argv that serves it."""
    topology_file = find_topology_file(Path(__file__).parent)
    service = load_topology(topology_file).services["shipping"]
    try:
        steps = runtimes.build_steps(service, topology_file.parent)
        for argv in steps:
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        return runtimes.command(service, topology_file.parent, sys.executable, "serve", *options)
    except runtimes.MissingTool as missing:
        pytest.fail(f"shipping cannot be built: {missing}")


class KeySet(BaseHTTPRequestHandler):
    """identity as shipping sees it: the key set the tokens here are signed with."""

    def do_GET(self) -> None:
        body = json.dumps(SHIPPING_KEY.key_set()).encode()
        self.send_response(200 if self.path == JWKS_PATH else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        return


def bearer(sub: str, roles: list[str]) -> dict[str, str]:
    # Outlives the module: an expired token would turn every answer into a 401.
    return SHIPPING_KEY.bearer(
        roles, sub=sub, email=f"{sub}@example.com", exp=int(time.time()) + 3600
    )


def confirmation(order_id: str, user_id: str) -> bytes:
    """An OrderConfirmed v2 as orders publishes it."""
    event = OrderConfirmedV2(
        order_id=order_id,
        user_id=user_id,
        lines=(
            OrderLine(sku="KIT-CHEF-KNIFE-20", name="Chef's Knife", quantity=1, unit_price=7900),
        ),
        total=7900,
        currency="EUR",
        shipping_address=ShippingAddress(**ADDRESS),
    )
    return envelope(event, source="orders", subject=order_id).to_bytes()


async def confirm(nats_url: str, orders: list[tuple[str, str]]) -> None:
    """Publish a confirmation of each (order, user), once shipping's consumer has made the
    orders' stream (before that, a publication finds no stream to hold it)."""
    connection = await nats.connect(nats_url)
    try:
        js = connection.jetstream()
        for order_id, user_id in orders:
            deadline = time.monotonic() + WITHIN
            while True:
                try:
                    await js.publish(CONFIRMATIONS, confirmation(order_id, user_id))
                    break
                except nats.js.errors.NoStreamResponseError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def shipping(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shipping]:
    directory = tmp_path_factory.mktemp("shipping")
    port = free_port()
    serve = built_shipping("--port", str(port))
    url = f"http://127.0.0.1:{port}"
    with NatsServer(directory / "nats") as broker, http_receiver(KeySet) as identity:
        env = {
            **os.environ,
            "AGORA_DATA_DIR": str(directory / "data"),
            "AGORA_NATS_URL": broker.url,
            "AGORA_SERVICE_URLS": json.dumps({"identity": [identity]}),
            "AGORA_OPERATOR_TOKEN": "fuzz-operator",
            "AGORA_LOG_LEVEL": "warning",
            "AGORA_STOP_DRAIN": "0",
            # The carrier leaves every shipment as it was made while the tests read it.
            "AGORA_SHIPPING_DISPATCH_AFTER": "3600",
        }
        log = (directory / "shipping.log").open("wb")
        process = subprocess.Popen(
            serve,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            started = Shipping(
                url=url,
                admin=bearer(str(uuid.uuid4()), ["customer", "admin"]),
                ada=bearer(ADA, ["customer"]),
                bob=bearer(BOB, ["customer"]),
                shipments={},
            )
            with httpx.Client(base_url=url) as client:

                def ready() -> bool | None:
                    if process.poll() is not None:
                        raise RuntimeError(
                            f"shipping exited: {(directory / 'shipping.log').read_text()[-2000:]}"
                        )
                    try:
                        return client.get("/readyz").status_code == 200 or None
                    except httpx.TransportError:
                        return None

                found_within(ready, "shipping to be ready", WITHIN, every=0.1)
                orders = {"ada": [str(uuid.uuid4()) for _ in range(3)], "bob": [str(uuid.uuid4())]}
                users = {"ada": ADA, "bob": BOB}
                asyncio.run(
                    confirm(
                        broker.url,
                        [(order, users[who]) for who, made in orders.items() for order in made],
                    )
                )

                def shipped() -> dict[str, list[dict[str, Any]]] | None:
                    answer = client.get("/shipments", headers=started.admin)
                    items: list[dict[str, Any]] = answer.json()["items"]
                    if len(items) < sum(map(len, orders.values())):
                        return None
                    return {who: [s for s in items if s["user_id"] == users[who]] for who in users}

                started.shipments.update(
                    found_within(shipped, "the shipments to be made", WITHIN, every=0.1)
                )
            yield started
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
