"""Checkout throughput and latency: confirmed orders per second, and place → confirmed latency.

The saturation benchmark: how many checkouts a second the system confirms at most, and at what CPU
cost, compared across commits. Mixed load held to the objectives (shoppers browsing, searching,
checking out with every test card) is Locust's, in loadgen/ (ADR 40).

It runs the whole system with `agora up` (embedded profile: SQLite files, the embedded broker, one
process per service) in a throwaway directory, registers shoppers, stocks every product up so the
runs never sell out, and then:

1. offers a fixed load (``--rate`` orders per second, default 50) for ``--seconds`` and reports
   place → confirmed latency p50/p99 and how many orders confirmed;
2. saturates it: ``--concurrency`` shoppers each placing an order as soon as their last one was
   accepted, for ``--seconds``, and reports confirmed orders per second and the CPU time each
   process (every service replica and the gateway, read from /proc) spent per confirmed order,
   from the first order until the last is terminal.

Latency is the order's own record: from ``placed_at`` (the placing transaction) to ``updated_at``
when it turned CONFIRMED (its last write), both stamped by orders, plus the client's wait for the
POST answer reported on its own. While it waits for its orders it reads only the PENDING ones (the
listing filtered by status), never the whole table, so a round costs the same however many orders
the earlier ones left. Orders that did not confirm are counted by why: a refused POST (its status,
or the connection error: the shopper goes on, after the wait a Retry-After asks for), a
cancellation (its reason), or still pending after two minutes (at which step). Each phase runs
``--rounds`` times; medians are printed. Targets on a 2-core machine: at least 100 confirmed
orders/s at saturation, p99 at most 500 ms at 50 orders/s; missing one is reported, not an
error. It exits non-zero only when something failed.

    .venv/bin/python bench/checkout.py [--seconds 15] [--rate 50] [--concurrency 48] [--rounds 3]
        [--without SERVICE ...]

``--without shipping`` runs the same code with a topology that leaves that service out (nothing
may depend on it): what a service costs the checkout, measured by running both back to back,

    for r in 1 2 3; do
        .venv/bin/python bench/checkout.py --rounds 1
        .venv/bin/python bench/checkout.py --rounds 1 --without shipping
    done
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from agora.topology import find_topology_file
from agora_tools.harness import (
    ADDRESS,
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    APPROVED,
    RunningSystem,
    shop_settings,
)

from procstat import cpu_seconds

# nats, identity, catalog, inventory, payments, orders, cart, notifications, shipping, gateway
PROCESSES = 10
SHOPPERS = 64
TARGET_THROUGHPUT = 100.0
TARGET_P99_MS = 500.0


@dataclass
class Placed:
    order_id: str
    post_seconds: float


@dataclass
class Round:
    """One round's figures, and why the orders of it that did not confirm did not."""

    figures: dict[str, float]
    why: Counter[str]


class Shop:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.skus: list[str] = []
        self.tokens: list[str] = []
        self.admin = ""
        self.random = random.Random(11)

    async def token(self, email: str, password: str) -> str:
        async with self.session.post(
            f"{self.url}/api/identity/token", json={"email": email, "password": password}
        ) as reply:
            assert reply.status == 200, await reply.text()
            return str((await reply.json())["access_token"])

    async def prepare(self) -> None:
        self.admin = await self.token(ADMIN_EMAIL, ADMIN_PASSWORD)
        async with self.session.get(f"{self.url}/api/catalog/products?limit=100") as reply:
            self.skus = [p["sku"] for p in (await reply.json())["items"]]
        for sku in self.skus:
            async with self.session.post(
                f"{self.url}/api/inventory/stock/{sku}/adjustments",
                json={"delta": 1_000_000, "reason": "bench: never sell out"},
                headers={"authorization": f"Bearer {self.admin}"},
            ) as reply:
                assert reply.status == 200, await reply.text()

        # Registering hashes a password (argon2id, slow on purpose): a few at a time.
        hashing = asyncio.Semaphore(4)

        async def shopper() -> str:
            async with hashing:
                return await self.register()

        self.tokens = list(await asyncio.gather(*(shopper() for _ in range(SHOPPERS))))

    async def register(self) -> str:
        email = f"bench-{uuid.uuid4().hex[:10]}@example.com"
        password = f"bench-pass-{uuid.uuid4().hex[:8]}"
        async with self.session.post(
            f"{self.url}/api/identity/users", json={"email": email, "password": password}
        ) as reply:
            assert reply.status == 201, await reply.text()
        return await self.token(email, password)

    async def place(self, n: int) -> Placed | str:
        """One order, or why it was refused: the status of a 4xx or 5xx, or the connection error.

        A 200 is the order itself: the gateway tried the POST again with its Idempotency-Key
        after the first try went unanswered, and orders answered with the order it had placed.
        """
        lines = [
            {"sku": sku, "quantity": self.random.randint(1, 3)}
            for sku in self.random.sample(self.skus, self.random.randint(1, 3))
        ]
        headers = {
            "authorization": f"Bearer {self.tokens[n % len(self.tokens)]}",
            "idempotency-key": uuid.uuid4().hex,
        }
        body = {"lines": lines, "shipping_address": ADDRESS, "card_number": APPROVED}
        started = time.perf_counter()
        try:
            async with self.session.post(f"{self.url}/api/orders", json=body, headers=headers) as r:
                if r.status not in {200, 201, 202}:
                    refused = f"HTTP {r.status} {await problem_title(r)}".rstrip()
                    # Asked to come back later (orders shedding load): as a client should.
                    await asyncio.sleep(float(r.headers.get("Retry-After", 0)))
                    return refused
                order_id = str((await r.json())["id"])
        except (TimeoutError, aiohttp.ClientError) as error:
            # A connection the gateway closed or refused under load: counted as refused, as a
            # refusal with a status is, and the shopper goes on.
            return type(error).__name__
        return Placed(order_id, time.perf_counter() - started)

    async def pages(self, **query: str) -> AsyncIterator[list[dict[str, Any]]]:
        """The admin's listing of orders (``query`` filters it), newest first, a page at a time."""
        cursor = ""
        while True:
            params = {**query, "limit": "500"} | ({"cursor": cursor} if cursor else {})
            async with self.session.get(
                f"{self.url}/api/orders",
                params=params,
                headers={"authorization": f"Bearer {self.admin}"},
            ) as reply:
                assert reply.status == 200, await reply.text()
                page = await reply.json()
            yield page["items"]
            cursor = page.get("next_cursor") or ""
            if not cursor:
                return

    async def settle(self, ids: set[str]) -> None:
        """Wait until none of these orders is PENDING (or two minutes have passed).

        It reads only the PENDING orders, which are the ones in flight, never the whole table.
        """
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pending = [o async for page in self.pages(status="PENDING") for o in page]
            if not any(o["id"] in ids for o in pending):
                return
            await asyncio.sleep(0.5)

    async def fetch(self, ids: set[str]) -> list[dict[str, Any]]:
        """These orders as they stand: the listing newest first, read until all are found."""
        found: list[dict[str, Any]] = []
        async for page in self.pages():
            found.extend(o for o in page if o["id"] in ids)
            if len(found) == len(ids):
                break
        return found


