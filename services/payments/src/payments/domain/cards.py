"""Card numbers and cards: only :class:`CardNumber` holds the digits, and it never shows them
(its ``repr`` and ``str`` give the brand and last four), so a number cannot leak into a log or an
error by accident."""

from __future__ import annotations

from dataclasses import dataclass

CARD_DIGITS_MIN = 12
CARD_DIGITS_MAX = 19
CARD_INPUT_MAX = 40  # digits and the spaces between groups


class InvalidCard(Exception):
    """Invalid card number."""


def luhn_valid(digits: str) -> bool:
    """The Luhn check: double every second digit from the right; the sum ends in 0."""
    total = 0
    for position, character in enumerate(reversed(digits)):
        digit = int(character)
        if position % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def card_brand(digits: str) -> str:
    """The card's scheme from its first digits: visa, mastercard, amex, or plain "card"."""
    if digits.startswith("4"):
        return "visa"
    if 51 <= int(digits[:2]) <= 55 or 2221 <= int(digits[:4]) <= 2720:
        return "mastercard"
    if digits[:2] in ("34", "37"):
        return "amex"
    return "card"


class CardNumber:
    """A checked card number: 12 to 19 digits that pass the Luhn check.

    It never shows its digits (``repr`` and ``str`` give ``visa ****4242``); ``digits`` is for
    the processor alone, which turns the number into a token.
    """

    __slots__ = ("_digits",)

    def __init__(self, digits: str) -> None:
        self._digits = digits

    @classmethod
    def parse(cls, text: str) -> CardNumber:
        """The number in ``text`` (digits, spaces allowed between them). The errors say what is
        wrong and never repeat the number."""
        digits = text.replace(" ", "")
        if not digits.isascii() or not digits.isdigit():
            raise InvalidCard("a card number holds digits only (spaces between them allowed)")
        if not CARD_DIGITS_MIN <= len(digits) <= CARD_DIGITS_MAX:
            raise InvalidCard(
                f"a card number has {CARD_DIGITS_MIN} to {CARD_DIGITS_MAX} digits,"
                f" this one has {len(digits)}"
            )
        if not luhn_valid(digits):
            raise InvalidCard("the card number's check digit is wrong: is there a typo?")
        return cls(digits)

    @property
    def digits(self) -> str:
        return self._digits

    @property
    def brand(self) -> str:
        return card_brand(self._digits)

    @property
    def last4(self) -> str:
        return self._digits[-4:]

    def __repr__(self) -> str:
        return f"CardNumber({self.brand} ****{self.last4})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CardNumber) and other._digits == self._digits

    def __hash__(self) -> int:
        return hash(self._digits)


@dataclass(frozen=True, slots=True)
class Card:
    """A card as payments knows it: the processor's token for it, its brand and last four."""

    token: str
    brand: str
    last4: str
