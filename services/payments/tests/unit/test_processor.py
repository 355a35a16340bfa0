"""The simulated card processor: what each test card does, and the same answer for a repeated
reference. It keeps its records in SQL, as the real one keeps them on its side, so these tests give
it a SQLite file of their own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, select

from agora.db import UnitOfWork
from agora.migrations import upgrade
from payments.adapters import SimulatedProcessor, processor_cards, processor_operations
from payments.application import (
    Authorization,
    Deadline,
    Declined,
    ProcessorError,
    ProcessorTimeout,
)
from payments.bootstrap import MIGRATIONS
from payments.domain import CardNumber

HANG = 0.05


@pytest.fixture
async def processor(tmp_path: Path) -> AsyncIterator[SimulatedProcessor]:
    url = f"sqlite:///{tmp_path / 'payments.db'}"
    upgrade(url, MIGRATIONS)
    uow = UnitOfWork(url, source="payments")
    try:
        yield SimulatedProcessor(uow, hang=HANG)
    finally:
        await uow.dispose()


async def token(processor: SimulatedProcessor, number: str) -> str:
    return (await processor.tokenize(CardNumber.parse(number))).token


async def done(processor: SimulatedProcessor) -> list[tuple[str, str, str]]:
    def read(connection: Connection) -> list[tuple[str, str, str]]:
        table = processor_operations
        rows = connection.execute(select(table.c.reference, table.c.kind, table.c.outcome))
        return [(reference, kind, outcome) for reference, kind, outcome in rows]

    return await processor.uow.query(read)


async def test_the_approved_card_is_authorized_with_its_brand_and_last_four(
    processor: SimulatedProcessor,
) -> None:
    authorization = await processor.authorize(
        await token(processor, "4242 4242 4242 4242"), 100, "EUR", "o-1:auth:1"
    )

    assert authorization.id.startswith("auth_")
    assert (authorization.brand, authorization.last4) == ("visa", "4242")


async def test_any_other_valid_number_is_approved(processor: SimulatedProcessor) -> None:
    authorization = await processor.authorize(
        await token(processor, "5555 5555 5555 4444"), 100, "EUR", "o-1:auth:1"
    )

    assert (authorization.brand, authorization.last4) == ("mastercard", "4444")


@pytest.mark.parametrize(
    ("number", "reason"),
    [("4000 0000 0000 0002", "declined"), ("4000 0000 0000 9995", "insufficient_funds")],
)
async def test_the_refused_cards_are_declined_with_their_reason(
    processor: SimulatedProcessor, number: str, reason: str
) -> None:
    with pytest.raises(Declined) as refusal:
        await processor.authorize(await token(processor, number), 100, "EUR", "o-1:auth:1")

    assert refusal.value.reason == reason


async def test_a_token_the_processor_never_gave_is_declined(
    processor: SimulatedProcessor,
) -> None:
    with pytest.raises(Declined) as refusal:
        await processor.authorize("tok_made_up", 100, "EUR", "o-1:auth:1")

    assert refusal.value.reason == "declined"


async def test_the_error_card_fails_and_nothing_is_recorded_as_done(
    processor: SimulatedProcessor,
) -> None:
    with pytest.raises(ProcessorError):
        await processor.authorize(await token(processor, "4000000000000119"), 1, "EUR", "o:auth:1")

    assert await done(processor) == []


async def test_the_timeout_card_keeps_the_caller_waiting_past_its_deadline(
    processor: SimulatedProcessor,
) -> None:
    card = await token(processor, "4000 0000 0000 0259")
    # The caller gives up first: payments puts a deadline on every call.
    with pytest.raises(ProcessorTimeout):
        await Deadline(processor, HANG / 5).authorize(card, 1, "EUR", "o-1:auth:1")
    # Without a deadline the processor ends the wait itself.
    with pytest.raises(ProcessorTimeout):
        await processor.authorize(card, 1, "EUR", "o-1:auth:2")

    assert await done(processor) == []


async def test_a_repeated_reference_gets_the_first_answer_and_is_done_once(
    processor: SimulatedProcessor,
) -> None:
    card = await token(processor, "4242424242424242")

    first = await processor.authorize(card, 100, "EUR", "o-1:auth:1")
    again = await processor.authorize(card, 100, "EUR", "o-1:auth:1")
    other = await processor.authorize(card, 100, "EUR", "o-1:auth:2")
    await processor.capture(first.id, 100, "o-1:capture")
    await processor.capture(first.id, 100, "o-1:capture")

    assert again == first
    assert other.id != first.id
    assert sorted(await done(processor)) == [
        ("o-1:auth:1", "authorize", "approved"),
        ("o-1:auth:2", "authorize", "approved"),
        ("o-1:capture", "capture", "approved"),
    ]


async def test_a_repeated_refusal_is_refused_again(processor: SimulatedProcessor) -> None:
    card = await token(processor, "4000 0000 0000 9995")
    for _ in range(2):
        with pytest.raises(Declined, match="insufficient_funds"):
            await processor.authorize(card, 100, "EUR", "o-1:auth:1")

    assert await done(processor) == [("o-1:auth:1", "authorize", "insufficient_funds")]


async def test_capture_void_and_refund_act_on_an_authorization_it_gave(
    processor: SimulatedProcessor,
) -> None:
    held: Authorization = await processor.authorize(
        await token(processor, "4242424242424242"), 100, "EUR", "o-1:auth:1"
    )

    await processor.capture(held.id, 100, "o-1:capture")
    await processor.refund(held.id, 100, "o-1:refund")
    await processor.void(held.id, "o-2:void")
    with pytest.raises(Declined):
        await processor.capture("auth_unknown", 100, "o-3:capture")

    kinds = sorted(kind for _, kind, _ in await done(processor))
    assert kinds == ["authorize", "capture", "refund", "void"]


async def test_the_processor_keeps_brand_last_four_and_behaviour_but_never_the_number(
    processor: SimulatedProcessor,
) -> None:
    await token(processor, "4000 0000 0000 0002")

    def read(connection: Connection) -> list[dict[str, object]]:
        return [dict(row._mapping) for row in connection.execute(select(processor_cards))]

    (card,) = await processor.uow.query(read)
    assert card["brand"] == "visa"
    assert card["last4"] == "0002"
    assert card["behaviour"] == "decline"
    assert "4000000000000002" not in repr(card)
