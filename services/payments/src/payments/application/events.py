"""What a payment answers the checkout, as the events of payments' published contract."""

from __future__ import annotations

from contracts.base import IntegrationEvent
from contracts.payments import (
    PaymentAuthorized,
    PaymentCaptured,
    PaymentDeclined,
    PaymentFailed,
    PaymentRefunded,
    PaymentVoided,
)
from payments.domain import NO_CURRENCY, Answer, Payment, Reply


def event(payment: Payment, answer: Answer) -> IntegrationEvent:
    """What ``answer`` of ``payment`` tells the checkout: the contract's event."""
    order_id = payment.order_id
    reply = answer.reply
    if reply is Reply.AUTHORIZED:
        assert payment.amount is not None
        assert payment.currency is not None
        return PaymentAuthorized(
            order_id=order_id,
            payment_id=payment.id,
            amount=payment.amount,
            currency=payment.currency,
            card_brand=payment.card_brand or "card",
            card_last4=payment.card_last4 or "",
        )
    if reply is Reply.DECLINED:
        reason = answer.reason or "declined"
        return PaymentDeclined(order_id=order_id, payment_id=payment.id, reason=reason)
    if reply is Reply.FAILED:
        reason = answer.reason or "processor_error"
        return PaymentFailed(order_id=order_id, payment_id=payment.id, reason=reason)
    if reply is Reply.CAPTURED:
        return PaymentCaptured(
            order_id=order_id,
            payment_id=payment.id,
            amount=payment.captured_amount,
            currency=payment.currency or NO_CURRENCY,
        )
    # A tombstone names no payment: the order never had one.
    payment_id = payment.id if payment.amount is not None else None
    if reply is Reply.VOIDED:
        return PaymentVoided(order_id=order_id, payment_id=payment_id)
    return PaymentRefunded(
        order_id=order_id,
        payment_id=payment_id,
        amount=payment.refunded_amount,
        currency=payment.currency or NO_CURRENCY,
    )
