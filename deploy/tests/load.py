"""A shop's traffic for a bounded time: checkouts and catalogue reads, every failure kept.

Open loop: a checkout is due every ``1 / checkout_rate`` s and a catalogue read every
``1 / read_rate`` s, however slow the answers, so a pause on the server side shows up as failures
or slow answers instead of as fewer requests. A failure is any answer that is not a success (a 5xx
above all, but a 4xx too) and any connection error or timeout, each recorded with the request,
what came back and when, so a run that fails names the request that did.

A 503 with ``Retry-After`` is a service shedding load (orders admits a bounded number of
checkouts, ADR 54): as a client keeping to HTTP does, the load sends the same request again (the
same Idempotency-Key) after the wait it asks for, within the request's bound, and counts it as
deferred. Only an answer the request ends with can be its failure.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from shopping import APPROVED, DECLINED

from agora_tools.harness import ADDRESS

# A replayed checkout answers 200 with the order it placed the first time.
PLACED = {200, 201, 202}
# Every request's own bound: well past the gateway's retries, short of the run's length.
REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class Failure:
    """One request the shop did not serve."""

    at: float  # seconds since the load began
    request: str  # "POST /api/orders"
    error: str  # "503 {problem...}" or "ClientConnectorError: ..."
    kind: str  # "503 payments answered 504 to a card" or "ClientConnectorError"

    def __str__(self) -> str:
        return f"{self.at:7.2f} s  {self.request}: {self.error}"


def kind_of(status: int, text: str) -> str:
    """An answer's status and, for a problem, its detail (request ids left out)."""
    try:
        detail = json.loads(text).get("detail") or ""
    except (ValueError, AttributeError):
        detail = ""
    return f"{status} {detail}".strip()


@dataclass
class Report:
    """What a run sent and what came back."""

    seconds: float = 0.0
    began_at: str = ""  # the wall clock, UTC, to compare with the containers' logs
    checkouts: int = 0
    reads: int = 0
    order_ids: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    slowest: float = 0.0
    deferred: int = 0  # requests sent again after a 503 with Retry-After
    # The machine's CPUs, busy from 0 to 1, each second of the run: a failure in a second at
    # 1.0 was a machine out of breath, not necessarily a fault of the system.
    cpu: list[float] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return self.checkouts + self.reads

    @property
    def checkouts_per_second(self) -> float:
        return self.checkouts / self.seconds if self.seconds else 0.0

    def cpu_at(self, second: float) -> float:
        index = int(second)
        return self.cpu[index] if 0 <= index < len(self.cpu) else float("nan")

    def summary(self, title: str) -> str:
        busy = f"CPU busy {100 * sum(self.cpu) / len(self.cpu):.0f}% on average" if self.cpu else ""
        lines = [
            f"{title}: {self.requests} requests in {self.seconds:.1f} s from {self.began_at} "
            f"({self.checkouts} checkouts, {self.checkouts_per_second:.1f}/s; {self.reads} "
            f"catalogue reads), {len(self.order_ids)} orders placed, "
            f"{len(self.failures)} failed, {self.deferred} deferred by a busy answer, "
            f"slowest answer {self.slowest:.2f} s; {busy}",
            *(
                f"  {failure}  (CPU {100 * self.cpu_at(failure.at):.0f}% busy)"
                for failure in self.failures[:50]
            ),
        ]
        if len(self.failures) > 50:
            lines.append(f"  ... and {len(self.failures) - 50} more")
        kinds = Counter(f"{failure.request}: {failure.kind}" for failure in self.failures)
        lines += [f"  {count:5d} x {kind}" for kind, count in kinds.most_common()]
        return "\n".join(lines)


@dataclass(frozen=True)
class Shoppers:
    """Who sends the load: the shoppers' access tokens and what they may buy."""

    tokens: Sequence[str]
    skus: Sequence[str]


