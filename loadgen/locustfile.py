"""Mixed load on Agora through its gateway, as Locust users: the load generator (ADR 40).

Shoppers register and log in, browse and search the catalogue, look at products and their stock,
fill a cart, check out with a mix of the simulated processor's test cards, follow their order's
live status (``/events``) until it is CONFIRMED or CANCELLED, and read their messages. One admin
tops the stock up every few seconds, so shoppers never find it sold out. bench/checkout.py is the
other tool and does another thing: it saturates the checkout alone to find its throughput.

Each request is named by its kind (``GET /api/catalog/products/{sku}``), so Locust's statistics
are per kind. When Locust quits, the objectives are checked from those statistics and the run
exits 1 when one is missed:

- per kind, the share of failed requests and the 99th percentile, held to the objectives in
  ``topology.toml`` of the service the kind's route belongs to (the event stream's time is the
  checkout's own, so it is held to the next objective instead of a p99);
- ``place → terminal``, from posting an order until its stream says CONFIRMED or CANCELLED (with
  the outcome its card calls for): at most ``--place-to-terminal-p99`` seconds at the 99th
  percentile, the longest within the ``pending_seconds`` objective of orders, and not one order
  left unfinished or ending otherwise.

Run it with ``make loadgen`` (loadgen/run.py starts a shop, runs this headless, then `agora
verify`), or against any gateway, the admin's credentials in the environment::

    AGORA_ADMIN_EMAIL=... AGORA_ADMIN_PASSWORD=... .venv/bin/locust -f loadgen/locustfile.py \\
        --headless -u 20 -r 2 -t 5m --stop-timeout 30 --host https://shop.example
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from locust import FastHttpUser, between, constant, events, task
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.stats import StatsEntry

from agora.topology import Topology, load_topology
from agora_tools.harness import ADDRESS

log = logging.getLogger("loadgen")

# The simulated processor's test cards (services/payments), how often shoppers use each, and how
# the order ends with it. Any of them may also end CANCELLED out_of_stock, should a reservation
# come before the admin's next top-up.
CARDS = {
    "4242 4242 4242 4242": (80, "CONFIRMED", None),
    "4000 0000 0000 0002": (7, "CANCELLED", "payment_declined"),
    "4000 0000 0000 9995": (5, "CANCELLED", "payment_declined"),
    "4000 0000 0000 0119": (4, "CANCELLED", "payment_failed"),
    "4000 0000 0000 0259": (4, "CANCELLED", "payment_failed"),
}
TERMINAL = {"CONFIRMED", "CANCELLED"}
PLACE_TO_TERMINAL = "place → terminal"
EVENTS = "/api/orders/{id}/events"
# The admin tops a SKU up to RESTOCK_TO once fewer than RESTOCK_BELOW units are available.
RESTOCK_BELOW = 40
RESTOCK_TO = 200
# The identity service's defaults (services/identity/settings.py), for a shop started without.
DEFAULT_ADMIN = ("admin@agora.local", "agora-admin-password")
# What shoppers choose: a load's shape, not a secret.
dice = random.Random()  # noqa: S311


# Locust's EventHook.add_listener carries no annotations.
@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]
def _options(parser: LocustArgumentParser) -> None:
    parser.add_argument(
        "--place-to-terminal-p99",
        type=float,
        default=10.0,
        env_var="LOADGEN_PLACE_TO_TERMINAL_P99",
        # The slowest card (the processor timing out, tried three times) ends in about 5 s on an
        # idle shop; the saga's own deadline (AGORA_ORDERS_SAGA_DEADLINE) is 60 s.
        help="Seconds from placing an order to its terminal status, at the 99th percentile",
    )
    parser.add_argument(
        "--objectives-file",
        default="",
        env_var="LOADGEN_OBJECTIVES_FILE",
        help="Write each objective, what was measured and whether it was met here (JSON)",
    )


class Client(FastHttpUser):
    """A user of the shop holding an access token, sent with every request (a logged-in
    client's requests count against its own rate bucket at the gateway, not its address's)."""

    abstract = True
    token = ""
    token_until = 0.0

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    def log_in(self, email: str, password: str) -> None:
        answer = self.refusable("/api/identity/token", {"email": email, "password": password})
        self.token = answer["access_token"]
        # Log in again a minute before the token expires, for runs longer than its lifetime.
        self.token_until = time.monotonic() + int(answer["expires_in"]) - 60

    def refusable(self, path: str, body: dict[str, str]) -> dict[str, Any]:
        """A registration or login, tried again after the Retry-After of a 429: each costs an
        argon2id hash, so the gateway and identity throttle them, and being told to wait is the
        answer a client should expect, not a failure."""
        while True:
            with self.client.post(path, json=body, catch_response=True) as reply:
                if reply.status_code == 429:
                    reply.success()
                    time.sleep(float(reply.headers.get("retry-after") or 1))
                    continue
                if not reply.ok:
                    reply.failure(f"{reply.status_code}: {reply.text}")
                    raise RuntimeError(f"POST {path} refused: {reply.status_code}")
                answer: dict[str, Any] = reply.json()
                return answer

    def fresh(self) -> None:
        """Log in again when the token is about to expire."""
        if time.monotonic() > self.token_until:
            self.on_start()


class Shopper(Client):
    """Browses and searches most of the time; now and then buys what is in its cart."""

    weight = 10
    wait_time = between(0.5, 2.5)

    def on_start(self) -> None:
        if not self.token:
            self.email = f"loadgen-{uuid.uuid4().hex[:12]}@shop.example"
            self.password = f"loadgen passphrase {uuid.uuid4().hex}"
            body = {"email": self.email, "password": self.password}
            self.refusable("/api/identity/users", body)
            self.skus: list[str] = []
            self.words: list[str] = []
            self.categories: list[str] = []
        self.log_in(self.email, self.password)
        if not self.skus:
            categories = self.get_json("/api/catalog/categories")
            self.categories = [c["slug"] for c in categories]
            self.browse()

    def get_json(self, path: str, name: str | None = None, **params: str) -> Any:
        """The answer's JSON, or None when it failed (Locust counts the failure)."""
        reply = self.client.get(path, params=params, headers=self.auth, name=name or path)
        return reply.json() if reply.ok else None

    def remember(self, page: dict[str, Any] | None) -> None:
        for product in (page or {}).get("items", []):
            self.skus.append(product["sku"])
            self.words.extend(w.lower() for w in product["name"].split() if len(w) > 3)
        # Keep the latest few hundred: enough to choose from, bounded over a long run.
        del self.skus[:-200], self.words[:-400]

    @task(4)
    def browse(self) -> None:
        self.fresh()
        params = {"limit": "24"}
        if self.categories and dice.random() < 0.7:
            params["category"] = dice.choice(self.categories)
        self.remember(self.get_json("/api/catalog/products", **params))

    @task(3)
    def search(self) -> None:
        word = dice.choice(self.words or ["coffee"])
        name = "/api/catalog/products?q="
        self.remember(self.get_json("/api/catalog/products", name, q=word))

    @task(3)
    def look(self) -> None:
        if not self.skus:
            self.browse()
            return
        sku = dice.choice(self.skus)
        self.get_json(f"/api/catalog/products/{sku}", "/api/catalog/products/{sku}")
        self.get_json(f"/api/inventory/stock/{sku}", "/api/inventory/stock/{sku}")

    @task(1)
    def messages(self) -> None:
        self.get_json("/api/notifications")

    @task(2)
    def buy(self) -> None:
        if not self.skus:
            self.browse()
            return
        self.fresh()
        for sku in dice.sample(self.skus, k=min(len(self.skus), dice.randint(1, 3))):
            self.client.put(
                f"/api/cart/items/{sku}",
                json={"quantity": dice.randint(1, 2)},
                headers=self.auth,
                name="/api/cart/items/{sku}",
            )
        self.get_json("/api/cart")
        card = dice.choices(list(CARDS), weights=[w for w, _, _ in CARDS.values()])[0]
        began = time.perf_counter()
        with self.client.post(
            "/api/orders",
            json={"shipping_address": ADDRESS, "card_number": card},
            headers={**self.auth, "idempotency-key": uuid.uuid4().hex},
            name="/api/orders",
            catch_response=True,
        ) as placed:
            if placed.status_code != 202:
                placed.failure(f"{placed.status_code}: {placed.text}")
                return
            order_id = placed.json()["id"]
        order = self.follow(order_id)
        self.finished(order, card, (time.perf_counter() - began) * 1000)
        self.messages()

    def follow(self, order_id: str) -> dict[str, Any] | None:
        """The order as its event stream last showed it: the stream ends once the order is
        terminal, so reading it whole is following the checkout live."""
        reply = self.client.get(f"/api/orders/{order_id}/events", headers=self.auth, name=EVENTS)
        if not reply.ok:
            return None
        last = None
        for line in (reply.text or "").splitlines():
            if line.startswith("data:"):
                last = json.loads(line.removeprefix("data:"))
        if last is None or last["status"] not in TERMINAL:
            # The stream ends after AGORA_ORDERS_EVENTS_MAX_SECONDS too: ask once more.
            last = self.get_json(f"/api/orders/{order_id}", "/api/orders/{id}")
        order: dict[str, Any] | None = last
        return order

    def finished(self, order: dict[str, Any] | None, card: str, elapsed_ms: float) -> None:
        _, status, reason = CARDS[card]
        wrong = None
        if order is None or order["status"] not in TERMINAL:
            wrong = f"order not finished: {order}"
        elif (order["status"], order["reason"]) not in {
            (status, reason),
            ("CANCELLED", "out_of_stock"),
        }:
            wrong = f"card {card} ended {order['status']} {order['reason']}, not {status} {reason}"
        self.environment.events.request.fire(
            request_type="CHECKOUT",
            name=PLACE_TO_TERMINAL,
            response_time=elapsed_ms,
            response_length=0,
            exception=AssertionError(wrong) if wrong else None,
            context={},
        )


