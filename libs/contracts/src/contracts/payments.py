"""Payments' contract: the commands it accepts from the checkout and the events it answers with.

Every message is about one order's payment (``order_id`` is also the CloudEvents ``subject``);
each command is idempotent per order. The card travels only as the token payments gave for it
(``POST /payments/cards``) with its brand and last four digits: never the number.

Authorizing is the checkout's pivot. Its answers: ``PaymentAuthorized``; ``PaymentDeclined`` (a
business answer: do not try again); ``PaymentFailed`` (the processor erred or did not answer in
time: trying again may succeed, and payments holds nothing for the order meanwhile).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from contracts.base import IntegrationCommand, IntegrationEvent


class AuthorizePayment(IntegrationCommand):
    """Hold ``amount`` on the card the token stands for."""

    type: ClassVar[str] = "payments.AuthorizePayment.v1"

    order_id: str
    user_id: str
    amount: int = Field(gt=0, description="Minor units of `currency`.")
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    card_token: str


class CapturePayment(IntegrationCommand):
    """Take the authorized amount: the customer is charged."""

    type: ClassVar[str] = "payments.CapturePayment.v1"

    order_id: str


class VoidPayment(IntegrationCommand):
    """Drop the order's authorization (nothing was charged). With none, later ones are refused."""

    type: ClassVar[str] = "payments.VoidPayment.v1"

    order_id: str


class RefundPayment(IntegrationCommand):
    """Give back what was captured for the order."""

    type: ClassVar[str] = "payments.RefundPayment.v1"

    order_id: str


class PaymentAuthorized(IntegrationEvent):
    """The amount is held on the card; nothing is charged yet."""

    type: ClassVar[str] = "payments.PaymentAuthorized.v1"

    order_id: str
    payment_id: str
    amount: int
    currency: str
    card_brand: str
    card_last4: str


class PaymentDeclined(IntegrationEvent):
    """The card was refused. ``reason``: ``declined``, ``insufficient_funds``, or ``voided``
    (the order's payment was voided before this authorization came)."""

    type: ClassVar[str] = "payments.PaymentDeclined.v1"

    order_id: str
    payment_id: str
    reason: str


class PaymentFailed(IntegrationEvent):
    """The processor could not give an answer. ``reason``: ``processor_error`` or
    ``processor_timeout``. Nothing is held; the authorization may be tried again."""

    type: ClassVar[str] = "payments.PaymentFailed.v1"

    order_id: str
    payment_id: str
    reason: str


class PaymentCaptured(IntegrationEvent):
    """The customer was charged ``amount``."""

    type: ClassVar[str] = "payments.PaymentCaptured.v1"

    order_id: str
    payment_id: str
    amount: int
    currency: str


class PaymentVoided(IntegrationEvent):
    """The order holds no authorization any more (``payment_id`` null when it never had one)."""

    type: ClassVar[str] = "payments.PaymentVoided.v1"

    order_id: str
    payment_id: str | None = None


class PaymentRefunded(IntegrationEvent):
    """``amount`` went back to the customer (0 when nothing had been captured)."""

    type: ClassVar[str] = "payments.PaymentRefunded.v1"

    order_id: str
    payment_id: str | None = None
    amount: int
    currency: str


EVENTS: tuple[type[IntegrationEvent], ...] = (
    PaymentAuthorized,
    PaymentDeclined,
    PaymentFailed,
    PaymentCaptured,
    PaymentVoided,
    PaymentRefunded,
)
COMMANDS: tuple[type[IntegrationCommand], ...] = (
    AuthorizePayment,
    CapturePayment,
    VoidPayment,
    RefundPayment,
)