class Load:
    def __init__(self, url: str, shoppers: Shoppers, *, seed: int = 13) -> None:
        self.url = url
        self.shoppers = shoppers
        self.random = random.Random(seed)
        self.report = Report()
        self.began = 0.0

    async def run(self, seconds: float, checkout_rate: float, read_rate: float) -> Report:
        """Sends the load for ``seconds``, then waits for the answers still due."""
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self.began = time.monotonic()
            self.report.began_at = datetime.now(UTC).strftime("%H:%M:%S")
            tasks = await asyncio.gather(
                self._arrivals(seconds, checkout_rate, lambda n: self._checkout(session, n)),
                self._arrivals(seconds, read_rate, lambda n: self._read(session, n)),
                self._sample_cpu(seconds),
            )
            # How long the sending took: ``seconds``, or more when the arrivals fell behind.
            self.report.seconds = time.monotonic() - self.began
            await asyncio.gather(*(task for started in tasks for task in started))
        return self.report

    async def _sample_cpu(self, seconds: float) -> list[asyncio.Task[None]]:
        last = _cpu_times()
        for second in range(1, int(seconds) + 1):
            await asyncio.sleep(max(0.0, self.began + second - time.monotonic()))
            now = _cpu_times()
            total = now[0] - last[0]
            self.report.cpu.append((now[1] - last[1]) / total if total else 0.0)
            last = now
        return []

    async def _arrivals(
        self, seconds: float, rate: float, request: Callable[[int], Coroutine[Any, Any, None]]
    ) -> list[asyncio.Task[None]]:
        started: list[asyncio.Task[None]] = []
        n = 0
        while (due := n / rate) < seconds:
            await asyncio.sleep(max(0.0, self.began + due - time.monotonic()))
            started.append(asyncio.create_task(request(n)))
            n += 1
        return started

    async def _checkout(self, session: aiohttp.ClientSession, n: int) -> None:
        skus = self.random.sample(list(self.shoppers.skus), self.random.randint(1, 2))
        body = {
            "lines": [{"sku": sku, "quantity": self.random.randint(1, 2)} for sku in skus],
            "shipping_address": ADDRESS,
            # One in ten is declined: the saga's compensating path runs under the load too.
            "card_number": DECLINED if n % 10 == 9 else APPROVED,
        }
        headers = {
            "authorization": f"Bearer {self.shoppers.tokens[n % len(self.shoppers.tokens)]}",
            "idempotency-key": uuid.uuid4().hex,
        }
        self.report.checkouts += 1
        answer = await self._send(session, "POST", "/api/orders", json=body, headers=headers)
        if answer is not None:
            self.report.order_ids.append(str(answer["id"]))

    async def _read(self, session: aiohttp.ClientSession, n: int) -> None:
        self.report.reads += 1
        if n % 2:
            await self._send(session, "GET", f"/api/catalog/products/{self._sku(n)}")
        else:
            await self._send(session, "GET", "/api/catalog/products?limit=20")

    def _sku(self, n: int) -> str:
        return self.shoppers.skus[n % len(self.shoppers.skus)]

    async def _send(
        self, session: aiohttp.ClientSession, method: str, path: str, **options: Any
    ) -> dict[str, Any] | None:
        """The answer's body when it succeeded; otherwise None, the failure recorded."""
        sent = time.monotonic()
        what = f"{method} {path.split('?')[0]}"
        while True:
            wait = None
            try:
                async with session.request(method, f"{self.url}{path}", **options) as answer:
                    text = await answer.text()
                    ok = answer.status in (PLACED if method == "POST" else {200})
                    error, kind = f"{answer.status} {text[:300]}", kind_of(answer.status, text)
                    if answer.status == 503:
                        wait = _retry_after(answer.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError) as failure:
                ok = False
                error, kind = f"{type(failure).__name__}: {failure}", type(failure).__name__
            if wait is None or time.monotonic() + wait - sent >= REQUEST_TIMEOUT:
                break
            self.report.deferred += 1
            await asyncio.sleep(wait)
        took = time.monotonic() - sent
        self.report.slowest = max(self.report.slowest, took)
        if not ok:
            self.report.failures.append(Failure(sent - self.began, what, error, kind))
            return None
        body: dict[str, Any] = json.loads(text)
        return body


def _retry_after(value: str | None) -> float | None:
    """The seconds a ``Retry-After`` of delay-seconds asks for; None without one."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value)


def _cpu_times() -> tuple[int, int]:
    """All CPUs' jiffies since boot: in total, and busy (neither idle nor waiting for I/O)."""
    fields = [int(part) for part in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields), sum(fields) - idle