class Admin(Client):
    """Tops up every SKU running low, so that shoppers' orders keep confirming."""

    fixed_count = 1
    wait_time = constant(2)

    def on_start(self) -> None:
        email = os.environ.get("AGORA_ADMIN_EMAIL", DEFAULT_ADMIN[0])
        self.log_in(email, os.environ.get("AGORA_ADMIN_PASSWORD", DEFAULT_ADMIN[1]))

    @task
    def restock(self) -> None:
        self.fresh()
        cursor = ""
        while True:
            reply = self.client.get(
                "/api/inventory/stock",
                params={"limit": "500", "cursor": cursor},
                headers=self.auth,
                name="/api/inventory/stock",
            )
            if not reply.ok:
                return
            page = reply.json()
            for row in page["items"]:
                if row["available"] < RESTOCK_BELOW:
                    self.client.post(
                        f"/api/inventory/stock/{row['sku']}/adjustments",
                        json={"delta": RESTOCK_TO - row["available"], "reason": "loadgen restock"},
                        headers={**self.auth, "idempotency-key": uuid.uuid4().hex},
                        name="/api/inventory/stock/{sku}/adjustments",
                    )
            cursor = page.get("next_cursor") or ""
            if not cursor:
                return


@dataclass(frozen=True)
class Objective:
    """One objective as measured: ``what`` (error ratio, p99 seconds) of one request kind."""

    kind: str
    what: str
    measured: float
    limit: float

    @property
    def met(self) -> bool:
        return self.measured <= self.limit


