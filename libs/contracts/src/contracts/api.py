"""What the services' HTTP APIs promise the callers that build on them (the gateway's pages):
their limits and the names of the states they answer with, so that a caller reads each rule here
rather than restating it. Not an integration event: the package's publishers skip this module.
"""

from __future__ import annotations

from enum import StrEnum

# orders: `POST /orders` takes an Idempotency-Key of 1 to this many printable characters.
IDEMPOTENCY_KEY_MAX = 200
# cart: a line holds 0 (it goes) to this many units; orders takes no more per line.
QUANTITY_MAX = 100


class OrderStatus(StrEnum):
    """An order's ``status`` in orders' answers: PENDING until it ends, once, CONFIRMED or
    CANCELLED."""

    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"


class CheckoutStep(StrEnum):
    """An order's ``checkout.step`` in orders' answers and status events: the step under way,
    in the order the checkout takes them; ``compensating`` gives back what it took, ``done``
    is the end."""

    RESERVING = "reserving"
    AUTHORIZING = "authorizing"
    COMPLETING = "completing"
    COMPENSATING = "compensating"
    DONE = "done"
