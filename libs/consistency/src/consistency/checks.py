"""The invariants, as plain functions over a :class:`~consistency.snapshot.Snapshot`.

Each check compares what one service says with what another says, never a service with itself:

* every order is terminal once its checkout deadline has passed (orders);
* per SKU, the opening stock plus adjustments minus the lines of CONFIRMED orders is what is on
  hand, on hand is never negative, and no reservation is left for a terminal order (orders
  against inventory);
* per order, captured minus refunded is the order's total when CONFIRMED and zero when
  CANCELLED, and no order was captured twice (orders against payments);
* the ledger balances: every movement is one debit and one credit of the same amount, the
  accounts sum to zero, and what it booked as sales is what orders confirmed (payments against
  itself and against orders);
* every registered user has exactly one welcome message, and every CONFIRMED or CANCELLED order
  exactly one message saying so, in its owner's mailbox; no message is about an order that is
  still in progress or that orders does not know, or for a user identity does not know
  (notifications against identity and orders);
* when the system has shipping: every CONFIRMED order has exactly one shipment once its grace
  has passed, no CANCELLED order has a shipment that is not cancelled, and every shipment is of
  a CONFIRMED order that orders knows (shipping against orders); every dispatched (or
  delivered) shipment has exactly one ``shipment_dispatched`` message, in its owner's mailbox,
  and every such message is about a shipment shipping knows (notifications against shipping).

An order still in progress (PENDING before its deadline) is not a violation, but the stock and
money it touches cannot be judged yet: those SKUs and that order are left out and counted. A
CONFIRMED order without a shipment within its grace (``shipment_grace``: its shipment may still
be on its way) is not a violation either, and is counted apart.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Protocol, TypeVar

from consistency.snapshot import (
    DISPATCHED,
    SHIPMENT_DISPATCHED,
    SHIPMENT_GRACE,
    Message,
    Order,
    Shipment,
    Snapshot,
    awaiting_shipment,
)

TERMINAL = frozenset({"CONFIRMED", "CANCELLED"})
# Ledger movement kinds that take money from a card, and the account that books it as sales.
CAPTURE = "capture"
SALES = "sales"


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant: which one, and what breaks it."""

    check: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.subject}: {self.detail}"


# What a check finds broken: the subject (``order o-1``), and how.
Finding = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Report:
    violations: tuple[Violation, ...]
    in_progress: tuple[str, ...]
    counts: dict[str, int]
    # CONFIRMED orders still within their grace with no shipment: not judged yet.
    awaiting_shipment: tuple[str, ...] = ()
    # What was not judged and why, a sentence each (shipping not in the system, shipments due).
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.violations


def orders_terminal_after_deadline(snapshot: Snapshot) -> Iterable[Finding]:
    for order in snapshot.orders:
        if order.status not in TERMINAL and order.deadline_at <= snapshot.taken_at:
            yield (
                f"order {order.id}",
                f"still {order.status} (checkout step {order.step!r}) after its deadline "
                f"{order.deadline_at.isoformat()}",
            )


def stock_matches_sales(snapshot: Snapshot) -> Iterable[Finding]:
    sold: Counter[str] = Counter()
    for order in snapshot.orders:
        if order.status == "CONFIRMED":
            for line in order.lines:
                sold[line.sku] += line.quantity
    busy = {line.sku for order in _in_progress(snapshot) for line in order.lines}
    stock = {row.sku: row for row in snapshot.stock}
    for sku in sorted(set(sold) - set(stock)):
        yield f"sku {sku}", f"{sold[sku]} sold, but inventory has no such SKU"
    for row in snapshot.stock:
        if row.on_hand < 0 or row.reserved < 0 or row.reserved > row.on_hand:
            yield (
                f"sku {row.sku}",
                f"on hand {row.on_hand}, reserved {row.reserved}: on hand must be at least the "
                "reserved units, and neither negative",
            )
        if row.sku in busy:
            continue
        expected = row.seeded + row.adjusted - sold[row.sku]
        if expected != row.on_hand:
            yield (
                f"sku {row.sku}",
                f"on hand {row.on_hand}, but opening {row.seeded} + adjustments {row.adjusted} "
                f"- confirmed sales {sold[row.sku]} = {expected}",
            )


