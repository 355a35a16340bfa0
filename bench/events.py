"""The event path's cost: commit -> outbox -> relay -> JetStream -> consumer -> handler's effect,
with the embedded NATS, one relay and one consumer.

It starts a nats-server of its own (the venv's, a free port, a throwaway data directory), a
publisher ("ledger", this process: a SQLite unit of work and one Relay, as a service runs them)
and a subscriber ("audit", a second process: its own SQLite file and one Consumers whose handler
inserts a row), with the chassis's default settings and tracing switched on as in a service.

(a) Throughput: N events committed one per transaction (``uow.run`` + ``record``, plus the row the
    event reports), over many aggregates, as fast as the publisher can, yielding to the event loop
    after each commit as a request handler would; events/s from the first commit to the last
    handled.
(b) Latency: events offered at a fixed rate (500/s for 10 s), each committed at its scheduled
    time; commit -> handled latency p50/p99, where "committed" is when ``uow.run`` returned in the
    publisher and "handled" is when the handler ran in the subscriber (both CLOCK_MONOTONIC).

Targets: at least 2,000 events/s; p99 at most 50 ms at 500 events/s. Missing one is reported, not
an error. It exits non-zero only when something failed: an event not applied, or applied twice,
or a process that did not start.

    .venv/bin/python bench/events.py [--events 20000] [--rate 500] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from typing import ClassVar

import uvloop
from nats.js.errors import NotFoundError
from pydantic import BaseModel
from sqlalchemy import (
    Column,
    Connection,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
)

from agora.db import UnitOfWork
from agora.logs import configure_logging
from agora.messaging.broker import Broker
from agora.messaging.consumer import Consumers, consumer_name
from agora.messaging.envelope import CloudEvent, stream_name
from agora.messaging.outbox import record
from agora.messaging.relay import Relay, backlog
from agora.messaging.schema import metadata as messaging_metadata
from agora.messaging.subscriptions import Subscription
from agora.settings import ServiceSettings
from agora.telemetry import configure_tracing
from agora_tools.harness import terminate
from agora_tools.testing import NatsServer

from procstat import cpu_seconds, machine_cpu_seconds

THROUGHPUT_TARGET = 2000.0  # events/s
P99_TARGET_MS = 50.0  # at the offered rate below
AGGREGATES = 1000
WARMUP = 500
START_WITHIN = 20.0  # seconds for the subscriber to bind its consumer
DRAIN_WITHIN = 60.0  # seconds for the last events to arrive before they count as lost
POLL = 0.02
MACHINE = "machine"

# A service's defaults (not the environment's overrides), so runs compare.
DEFAULTS = ServiceSettings.model_construct()


class Noted(BaseModel):
    type: ClassVar[str] = "ledger.Noted.v1"
    n: int
    account: str
    amount: int
    memo: str


tables = MetaData()
# The publisher's own state change, which the event reports.
entries = Table(
    "entries",
    tables,
    Column("n", Integer, primary_key=True),
    Column("account", String(40), nullable=False),
    Column("amount", Integer, nullable=False),
)
# The subscriber's effect: one row per application, with when the handler ran.
effects = Table(
    "effects",
    tables,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
    Column("n", Integer, nullable=False),
    Column("handled_at", Float, nullable=False),
)


def audit_noted(connection: Connection, event: Noted, envelope: CloudEvent) -> None:
    connection.execute(
        insert(effects).values(event_id=envelope.id, n=event.n, handled_at=time.monotonic())
    )


SUBSCRIPTION = Subscription(Noted, audit_noted)


def note(connection: Connection, n: int) -> str:
    account = f"account-{n % AGGREGATES}"
    amount = 100 + n % 997
    connection.execute(insert(entries).values(n=n, account=account, amount=amount))
    event = Noted(n=n, account=account, amount=amount, memo="bench entry")
    return record(connection, event, aggregate=account).id


def create_tables(connection: Connection) -> None:
    messaging_metadata.create_all(connection)
    tables.create_all(connection)


def handled_count(connection: Connection) -> int:
    return int(connection.execute(select(func.count()).select_from(effects)).scalar_one())


def handled_times(connection: Connection) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    for event_id, at in connection.execute(select(effects.c.event_id, effects.c.handled_at)):
        times.setdefault(event_id, []).append(at)
    return times


# The subscriber process


async def subscribe(nats_url: str, database: Path) -> None:
    configure_logging("audit", level="warning", fmt="console")
    configure_tracing("audit")
    uow = UnitOfWork(
        f"sqlite:///{database}", source="audit", synchronous=DEFAULTS.sqlite_synchronous
    )
    await uow.run(create_tables)  # as a service migrates before it consumes
    broker = Broker(nats_url, name="bench-audit")
    consumers = Consumers(
        "audit",
        uow,
        broker,
        [SUBSCRIPTION],
        ack_wait=DEFAULTS.ack_wait,
        max_deliver=DEFAULTS.max_deliver,
        backoff=DEFAULTS.redelivery_backoff,
    )
    await broker.start()
    task = asyncio.create_task(consumers.run())
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await broker.close()
    await uow.dispose()


# The publisher process (this one), which also measures


@dataclass
class Phase:
    name: str
    started: float
    committed: dict[str, float]  # event id -> when its commit returned
    commits_done: float = 0.0
    relayed: float = 0.0  # when the outbox was first seen empty after the last commit
    ended: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds used


class Bench:
    def __init__(
        self, publisher: UnitOfWork, subscriber: UnitOfWork, processes: dict[str, int]
    ) -> None:
        self.publisher = publisher
        self.subscriber = subscriber  # read only, to see what the other process applied
        self.processes = processes  # name -> pid, whose CPU each phase reports
        self.next_n = 0
        self.all_committed: dict[str, float] = {}

    def cpu(self) -> dict[str, float]:
        used = {name: cpu_seconds(pid) for name, pid in self.processes.items()}
        used[MACHINE] = machine_cpu_seconds()
        return {name: seconds for name, seconds in used.items() if seconds is not None}

    async def commit(self) -> str:
        n, self.next_n = self.next_n, self.next_n + 1
        event_id = await self.publisher.run(note, n)
        self.all_committed[event_id] = time.monotonic()
        return event_id

    async def burst(self, name: str, count: int) -> Phase:
        phase = Phase(name, time.monotonic(), {}, cpu=self.cpu())
        for _ in range(count):
            event_id = await self.commit()
            phase.committed[event_id] = self.all_committed[event_id]
            # A SQLite commit runs inline and never yields: let the relay in, as the event
            # loop would between two requests.
            await asyncio.sleep(0)
        phase.commits_done = time.monotonic()
        await self.drain(phase)
        return phase

    async def paced(self, name: str, rate: float, seconds: float) -> Phase:
        count = round(rate * seconds)
        phase = Phase(name, time.monotonic() + 0.05, {}, cpu=self.cpu())
        for i in range(count):
            delay = phase.started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            event_id = await self.commit()
            phase.committed[event_id] = self.all_committed[event_id]
        phase.commits_done = time.monotonic()
        await self.drain(phase)
        return phase

    async def drain(self, phase: Phase) -> None:
        """Until everything committed so far was handled (or DRAIN_WITHIN passed)."""
        deadline = time.monotonic() + DRAIN_WITHIN
        while time.monotonic() < deadline:
            if not phase.relayed and await self.publisher.query(backlog) == 0:
                phase.relayed = time.monotonic()
            if await self.subscriber.query(handled_count) >= len(self.all_committed):
                break
            await asyncio.sleep(POLL)
        phase.ended = time.monotonic()
        before, after = phase.cpu, self.cpu()
        phase.cpu = {name: after[name] - before[name] for name in after if name in before}


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


async def wait_for_consumer(broker: Broker, child: subprocess.Popen[bytes]) -> None:
    durable = consumer_name("audit", SUBSCRIPTION)
    deadline = time.monotonic() + START_WITHIN
    while True:
        if child.poll() is not None:
            raise RuntimeError(f"the subscriber exited with status {child.returncode}")
        try:
            await broker.js.consumer_info(stream_name("ledger"), durable)
            return
        except NotFoundError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the subscriber's consumer {durable} did not appear")
        await asyncio.sleep(0.05)


@dataclass
class Results:
    burst: Phase
    paced: Phase
    handled: dict[str, list[float]]  # event id -> when each application of it ran
    committed: set[str]


@contextlib.contextmanager
def subscriber_process(nats_url: str, database: Path, log: Path) -> Iterator[Popen[bytes]]:
    """The subscribing service: this script again, in a process of its own."""
    with log.open("wb") as output:
        child = subprocess.Popen(
            [sys.executable, __file__, "--subscriber", nats_url, str(database)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            yield child
        finally:
            terminate(child, grace=10)
    if child.returncode not in (0, -signal.SIGTERM):
        print(f"the subscriber ended with status {child.returncode}; the end of its log:")
        print(log.read_text()[-3000:])


async def measure(
    args: argparse.Namespace, work: Path, nats: NatsServer, child: Popen[bytes]
) -> Results:
    configure_logging("ledger", level="warning", fmt="console")
    configure_tracing("ledger")
    publisher = UnitOfWork(
        f"sqlite:///{work / 'ledger.db'}",
        source="ledger",
        synchronous=DEFAULTS.sqlite_synchronous,
    )
    # Read only: what the other process applied.
    subscriber = UnitOfWork(f"sqlite:///{work / 'audit.db'}", source="audit")
    await publisher.run(create_tables)
    broker = Broker(nats.url, name="bench-ledger")
    broker.on_connect(lambda: broker.ensure_stream("ledger"))
    relay = Relay.of_service(publisher, broker, DEFAULTS, service="ledger")
    publisher.after_commit(relay.wake)
    relay_task: asyncio.Task[None] | None = None
    try:
        await broker.start()
        async with asyncio.timeout(START_WITHIN):
            await broker.wait_connected()
        relay_task = asyncio.create_task(relay.run())
        # Its consumer exists once its tables do, so reading them from here is safe after this.
        await wait_for_consumer(broker, child)

        processes = {"publisher": os.getpid(), "subscriber": child.pid}
        if nats.process is not None:
            processes["nats-server"] = nats.process.pid
        bench = Bench(publisher, subscriber, processes)
        await bench.burst("warm-up", WARMUP)
        burst = await bench.burst("throughput", args.events)
        paced = await bench.paced("latency", args.rate, args.seconds)
        handled = await subscriber.query(handled_times)
        return Results(burst, paced, handled, set(bench.all_committed))
    finally:
        if relay_task is not None:
            relay_task.cancel()
            await asyncio.gather(relay_task, return_exceptions=True)
        await broker.close()
        await publisher.dispose()
        await subscriber.dispose()


def report(results: Results, rate: float) -> int:
    """Print the figures; the exit status (1 when an event was lost or applied twice)."""
    report_throughput(results.burst, results.handled)
    report_latency(results.paced, results.handled, rate)
    lost = results.committed - results.handled.keys()
    doubled = [event_id for event_id, seen in results.handled.items() if len(seen) > 1]
    if lost or doubled:
        print(
            f"FAILED: {len(lost)} of {len(results.committed)} events never handled, "
            f"{len(doubled)} handled more than once"
        )
        return 1
    print(f"every one of {len(results.committed)} events handled exactly once")
    return 0


def report_cpu(phase: Phase) -> None:
    if not phase.cpu:
        return
    wall = phase.ended - phase.started
    ours = {name: seconds for name, seconds in phase.cpu.items() if name != MACHINE}
    busy = ", ".join(f"{name} {seconds / wall:.0%}" for name, seconds in ours.items())
    if MACHINE in phase.cpu:
        # Other software on the machine takes cores from the bench: say how much.
        others = max(0.0, phase.cpu[MACHINE] - sum(ours.values()))
        busy += f"; everything else on the machine {others / wall:.0%}"
    print(f"  CPU busy (share of one core, {os.cpu_count()} cores): {busy}")
    if phase.committed:
        # What each event cost, whoever else ran: the figure to compare on a busy machine.
        count = len(phase.committed)
        each = ", ".join(f"{name} {seconds / count * 1e6:.0f} µs" for name, seconds in ours.items())
        print(f"  CPU per event: {each}")


def report_throughput(phase: Phase, times: dict[str, list[float]]) -> None:
    handled = [times[event_id][0] for event_id in phase.committed if event_id in times]
    count = len(phase.committed)
    if not handled:
        print("throughput: nothing handled")
        return
    elapsed = max(handled) - phase.started
    rate = len(handled) / elapsed
    commits = phase.commits_done - phase.started
    relayed = (phase.relayed or phase.commits_done) - phase.started
    print(
        f"throughput: {rate:.0f} events/s ({count} events, one per transaction, "
        f"{AGGREGATES} aggregates, relay+consumer, SQLite, embedded NATS)"
    )
    print(
        f"  first commit -> last commit {commits:.2f} s ({count / commits:.0f} commits/s); "
        f"-> outbox empty {relayed:.2f} s; -> last handled {elapsed:.2f} s"
    )
    report_cpu(phase)
    print(
        f"  target >= {THROUGHPUT_TARGET:.0f} events/s: {met(rate >= THROUGHPUT_TARGET)}"
        + ("" if len(handled) == count else f" ({count - len(handled)} not handled)")
    )


def report_latency(phase: Phase, times: dict[str, list[float]], rate: float) -> None:
    latencies = [
        (times[event_id][0] - committed) * 1000
        for event_id, committed in phase.committed.items()
        if event_id in times
    ]
    count = len(phase.committed)
    offered = count / (phase.commits_done - phase.started)
    if not latencies:
        print("latency: nothing handled")
        return
    p50 = statistics.median(latencies)
    p99 = percentile(latencies, 0.99)
    print(
        f"latency at {rate:.0f} events/s offered ({offered:.0f}/s committed, {count} events): "
        f"commit->handled p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(latencies):.1f} ms"
    )
    report_cpu(phase)
    print(f"  target p99 <= {P99_TARGET_MS:.0f} ms: {met(p99 <= P99_TARGET_MS)}")


def main() -> int:
    # Both processes on the loop a service runs on (agora.server: uvloop).
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if len(sys.argv) == 4 and sys.argv[1] == "--subscriber":
        asyncio.run(subscribe(sys.argv[2], Path(sys.argv[3])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events in the burst")
    parser.add_argument("--rate", type=float, default=500.0, help="offered events/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to offer them")
    args = parser.parse_args()
    if args.events < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--events, --rate and --seconds must be positive")
    with (
        tempfile.TemporaryDirectory(prefix="agora-bench-events-") as tmp,
        NatsServer(Path(tmp) / "nats") as nats,
        subscriber_process(nats.url, Path(tmp) / "audit.db", Path(tmp) / "audit.log") as child,
    ):
        results = asyncio.run(measure(args, Path(tmp), nats, child))
    return report(results, args.rate)


if __name__ == "__main__":
    sys.exit(main())