async def problem_title(reply: aiohttp.ClientResponse) -> str:
    """The title of a problem-details answer; empty for any other body."""
    try:
        problem = await reply.json(content_type=None)
    except ValueError:
        return ""
    return str(problem.get("title", "")) if isinstance(problem, dict) else ""


def not_confirmed(orders: list[dict[str, Any]], refusals: list[str]) -> Counter[str]:
    """Why orders did not confirm: a refused POST, or an order's status and reason or step."""
    why: Counter[str] = Counter(f"refused: {r}" for r in refusals)
    for o in orders:
        if o["status"] == "CANCELLED":
            why[f"cancelled: {o['reason']}"] += 1
        elif o["status"] == "PENDING":
            why[f"still pending at {o['checkout']['step']}"] += 1
    return why


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def fixed_load(shop: Shop, rate: float, seconds: float) -> Round:
    tasks: list[asyncio.Task[Placed | str]] = []
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < seconds:
        tasks.append(asyncio.create_task(shop.place(n)))
        n += 1
        # Open-loop arrivals: the next order is due at n / rate, however slow the answers are.
        await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
    answers = await asyncio.gather(*tasks)
    placed = [p for p in answers if isinstance(p, Placed)]
    refusals = [p for p in answers if isinstance(p, str)]
    ids = {p.order_id for p in placed}
    await shop.settle(ids)
    orders = await shop.fetch(ids)
    confirmed = [o for o in orders if o["status"] == "CONFIRMED"]
    latency = [seconds_between(o["placed_at"], o["updated_at"]) * 1000 for o in confirmed]
    posts = [p.post_seconds * 1000 for p in placed]
    figures = {
        "offered_per_s": n / seconds,
        "confirmed": len(confirmed),
        "not_confirmed": len(orders) - len(confirmed),
        "refused": len(refusals),
        "p50_ms": quantile(latency, 0.5),
        "p99_ms": quantile(latency, 0.99),
        "post_p50_ms": quantile(posts, 0.5),
        "post_p99_ms": quantile(posts, 0.99),
    }
    return Round(figures, not_confirmed(orders, refusals))


async def saturate(shop: Shop, concurrency: int, seconds: float, pids: dict[str, int]) -> Round:
    answers: list[Placed | str] = []
    stop_at = time.monotonic() + seconds

    async def shopper(i: int) -> None:
        n = i
        while time.monotonic() < stop_at:
            answers.append(await shop.place(n))
            n += concurrency

    began = datetime.now().astimezone()
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    await asyncio.gather(*(shopper(i) for i in range(concurrency)))
    placed = [p for p in answers if isinstance(p, Placed)]
    refusals = [p for p in answers if isinstance(p, str)]
    ids = {p.order_id for p in placed}
    await shop.settle(ids)
    cpu_after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    orders = await shop.fetch(ids)
    confirmed = [o for o in orders if o["status"] == "CONFIRMED"]
    last = max((datetime.fromisoformat(o["updated_at"]) for o in confirmed), default=began)
    span = max((last - began).total_seconds(), 1e-9)
    latency = [seconds_between(o["placed_at"], o["updated_at"]) * 1000 for o in confirmed]
    figures = {
        "placed": len(placed),
        "refused": len(refusals),
        "confirmed": len(confirmed),
        "confirmed_per_s": len(confirmed) / span,
        "p50_ms": quantile(latency, 0.5),
        "p99_ms": quantile(latency, 0.99),
        # Until every order is terminal, the bench's reading of the PENDING orders included.
        **cpu_ms_per_order(cpu_before, cpu_after, len(confirmed)),
    }
    return Round(figures, not_confirmed(orders, refusals))