def no_reservation_for_terminal_orders(snapshot: Snapshot) -> Iterable[Finding]:
    for reservation, order in _with_order(snapshot, snapshot.active_reservations):
        if order is None:
            yield (
                f"order {reservation.order_id}",
                "inventory holds stock for an order that orders does not know",
            )
        elif order.status in TERMINAL:
            yield (
                f"order {order.id}",
                f"{order.status}, but inventory still holds "
                + ", ".join(f"{line.quantity} x {line.sku}" for line in reservation.lines),
            )


def money_matches_orders(snapshot: Snapshot) -> Iterable[Finding]:
    net: Counter[str] = Counter()
    for payment in snapshot.payments:
        net[payment.order_id] += payment.captured_amount - payment.refunded_amount
    captures: Counter[str] = Counter(
        movement.order_id
        for movement in snapshot.movements
        if movement.kind == CAPTURE and movement.order_id is not None
    )
    for order in snapshot.orders:
        if order.status == "CONFIRMED" and net[order.id] != order.total:
            yield (
                f"order {order.id}",
                f"CONFIRMED for {order.total}, but captured minus refunded is {net[order.id]}",
            )
        if order.status == "CANCELLED" and net[order.id] != 0:
            yield (
                f"order {order.id}",
                f"CANCELLED, but captured minus refunded is {net[order.id]}",
            )
    for order_id, count in sorted(captures.items()):
        if count > 1:
            yield f"order {order_id}", f"captured {count} times"
    known = {order.id for order in snapshot.orders}
    for order_id in sorted(set(net) - known):
        if net[order_id]:
            yield f"order {order_id}", f"{net[order_id]} kept for an order orders lacks"


def ledger_balances(snapshot: Snapshot) -> Iterable[Finding]:
    for movement in snapshot.movements:
        debits = sum(entry.debit for entry in movement.entries)
        credits = sum(entry.credit for entry in movement.entries)
        if len(movement.entries) != 2 or debits != credits or debits != movement.amount:
            yield (
                f"movement {movement.id}",
                f"{movement.kind} of {movement.amount}: {len(movement.entries)} entries, "
                f"debits {debits}, credits {credits}",
            )
    balance: defaultdict[str, int] = defaultdict(int)
    for movement in snapshot.movements:
        for entry in movement.entries:
            balance[entry.account] += entry.debit - entry.credit
    if sum(balance.values()) != 0:
        yield "all accounts", f"debits exceed credits by {sum(balance.values())}"
    if not list(_in_progress(snapshot)):
        confirmed = sum(order.total for order in snapshot.orders if order.status == "CONFIRMED")
        booked = -balance[SALES]
        if booked != confirmed:
            yield (
                f"account {SALES}",
                f"books {booked} of sales, but the CONFIRMED orders total {confirmed}",
            )


# The message each kind of event leaves in a mailbox.
WELCOME = "welcome"
MESSAGE_FOR = {"CONFIRMED": "order_confirmed", "CANCELLED": "order_cancelled"}


