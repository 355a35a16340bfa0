"""The double-entry ledger: every movement is two entries, one debit and one credit of the same
amount; balances are sums of entries, never stored (the accounts are in the package's
docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Account(StrEnum):
    CARD_AUTHORIZATIONS = "card_authorizations"
    CUSTOMER_CARDS = "customer_cards"
    PROCESSOR_RECEIVABLE = "processor_receivable"
    SALES = "sales"


class MovementKind(StrEnum):
    HOLD = "hold"
    RELEASE = "release"
    CAPTURE = "capture"
    REFUND = "refund"


# Which account each kind of movement debits, and which it credits.
RULES: dict[MovementKind, tuple[Account, Account]] = {
    MovementKind.HOLD: (Account.CARD_AUTHORIZATIONS, Account.CUSTOMER_CARDS),
    MovementKind.RELEASE: (Account.CUSTOMER_CARDS, Account.CARD_AUTHORIZATIONS),
    MovementKind.CAPTURE: (Account.PROCESSOR_RECEIVABLE, Account.SALES),
    MovementKind.REFUND: (Account.SALES, Account.PROCESSOR_RECEIVABLE),
}


@dataclass(frozen=True, slots=True)
class Entry:
    """One side of a movement: the account it debits or credits, and by how much."""

    account: Account
    debit: int
    credit: int


@dataclass(frozen=True, slots=True)
class Movement:
    """Money moving between two accounts: one debit entry and one credit entry, equal."""

    kind: MovementKind
    amount: int
    currency: str

    def __post_init__(self) -> None:
        if self.amount <= 0:
            raise ValueError("a movement moves a positive amount")

    @property
    def entries(self) -> tuple[Entry, Entry]:
        debited, credited = RULES[self.kind]
        return (
            Entry(account=debited, debit=self.amount, credit=0),
            Entry(account=credited, debit=0, credit=self.amount),
        )


# --- the ledger as it is read ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Balance:
    account: str
    debits: int
    credits: int

    @property
    def balance(self) -> int:
        return self.debits - self.credits


@dataclass(frozen=True, slots=True)
class Ledger:
    """Every account's sums, computed from the entries; ``debits`` equals ``credits``."""

    accounts: list[Balance]
    movements: int

    @property
    def debits(self) -> int:
        return sum(account.debits for account in self.accounts)

    @property
    def credits(self) -> int:
        return sum(account.credits for account in self.accounts)

    def balance(self, account: str) -> int:
        return sum(found.balance for found in self.accounts if found.account == account)


@dataclass(frozen=True, slots=True)
class BookedMovement:
    """A movement as the ledger holds it, with the entries it was booked as."""

    id: int
    order_id: str
    payment_id: str
    kind: MovementKind
    amount: int
    currency: str
    created_at: datetime
    entries: list[Entry]


@dataclass(frozen=True, slots=True)
class MovementCursor:
    """Where the next page of ledger movements starts: after the movement with this id (keyset
    paging, handed out as an opaque token by agora.cursor)."""

    id: int
