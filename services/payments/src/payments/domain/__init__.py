"""Payments' rules: card numbers, one payment per order and its states, the double-entry ledger.

Plain Python: no framework, no I/O. A :class:`Payment` changes state only through its methods;
each tells what the payment answers (``payment.answers``, turned into events by the application) and
which money movements it makes (``payment.movements``), so the ledger follows from the same
decisions as the states.

The ledger (every movement is two entries, one debit and one credit of the same amount; balances
are sums of entries, never stored)::

    movement  debit                 credit                 when
    hold      card_authorizations   customer_cards         an authorization is approved
    release   customer_cards        card_authorizations    the hold ends (capture or void)
    capture   processor_receivable  sales                  the authorized amount is charged
    refund    sales                 processor_receivable   the captured amount goes back

``card_authorizations`` and ``customer_cards`` are memo accounts for money held on cards: once
every payment is settled (captured, voided or refunded) they net to zero. ``processor_receivable``
is what the processor owes the shop; ``sales`` (a credit balance) what the shop earned. Both are
captured minus refunded, so the sales booked equal the totals of the orders that stand.

Card numbers: only :class:`CardNumber` holds the digits, and it never shows them (its ``repr`` and
``str`` give the brand and last four), so a number cannot leak into a log or an error by accident.
"""

from payments.domain.cards import (
    CARD_DIGITS_MAX,
    CARD_DIGITS_MIN,
    CARD_INPUT_MAX,
    Card,
    CardNumber,
    InvalidCard,
    card_brand,
    luhn_valid,
)
from payments.domain.ledger import (
    RULES,
    Account,
    Balance,
    BookedMovement,
    Entry,
    Ledger,
    Movement,
    MovementCursor,
    MovementKind,
)
from payments.domain.payment import (
    NO_CURRENCY,
    PAGE_DEFAULT,
    PAGE_MAX,
    RETRY_FIRST,
    RETRY_LONGEST,
    Answer,
    Operation,
    OperationInProgress,
    Payment,
    PaymentCursor,
    Reply,
    Status,
)

__all__ = [
    "CARD_DIGITS_MAX",
    "CARD_DIGITS_MIN",
    "CARD_INPUT_MAX",
    "NO_CURRENCY",
    "PAGE_DEFAULT",
    "PAGE_MAX",
    "RETRY_FIRST",
    "RETRY_LONGEST",
    "RULES",
    "Account",
    "Answer",
    "Balance",
    "BookedMovement",
    "Card",
    "CardNumber",
    "Entry",
    "InvalidCard",
    "Ledger",
    "Movement",
    "MovementCursor",
    "MovementKind",
    "Operation",
    "OperationInProgress",
    "Payment",
    "PaymentCursor",
    "Reply",
    "Status",
    "card_brand",
    "luhn_valid",
]