def one_message_per_user_and_finished_order(snapshot: Snapshot) -> Iterable[Finding]:
    users = set(snapshot.users)
    welcomes: Counter[str] = Counter()
    about: defaultdict[str, list[Message]] = defaultdict(list)
    for message in snapshot.messages:
        if message.user_id not in users:
            yield (
                f"message {message.id}",
                f"{message.kind} for user {message.user_id}, whom identity does not know",
            )
        if message.kind == SHIPMENT_DISPATCHED:
            # About the shipment, not the order's end: shipment_messages judges it.
            continue
        if message.order_id is None:
            welcomes[message.user_id] += message.kind == WELCOME
        else:
            about[message.order_id].append(message)
    for user in sorted(users):
        if welcomes[user] != 1:
            yield f"user {user}", f"{welcomes[user]} welcome messages, not 1"
    orders = {order.id: order for order in snapshot.orders}
    for order in snapshot.orders:
        messages = about.get(order.id, [])
        if order.status not in TERMINAL:
            if messages:
                yield (
                    f"order {order.id}",
                    f"still {order.status}, but has a message: "
                    + ", ".join(m.kind for m in messages),
                )
            continue
        kinds = [m.kind for m in messages]
        if kinds != [MESSAGE_FOR[order.status]]:
            yield (
                f"order {order.id}",
                f"{order.status}, with messages {kinds or 'none'}: exactly one "
                f"{MESSAGE_FOR[order.status]} was due",
            )
        yield from _sent_to_others(f"order {order.id}", messages, order.user_id)
    for order_id in sorted(set(about) - set(orders)):
        yield f"order {order_id}", "a message about an order that orders does not know"


def _shipments_by_order(shipments: Iterable[Shipment]) -> defaultdict[str, list[Shipment]]:
    by_order: defaultdict[str, list[Shipment]] = defaultdict(list)
    for shipment in shipments:
        by_order[shipment.order_id].append(shipment)
    return by_order


def one_shipment_per_confirmed_order(
    snapshot: Snapshot, *, grace: timedelta = SHIPMENT_GRACE
) -> Iterable[Finding]:
    """Exactly one shipment for each CONFIRMED order; none yet is a violation only once the
    order was confirmed ``grace`` before the snapshot (until then it may be on its way)."""
    if snapshot.shipments is None:
        return
    by_order = _shipments_by_order(snapshot.shipments)
    waiting = {order.id for order in awaiting_shipment(snapshot, grace)}
    for order in snapshot.orders:
        if order.status != "CONFIRMED" or order.id in waiting:
            continue
        shipments = by_order.get(order.id, [])
        if len(shipments) != 1:
            yield (
                f"order {order.id}",
                f"CONFIRMED at {order.updated_at.isoformat()}, with {len(shipments)} shipments "
                f"({', '.join(s.id for s in shipments) or 'none'}): exactly one was due within "
                f"{grace.total_seconds():g} s",
            )


def no_active_shipment_for_cancelled_orders(snapshot: Snapshot) -> Iterable[Finding]:
    if snapshot.shipments is None:
        return
    for shipment, order in _with_order(snapshot, snapshot.shipments):
        if order is not None and order.status == "CANCELLED" and shipment.status != "cancelled":
            yield (
                f"shipment {shipment.id}",
                f"{shipment.status} for order {order.id}, which is CANCELLED",
            )


def shipments_of_known_confirmed_orders(snapshot: Snapshot) -> Iterable[Finding]:
    """A shipment is of an order orders knows, and (being made on its confirmation) that is not
    still in progress. Shipments are read before orders, so a later order is no excuse."""
    if snapshot.shipments is None:
        return
    for shipment, order in _with_order(snapshot, snapshot.shipments):
        if order is None:
            yield (
                f"shipment {shipment.id}",
                f"for order {shipment.order_id}, which orders does not know",
            )
        elif order.status not in TERMINAL:
            yield (
                f"shipment {shipment.id}",
                f"for order {order.id}, which is still {order.status}: only a CONFIRMED order "
                "is shipped",
            )


def one_message_per_dispatched_shipment(snapshot: Snapshot) -> Iterable[Finding]:
    if snapshot.shipments is None:
        return
    told: defaultdict[str | None, list[Message]] = defaultdict(list)
    for message in snapshot.messages:
        if message.kind == SHIPMENT_DISPATCHED:
            told[message.shipment_id].append(message)
    known = {shipment.id for shipment in snapshot.shipments}
    for shipment in snapshot.shipments:
        messages = told.get(shipment.id, [])
        if shipment.status in DISPATCHED and len(messages) != 1:
            yield (
                f"shipment {shipment.id}",
                f"{shipment.status}, with {len(messages)} {SHIPMENT_DISPATCHED} messages "
                f"({', '.join(m.id for m in messages) or 'none'}): exactly one was due",
            )
        yield from _sent_to_others(f"shipment {shipment.id}", messages, shipment.user_id)
    for shipment_id, messages in told.items():
        if shipment_id not in known:
            for message in messages:
                yield (
                    f"message {message.id}",
                    f"{SHIPMENT_DISPATCHED} about shipment {shipment_id}, which shipping does "
                    "not know",
                )