def cpu_ms_per_order(
    before: dict[str, float | None], after: dict[str, float | None], confirmed: int
) -> dict[str, float]:
    """Each process's CPU milliseconds per confirmed order, and their sum."""
    used = {
        name: (end - start) * 1000 / max(confirmed, 1)
        for name, start in before.items()
        if start is not None and (end := after[name]) is not None
    }
    per_process = {f"cpu_ms {name}": ms for name, ms in sorted(used.items())}
    return {**per_process, "cpu_ms all": sum(used.values())}


def median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def show(title: str, rounds: list[Round]) -> dict[str, float]:
    """Print the rounds' medians, each round's figures and why orders did not confirm."""
    result = median_of([r.figures for r in rounds])
    print(f"\n{title} (median of {len(rounds)} rounds)")
    for key, value in result.items():
        each = ", ".join(f"{r.figures[key]:.1f}" for r in rounds)
        print(f"  {key:>20}: {value:10.1f}   (rounds: {each})")
    why = sum((r.why for r in rounds), Counter[str]())
    for reason, count in why.most_common():
        print(f"  not confirmed, all rounds: {count:6d}  {reason}")
    return result


async def run(
    url: str, args: argparse.Namespace, pids: dict[str, int]
) -> tuple[dict[str, float], dict[str, float]]:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        shop = Shop(session, url)
        await shop.prepare()
        await fixed_load(shop, args.rate, 3)  # warm-up: connections, caches, JIT-free paths
        fixed_rounds, saturated_rounds = [], []
        for _ in range(args.rounds):
            fixed_rounds.append(await fixed_load(shop, args.rate, args.seconds))
            saturated_rounds.append(await saturate(shop, args.concurrency, args.seconds, pids))
        fixed = show(
            f"Fixed load: {args.rate:g} orders/s offered for {args.seconds:g} s", fixed_rounds
        )
        saturated = show(
            f"Saturation: {args.concurrency} shoppers placing back to back for {args.seconds:g} s",
            saturated_rounds,
        )
        return fixed, saturated


def without(topology: str, services: list[str]) -> str:
    """``topology`` (the text of a topology file) with the tables of ``services`` left out."""
    kept, skipping = [], False
    for line in topology.splitlines(keepends=True):
        if line.startswith("["):
            skipping = line.strip() in {f"[services.{name}]" for name in services}
        if not skipping:
            kept.append(line)
    return "".join(kept)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--without", action="append", default=[], metavar="SERVICE")
    parser.add_argument(
        "--together", action="store_true", help="every Python service in one process (ADR 53)"
    )
    args = parser.parse_args()
    env = {**os.environ, **shop_settings(ADMIN_EMAIL, ADMIN_PASSWORD, AGORA_LOG_LEVEL="warning")}
    with tempfile.TemporaryDirectory(prefix="agora-bench-") as directory:
        up: list[str] = []
        if args.without:
            # A topology of its own, beside the shop: a service's `path` is relative to the
            # topology file, so only a topology without the services that have one moves.
            print(f"without {', '.join(args.without)}")
            topology = Path(directory) / "topology.toml"
            topology.write_text(without(find_topology_file().read_text(), args.without))
            env["AGORA_TOPOLOGY"] = str(topology)
            up = ["--topology", str(topology)]
        if args.together:
            print("together: every Python service and the gateway in one process")
            up.append("--together")
        with RunningSystem(Path(directory) / "shop", *up, env=env) as system:
            system.wait_healthy(count=PROCESSES - len(args.without))
            # A group's process is one row per member, with one pid: counted once, by its name.
            pids = {
                p.get("group") or p["service"] + (f"#{p['replica']}" if p["replica"] else ""): int(
                    p["pid"]
                )
                for p in system.status()
            }
            fixed, saturated = asyncio.run(run(system.gateway_url, args, pids))
            code = system.stop()
    print()
    throughput_ok = saturated["confirmed_per_s"] >= TARGET_THROUGHPUT
    latency_ok = fixed["p99_ms"] <= TARGET_P99_MS
    print(
        f"confirmed orders/s at saturation: {saturated['confirmed_per_s']:.1f} "
        f"(target ≥ {TARGET_THROUGHPUT:g}: {'met' if throughput_ok else 'MISSED'})"
    )
    print(
        f"place → confirmed p99 at {args.rate:g}/s: {fixed['p99_ms']:.0f} ms "
        f"(target ≤ {TARGET_P99_MS:g} ms: {'met' if latency_ok else 'MISSED'})"
    )
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
