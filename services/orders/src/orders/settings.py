"""The orders service's settings: its own read ``AGORA_ORDERS_*``, the shared ones ``AGORA_*``.

Times are in seconds.
"""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from pydantic import Field

from agora.settings import ServiceSettings
from orders.domain import Rules


class OrdersSettings(ServiceSettings):
    service_name: ClassVar[str] = "orders"
    model_config = ServiceSettings.prefixed("AGORA_ORDERS_")

    # How long a checkout step waits for its answer before the saga acts (resends or compensates).
    step_timeout: float = Field(default=5.0, gt=0)
    # ReserveStock / AuthorizePayment are sent at most this many times before the saga gives up.
    reserve_attempts: int = Field(default=3, ge=1)
    authorize_attempts: int = Field(default=3, ge=1)
    # Pause after a PaymentFailed before the authorization is tried again.
    retry_backoff: float = Field(default=0.5, ge=0)
    # Steps that must eventually succeed (commit and capture, the compensations) are resent for
    # ever, the wait doubling from step_timeout up to this.
    completion_backoff_max: float = Field(default=30.0, gt=0)
    # How often the deadline timer looks for checkouts whose deadline has passed.
    timer_interval: float = Field(default=0.25, gt=0)
    # By then an order should be CONFIRMED or CANCELLED; the consistency checker reports those
    # that are not (an order's `deadline_at`).
    saga_deadline: float = Field(default=60.0, gt=0)
    # Admission: how many checkouts may be under way at once, across the replicas (a placement
    # counts them first). Past it a new order is refused, 503 with Retry-After:
    # busy_retry_after, instead of lengthening every checkout's wait until steps time out and
    # are undone. Size it as checkouts a second at saturation times the wait you accept.
    max_in_flight: int = Field(default=250, ge=1)
    busy_retry_after: float = Field(default=1.0, gt=0)
    # GET /orders/{id}/events: how often a stream looks at its order when no commit in this
    # process woke it (another replica moved the checkout on), the comment line that keeps idle
    # proxies from closing it, and the longest one stream stays open (the client reconnects).
    events_poll: float = Field(default=0.5, gt=0)
    events_keepalive: float = Field(default=15.0, gt=0)
    events_max_seconds: float = Field(default=300.0, gt=0)

    def rules(self) -> Rules:
        return Rules(
            step_timeout=timedelta(seconds=self.step_timeout),
            reserve_attempts=self.reserve_attempts,
            authorize_attempts=self.authorize_attempts,
            retry_backoff=timedelta(seconds=self.retry_backoff),
            backoff_max=timedelta(seconds=self.completion_backoff_max),
            saga_deadline=timedelta(seconds=self.saga_deadline),
            max_in_flight=self.max_in_flight,
            busy_retry_after=timedelta(seconds=self.busy_retry_after),
        )
