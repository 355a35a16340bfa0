"""P6, co-location: a cart read through the gateway, the shop in a process per service against
the shop in one process (`agora up --together`, ADR 53), measured side by side in one run.

It starts the whole shop twice with `agora up` (the embedded profile, each in a throwaway
directory of its own, the gateway's limits lifted): apart, a process per service; together,
every Python service and the gateway in one process (the broker stays a process of its own). In
each it registers a shopper and puts five products in their cart, then drives `GET /api/cart`
with the shopper's token (gateway → cart → catalog: two calls between services, which stay in the
process when together) from a load generator in a process of its own (bench/httpload.py:
keep-alive connections, a warm-up before each measurement). Both shops stay up for the whole run;
rounds alternate which goes first. Per round and as medians it prints requests per second, p50
and p99, and the CPU time per request summed over all the shop's processes (each row of
`agora status`, a group's process counted once; from /proc), and the ratios together/apart
against the targets: at least 3x less CPU per request and a 3x lower p50 (a miss is reported,
not an error). It exits non-zero only when something failed: a shop that did not start, a
request that did not get the cart.

The checkout's comparison is `bench/checkout.py` against `bench/checkout.py --together`.

    .venv/bin/python bench/colocation.py [--seconds 4] [--warmup 1] [--connections 32]
        [--rounds 3]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agora_tools.harness import ADMIN_EMAIL, ADMIN_PASSWORD, SHAPES, RunningSystem, shop_settings

from httpload import Target, measure
from processes import arguments, exit_status, reported, run

LINES = 5
# nats, identity, catalog, inventory, payments, orders, cart, notifications, shipping, gateway:
# a row each in `agora status`, together too (the group's members share its pid).
ROWS = 10
# together/apart, at most: 3x less CPU per request, a 3x lower p50.
TARGET = 1 / 3


@dataclass
class Shop:
    """One of the two shops: how it runs (a key of SHAPES), and what the bench learnt of it."""

    name: str
    system: RunningSystem
    token: str = ""
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def log(self) -> Path:
        return self.system.output

    def target(self) -> Target:
        return {
            "url": f"{self.system.gateway_url}/api/cart",
            "pids": self.pids,
            "headers": {"authorization": f"Bearer {self.token}"},
        }


def answered(reply: httpx.Response, status: int) -> httpx.Response:
    if reply.status_code != status:
        request = f"{reply.request.method} {reply.request.url.path}"
        raise RuntimeError(f"{request} answered {reply.status_code}: {reply.text[:500]}")
    return reply


def fill_cart(url: str) -> str:
    """Register a shopper at the gateway ``url`` and put LINES products in their cart; their
    access token."""
    email = f"shopper-{uuid.uuid4().hex[:10]}@example.com"
    login = {"email": email, "password": f"bench-pass-{uuid.uuid4().hex[:8]}"}
    with httpx.Client(base_url=url, timeout=30) as api:
        answered(api.post("/api/identity/users", json=login), 201)
        token = str(
            answered(api.post("/api/identity/token", json=login), 200).json()["access_token"]
        )
        shopper = {"authorization": f"Bearer {token}"}
        listed = answered(api.get("/api/catalog/products", params={"limit": LINES}), 200)
        for n, product in enumerate(listed.json()["items"], 1):
            path = f"/api/cart/items/{product['sku']}"
            answered(api.put(path, json={"quantity": n}, headers=shopper), 200)
        cart = answered(api.get("/api/cart", headers=shopper), 200).json()
    if len(cart["items"]) != LINES:
        raise RuntimeError(f"the cart holds {len(cart['items'])} lines, not {LINES}: {cart}")
    return token


def pids_of(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Each process of a shop (``agora status --json``) by name: a group's once, by its name."""
    return {
        row.get("group") or row["service"] + (f"#{row['replica']}" if row["replica"] else ""): int(
            row["pid"]
        )
        for row in rows
    }


def with_cpu_sum(result: dict[str, Any]) -> dict[str, Any]:
    return {**result, "cpu_us": sum(result["cpu_us_per_request"].values())}