# Each check by the name its violations carry.
CHECKS: dict[str, Callable[[Snapshot], Iterable[Finding]]] = {
    "order-terminal": orders_terminal_after_deadline,
    "stock": stock_matches_sales,
    "reservation": no_reservation_for_terminal_orders,
    "money": money_matches_orders,
    "ledger": ledger_balances,
    "messages": one_message_per_user_and_finished_order,
    "shipment": one_shipment_per_confirmed_order,
    "shipment-cancelled": no_active_shipment_for_cancelled_orders,
    "shipment-order": shipments_of_known_confirmed_orders,
    "shipment-message": one_message_per_dispatched_shipment,
}


def check(snapshot: Snapshot, *, shipment_grace: timedelta = SHIPMENT_GRACE) -> Report:
    """Every check over one snapshot; a CONFIRMED order may be without its shipment for
    ``shipment_grace`` after its confirmation."""
    runs: dict[str, Callable[[Snapshot], Iterable[Finding]]] = {
        **CHECKS,
        "shipment": partial(one_shipment_per_confirmed_order, grace=shipment_grace),
    }
    violations = tuple(
        Violation(name, subject, detail)
        for name, run in runs.items()
        for subject, detail in run(snapshot)
    )
    statuses = Counter(order.status for order in snapshot.orders)
    counts = {
        "orders": len(snapshot.orders),
        "confirmed": statuses["CONFIRMED"],
        "cancelled": statuses["CANCELLED"],
        "skus": len(snapshot.stock),
        "payments": len(snapshot.payments),
        "ledger movements": len(snapshot.movements),
        "users": len(snapshot.users),
        "messages": len(snapshot.messages),
    }
    awaiting = tuple(order.id for order in awaiting_shipment(snapshot, shipment_grace))
    notes: tuple[str, ...] = ()
    if snapshot.shipments is None:
        notes = ("shipping is not in the system's topology: no shipment was checked",)
    else:
        counts["shipments"] = len(snapshot.shipments)
        if awaiting:
            notes = (
                f"{len(awaiting)} CONFIRMED order(s) without a shipment yet, within the "
                f"{shipment_grace.total_seconds():g} s a shipment may take: not judged",
            )
    return Report(violations, tuple(o.id for o in _in_progress(snapshot)), counts, awaiting, notes)


class _OfAnOrder(Protocol):
    @property
    def order_id(self) -> str: ...


OfAnOrder = TypeVar("OfAnOrder", bound=_OfAnOrder)


def _with_order(
    snapshot: Snapshot, items: Iterable[OfAnOrder]
) -> Iterator[tuple[OfAnOrder, Order | None]]:
    """Each of ``items`` beside the order it is of, as orders has it (None: orders does not
    know the order)."""
    orders = {order.id: order for order in snapshot.orders}
    return ((item, orders.get(item.order_id)) for item in items)


def _in_progress(snapshot: Snapshot) -> Iterable[Order]:
    return (
        order
        for order in snapshot.orders
        if order.status not in TERMINAL and order.deadline_at > snapshot.taken_at
    )


def _sent_to_others(about: str, messages: Iterable[Message], owner: str) -> Iterable[Finding]:
    """A finding for each of the messages ``about`` something that went to another user than
    its ``owner``."""
    for message in messages:
        if message.user_id != owner:
            yield about, f"its message {message.id} went to user {message.user_id}, not its owner"
