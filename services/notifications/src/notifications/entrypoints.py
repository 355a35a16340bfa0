"""Notifications' entry points: the mailbox routes, the subscriptions to identity's, orders' and
shipping's events. Each parses what came in, runs one handler, and answers.

| route | who | answer |
|---|---|---|
| GET /notifications?limit=&cursor= | a user | 200 ``{items, next_cursor}``, their own |
| GET /notifications/all?user_id=&limit=&cursor= | admin | 200 ``{items, next_cursor}``, anyone's |
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator
from sqlalchemy import Connection

from agora.cursor import REFUSED_CURSOR, PageOut, page_size
from agora.deps import Admin, CurrentUser, Uow, provided
from agora.messaging import CloudEvent, Subscription
from agora.query import QueryParams, page_cursor, page_limit
from contracts.identity import UserRegistered
from contracts.orders import OrderCancelled, OrderConfirmed
from contracts.shipping import ShipmentDispatched
from notifications import application, domain
from notifications.application import MailboxQuery
from notifications.domain import (
    PAGE_DEFAULT,
    PAGE_MAX,
    USER_ID_MAX,
    Kind,
    Status,
)

JSON = "application/json"

router = APIRouter(tags=["notifications"])
Parts = Annotated[application.Parts, Depends(provided(application.Parts))]


class MessageOut(BaseModel):
    """A message in a mailbox."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: Kind
    order_id: str | None = Field(description="The order it is about; null for a welcome.")
    shipment_id: str | None = Field(
        description="The shipment it is about (a shipment_dispatched message); null for the "
        "other kinds."
    )
    subject: str
    body: str = Field(description="Plain text.")
    created_at: datetime


class DeliveryOut(BaseModel):
    """Where the message's mail is."""

    model_config = ConfigDict(from_attributes=True)

    status: Status = Field(
        description="pending (to be mailed once the address is known and mail is configured), "
        "sent (the mail server accepted it), failed (the server refused it for good)."
    )
    attempts: int = Field(description="Sends started so far.")
    last_error: str | None = Field(description="Why the last send failed, if it did.")
    sent_at: datetime | None


class AnyMessageOut(MessageOut):
    """A message in anyone's mailbox, for admins and the consistency checker."""

    user_id: str
    delivery: DeliveryOut


class MessagePage(PageOut[MessageOut]):
    pass


class AnyMessagePage(PageOut[AnyMessageOut]):
    pass


class MailboxParams(QueryParams):
    """An empty value (``?cursor=``) means the parameter is not given."""

    limit: int = page_limit(PAGE_DEFAULT, PAGE_MAX)
    cursor: str | None = page_cursor()


class EveryMailboxParams(MailboxParams):
    user_id: str | None = Field(
        default=None, max_length=USER_ID_MAX, description="Only this user's messages."
    )

    @field_validator("user_id")
    @classmethod
    def _printable(cls, user_id: str | None) -> str | None:
        # PostgreSQL cannot even compare text holding NUL: refused here, not a 500 there.
        if user_id is not None and not user_id.isprintable():
            raise ValueError("a user id holds no control characters")
        return user_id


_PAGE = TypeAdapter(MessagePage)
_ANY_PAGE = TypeAdapter(AnyMessagePage)


def _query(params: MailboxParams, user_id: str | None) -> MailboxQuery:
    after = application.CURSORS.decode(params.cursor) if params.cursor else None
    return MailboxQuery(limit=page_size(params.limit, PAGE_MAX), user_id=user_id, after=after)


@router.get("/notifications", response_model=MessagePage, responses=REFUSED_CURSOR)
async def my_messages(
    params: Annotated[MailboxParams, Query()], user: CurrentUser, uow: Uow, parts: Parts
) -> Response:
    """The caller's messages, newest first, a page at a time."""
    page = await uow.query(application.list_messages, parts.messages, _query(params, user.id))
    return Response(
        _PAGE.dump_json(MessagePage.of(page, MessageOut.model_validate)), media_type=JSON
    )


@router.get("/notifications/all", response_model=AnyMessagePage, responses=REFUSED_CURSOR)
async def every_message(
    params: Annotated[EveryMailboxParams, Query()], _admin: Admin, uow: Uow, parts: Parts
) -> Response:
    """Every user's messages (or one user's), newest first, with their delivery (admin only)."""
    page = await uow.query(
        application.list_messages, parts.messages, _query(params, params.user_id)
    )
    return Response(
        _ANY_PAGE.dump_json(AnyMessagePage.of(page, AnyMessageOut.model_validate)), media_type=JSON
    )


def subscriptions(parts: application.Parts) -> tuple[Subscription, ...]:
    """What notifications listens to: new users, orders that ended, and shipments the carrier
    collected. Each handler only stores the message, in the transaction that records the event
    in the inbox; the parts' ``wakeup`` tells the sender once it is committed."""
    messages, templates, wake = parts.messages, parts.templates, parts.wakeup

    def welcome_user(connection: Connection, event: UserRegistered, _: CloudEvent) -> None:
        application.welcome_user(connection, messages, templates, event.user_id, event.email, wake)

    def tell_order_confirmed(connection: Connection, event: OrderConfirmed, _: CloudEvent) -> None:
        note = domain.order_confirmed(event.order_id, event.user_id, event.total, event.currency)
        application.notify(connection, messages, templates, note, wake)

    def tell_order_cancelled(connection: Connection, event: OrderCancelled, _: CloudEvent) -> None:
        note = domain.order_cancelled(event.order_id, event.user_id, event.reason)
        application.notify(connection, messages, templates, note, wake)

    def tell_shipment_dispatched(
        connection: Connection, event: ShipmentDispatched, _: CloudEvent
    ) -> None:
        note = domain.shipment_dispatched(
            event.shipment_id,
            event.order_id,
            event.user_id,
            event.carrier,
            event.service_level,
            event.tracking_number,
        )
        application.notify(connection, messages, templates, note, wake)

    return (
        Subscription(UserRegistered, welcome_user),
        Subscription(OrderConfirmed, tell_order_confirmed),
        Subscription(OrderCancelled, tell_order_cancelled),
        Subscription(ShipmentDispatched, tell_shipment_dispatched),
    )