def service_of(method: str, name: str, topology: Topology) -> str | None:
    """The service whose route a request kind (a method and a public path) names."""
    path = name.split("?")[0]
    for service in topology:
        for route in service.routes:
            if method in route.methods and service.public_prefix + route.path == path:
                return service.name
    return None


def objectives(
    entries: list[StatsEntry], topology: Topology, terminal_p99: float
) -> list[Objective]:
    """Every objective of a run, from Locust's statistics of each request kind."""
    found = []
    for entry in entries:
        if entry.name == PLACE_TO_TERMINAL:
            found += checkout_objectives(entry, topology, terminal_p99)
        else:
            found += kind_objectives(entry, topology)
    if not any(entry.name == PLACE_TO_TERMINAL for entry in entries):
        found.append(Objective(PLACE_TO_TERMINAL, "runs without an order followed", 1, 0))
    return found


def kind_objectives(entry: StatsEntry, topology: Topology) -> list[Objective]:
    """A request kind held to the objectives of the service whose route it is."""
    kind = f"{entry.method} {entry.name}"
    service = service_of(entry.method, entry.name, topology)
    if service is None:
        return [Objective(kind, "kinds naming no route of the topology", 1, 0)]
    promised = topology.services[service].objectives
    ratio = entry.num_failures / max(entry.num_requests, 1)
    found = [Objective(kind, "error ratio", ratio, promised.error_ratio)]
    if entry.name != EVENTS:
        p99 = entry.get_response_time_percentile(0.99) / 1000
        found.append(Objective(kind, "p99 seconds", p99, promised.p99_seconds))
    return found


def checkout_objectives(entry: StatsEntry, topology: Topology, p99: float) -> list[Objective]:
    """Place → terminal: not one order left unfinished or ending as its card does not say, the
    99th percentile within ``p99`` seconds, and the longest within the time the service taking
    orders lets one stay PENDING, when the topology says (its ``pending_seconds``)."""
    name = entry.name
    found = [
        Objective(name, "failures", entry.num_failures, 0),
        Objective(name, "p99 seconds", entry.get_response_time_percentile(0.99) / 1000, p99),
    ]
    placing = service_of("POST", "/api/orders", topology)
    pending = topology.services[placing].objectives.pending_seconds if placing else None
    if pending is not None:
        found.append(Objective(name, "longest seconds", entry.max_response_time / 1000, pending))
    return found


@events.quitting.add_listener  # type: ignore[untyped-decorator]  # as above
def _check(environment: Environment, **_: Any) -> None:
    """Hold the run to its objectives: exit 1 when one is missed or a user raised."""
    options = environment.parsed_options
    assert environment.runner is not None
    assert options is not None
    entries = list(environment.runner.stats.entries.values())
    found = objectives(entries, load_topology(), options.place_to_terminal_p99)
    for objective in found:
        verdict = "met" if objective.met else "MISSED"
        log.info(
            "%-48s %-16s %10.4f (objective ≤ %g: %s)",
            objective.kind,
            objective.what,
            objective.measured,
            objective.limit,
            verdict,
        )
    crashed = len(environment.runner.exceptions)
    if crashed:
        log.error("%d exceptions in the users' tasks: see the report", crashed)
    if options.objectives_file:
        Path(options.objectives_file).write_text(
            json.dumps([{**asdict(o), "met": o.met} for o in found], indent=2) + "\n"
        )
    environment.process_exit_code = 0 if all(o.met for o in found) and not crashed else 1
