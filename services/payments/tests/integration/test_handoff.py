"""A command that leaves work for the processor while the worker loop runs: it leases the
operation in its own transaction and hands it to the loop, with no claim transaction; what is
handed and never done is taken again by a poll once the lease runs out."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from opentelemetry import trace

from agora.messaging.schema import outbox
from agora.telemetry import configure_tracing
from agora_tools.testing import InMemoryBus, an_order
from contracts.payments import CapturePayment
from payments.adapters import SqlPayments
from payments.application import Claim, Parts, Wakeup, worker
from payments.domain import Status
from payments.entrypoints import subscriptions

from .conftest import APPROVED, Bench, assert_balanced, held

WAIT = 30.0  # seconds a step may take on a busy machine (a bound, not a measurement)


def handing(bench: Bench) -> Wakeup:
    """The bench's commands wired to its worker's wakeup, as the service wires them, with the
    loop's lease set as ``run`` sets it."""
    wakeup = bench.worker.wakeup
    wakeup.start(bench.worker.lease)
    bench.bus = InMemoryBus(
        subscriptions(Parts(SqlPayments(), bench.worker.steps.processor, wakeup)), bench.uow
    )
    return wakeup


async def test_a_command_leases_its_operation_and_hands_it_over_once_committed(
    bench: Bench,
) -> None:
    wakeup = handing(bench)
    order_id = an_order()

    await bench.authorize(order_id, APPROVED)

    ((claim, _),) = wakeup.handed()
    payment = await bench.payment(order_id)
    assert payment.lease_token == claim.token
    assert payment.lease_until == claim.until
    assert claim.until is not None
    assert claim.until - payment.updated_at == bench.worker.lease
    assert claim.reference == f"{order_id}:auth:1"
    assert await bench.claim() == []  # leased: no other worker takes it

    await bench.worker.complete(claim)
    payment = await bench.payment(order_id)
    assert payment.status is Status.AUTHORIZED
    assert payment.pending is None
    assert await bench.answers(order_id) == ["PaymentAuthorized"]


async def test_a_handed_operation_answers_in_the_trace_of_the_command_that_left_it(
    bench: Bench,
) -> None:
    """So a checkout's trace goes on past the processor call, to the capture and the
    confirmation, instead of ending at the command."""
    configure_tracing("payments")
    wakeup = handing(bench)
    order_id = an_order()
    with trace.get_tracer("test").start_as_current_span("checkout") as span:
        await bench.authorize(order_id, APPROVED)
        checkout = format(span.get_span_context().trace_id, "032x")

    ((claim, context),) = wakeup.handed()
    await asyncio.create_task(bench.worker.complete(claim), context=context)

    assert await bench.answers(order_id) == ["PaymentAuthorized"]
    (traceparent,) = await bench.uow.query(
        lambda session: session.scalars(
            sa.select(outbox.c.traceparent).where(outbox.c.aggregate == order_id)
        ).all()
    )
    assert traceparent is not None
    assert traceparent.split("-")[1] == checkout


async def test_a_handed_operation_never_done_is_taken_again_and_done_once(bench: Bench) -> None:
    wakeup = handing(bench)
    order_id = an_order()
    await bench.authorize(order_id, APPROVED)
    ((lost, _),) = wakeup.handed()
    await bench.worker.steps.call(
        lost
    )  # the processor authorized; the process died before recording

    assert await bench.claim() == []
    bench.clock.advance(bench.worker.lease.total_seconds() + 1)
    await bench.worker.complete(lost)  # too late: left to the poll, nothing recorded
    assert (await bench.payment(order_id)).status is Status.PENDING
    assert await bench.work() == 1

    assert (await bench.payment(order_id)).status is Status.AUTHORIZED
    assert [op[0] for op in await bench.operations("authorize")] == [f"{order_id}:auth:1"]
    assert await bench.answers(order_id) == ["PaymentAuthorized"]


async def test_the_worker_loop_carries_out_handed_operations(bench: Bench) -> None:
    wakeup = Wakeup()
    parts = Parts(SqlPayments(), bench.worker.steps.processor, wakeup)
    lease = bench.worker.lease
    # Only a handoff or a ring starts anything.
    bench.worker = worker(bench.uow, parts, lease=lease, poll=60.0, clock=bench.clock)
    bench.bus = InMemoryBus(subscriptions(parts), bench.uow)
    loop = asyncio.create_task(bench.worker.run())
    try:
        # Until the loop has started listening with its lease: only then do commands hand over
        # (a command before that is left to a poll, which the 60 s poll would not make soon).
        await listening(wakeup)
        order_id = an_order()
        await bench.authorize(order_id, APPROVED, amount=700)
        await until(bench, order_id, Status.AUTHORIZED)
        await bench.send(CapturePayment(order_id=order_id))
        await until(bench, order_id, Status.CAPTURED)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)

    assert wakeup.lease is None  # stopped: commands no longer hand anything over
    kinds = [op[1] for op in await bench.operations()]
    assert kinds == ["authorize", "capture"]
    ledger = await bench.ledger()
    assert held(ledger) == 0
    assert_balanced(ledger)


async def test_a_command_without_a_running_loop_leaves_its_operation_to_a_poll(
    bench: Bench,
) -> None:
    wakeup = Wakeup()  # no loop has started it with a lease
    bench.bus = InMemoryBus(
        subscriptions(Parts(SqlPayments(), bench.worker.steps.processor, wakeup)), bench.uow
    )
    order_id = an_order()

    await bench.authorize(order_id, APPROVED)

    assert wakeup.handed() == []
    assert wakeup.take_poll()
    claims: list[Claim] = await bench.claim()
    assert [claim.order_id for claim in claims] == [order_id]


async def listening(wakeup: Wakeup) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while wakeup.lease is None:
        assert asyncio.get_running_loop().time() < deadline, "the worker loop never started"
        await asyncio.sleep(0.01)


async def until(bench: Bench, order_id: str, status: Status) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while asyncio.get_running_loop().time() < deadline:
        if (await bench.payment(order_id)).status is status:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{order_id} never became {status}")
