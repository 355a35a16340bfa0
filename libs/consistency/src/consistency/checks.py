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
  (notifications against identity and orders).

An order still in progress (PENDING before its deadline) is not a violation, but the stock and
money it touches cannot be judged yet: those SKUs and that order are left out and counted.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from consistency.snapshot import Message, Order, Snapshot

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
    orders = {order.id: order for order in snapshot.orders}
    for reservation in snapshot.active_reservations:
        order = orders.get(reservation.order_id)
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
        for message in messages:
            if message.user_id != order.user_id:
                yield (
                    f"order {order.id}",
                    f"its message {message.id} went to user {message.user_id}, not its owner",
                )
    for order_id in sorted(set(about) - set(orders)):
        yield f"order {order_id}", "a message about an order that orders does not know"


# Each check by the name its violations carry.
CHECKS: dict[str, Callable[[Snapshot], Iterable[Finding]]] = {
    "order-terminal": orders_terminal_after_deadline,
    "stock": stock_matches_sales,
    "reservation": no_reservation_for_terminal_orders,
    "money": money_matches_orders,
    "ledger": ledger_balances,
    "messages": one_message_per_user_and_finished_order,
}


def check(snapshot: Snapshot) -> Report:
    """Every check over one snapshot."""
    violations = tuple(
        Violation(name, subject, detail)
        for name, run in CHECKS.items()
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
    return Report(violations, tuple(o.id for o in _in_progress(snapshot)), counts)


def _in_progress(snapshot: Snapshot) -> Iterable[Order]:
    return (
        order
        for order in snapshot.orders
        if order.status not in TERMINAL and order.deadline_at > snapshot.taken_at
    )
