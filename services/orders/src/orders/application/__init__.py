"""Orders' use cases: placing an order, reading and cancelling it, and moving its checkout on.

Two kinds of handler (docs/service-shape.md). A transaction is a plain function
``handler(connection, orders, ...)`` that the unit of work runs, ``orders`` being the
:class:`Orders` port (the SQL one in production). A step that calls out, :func:`place_order`,
is ``async`` over the unit of work, the :class:`Parts` and one command: it asks the catalog,
payments and cart services first, through their ports, and only then opens its transaction.
"""

from orders.application.checkout import (
    ANSWERS,
    TIMER_BATCH,
    answer,
    cancel_order,
    due_checkouts,
    fire_deadline,
    run_due,
)
from orders.application.placing import Placed, PlaceOrder, find_by_key, place_order, record_order
from orders.application.ports import (
    CartService,
    CatalogService,
    Clock,
    Due,
    DuplicateOrder,
    Follow,
    Listing,
    Orders,
    Parts,
    PaymentsService,
    Viewer,
    utc_now,
)
from orders.application.reading import CURSORS, get_order, list_orders

__all__ = [
    "ANSWERS",
    "CURSORS",
    "TIMER_BATCH",
    "CartService",
    "CatalogService",
    "Clock",
    "Due",
    "DuplicateOrder",
    "Follow",
    "Listing",
    "Orders",
    "Parts",
    "PaymentsService",
    "PlaceOrder",
    "Placed",
    "Viewer",
    "answer",
    "cancel_order",
    "due_checkouts",
    "find_by_key",
    "fire_deadline",
    "get_order",
    "list_orders",
    "place_order",
    "record_order",
    "run_due",
    "utc_now",
]