def figures(r: dict[str, Any]) -> str:
    return f"{r['rps']:>7.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['cpu_us']:>10.0f}"


def ratio_line(what: str, rounds: list[dict[str, dict[str, Any]]], key: str, target: str) -> None:
    values = [r["together"][key] / r["apart"][key] for r in rounds if r["apart"][key]]
    if not values:
        return
    median = statistics.median(values)
    each = ", ".join(f"{v:.2f}" for v in values)
    verdict = f"; target ≤ {TARGET:.2f}x ({target}): {'met' if median <= TARGET else 'MISSED'}"
    print(f"together/apart {what}: {median:.2f}x (rounds {each}){verdict if target else ''}")


def main() -> int:
    parser = arguments(__doc__, "shop", "both shops")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections")
    args = parser.parse_args()
    env = {**os.environ, **shop_settings(ADMIN_EMAIL, ADMIN_PASSWORD, AGORA_LOG_LEVEL="warning")}
    with ExitStack() as stack:
        # Both shops up for the whole run; leaving the block kills what is still running (the
        # runner's children go with it), on a failure or Ctrl-C too.
        shops = []
        for name, shape in SHAPES.items():
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix=f"agora-{name}-"))
            system = RunningSystem(Path(directory), *shape, env=env)
            shops.append(Shop(name, stack.enter_context(system)))
        with reported("colocation", shops):
            for shop in shops:
                shop.system.wait_healthy(count=ROWS, timeout=300)
                shop.pids = pids_of(shop.system.status())
                shop.token = fill_cart(shop.system.gateway_url)
            rounds: list[dict[str, dict[str, Any]]] = []
            for n in range(args.rounds):
                # Alternate which shop goes first: neither always meets the machine as the
                # other left it.
                order = shops if n % 2 == 0 else shops[::-1]
                results = measure(
                    [shop.target() for shop in order],
                    args.seconds,
                    args.warmup,
                    args.connections,
                    uvloop=True,
                )
                rounds.append(
                    {shop.name: with_cpu_sum(r) for shop, r in zip(order, results, strict=True)}
                )
            stopped = {shop.name: shop.system.stop() for shop in shops}

    print(
        f"GET /api/cart ({LINES} lines: gateway → cart → catalog), {args.connections} connections, "
        f"{args.seconds:g} s each after {args.warmup:g} s of warm-up, {args.rounds} rounds"
    )
    print(f"{'round':<7} {'shop':<9} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs':>10}")
    for n, measured in enumerate(rounds, 1):
        for shop in shops:
            print(f"{n:<7} {shop.name:<9} {figures(measured[shop.name])}")
    for shop in shops:
        median = {
            key: statistics.median(r[shop.name][key] for r in rounds)
            for key in ("rps", "p50_ms", "p99_ms", "cpu_us")
        }
        print(f"{'median':<7} {shop.name:<9} {figures(median)}")
    print("(CPU µs: per request, summed over every process of the shop; medians by process:)")
    for shop in shops:
        by_process = {
            name: statistics.median(
                r[shop.name]["cpu_us_per_request"].get(name, 0.0) for r in rounds
            )
            for name in shop.pids
        }
        shown = ", ".join(
            f"{name} {us:.0f}" for name, us in sorted(by_process.items(), key=lambda i: -i[1])
        )
        print(f"  {shop.name} ({len(shop.pids)} processes): {shown}")
    ratio_line("req/s", rounds, "rps", "")
    ratio_line("p50", rounds, "p50_ms", "3x lower")
    ratio_line("p99", rounds, "p99_ms", "")
    ratio_line("CPU per request", rounds, "cpu_us", "3x less")
    print("the checkout, apart and together: bench/checkout.py, then bench/checkout.py --together")
    for name, code in stopped.items():
        if code != 0:
            print(f"colocation: agora up ({name}) exited with {code}", file=sys.stderr)
            return 1
    return exit_status("colocation", rounds)


if __name__ == "__main__":
    sys.exit(run(main, "colocation"))
