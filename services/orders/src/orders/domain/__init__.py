"""Orders and the checkout saga's rules.

Plain Python: no framework, no I/O. An order is priced from the catalogue's answer
(:mod:`.placing`), its card is held only as a token (:mod:`.order`), and its checkout is a state
machine (:mod:`.checkout`). The other rooms import these names from here.
"""

from orders.domain.checkout import (
    Checkout,
    CheckoutsBusy,
    Command,
    Commands,
    OrderCharged,
    Reason,
    Rules,
    Status,
    Step,
)
from orders.domain.order import (
    PAGE_DEFAULT,
    PAGE_MAX,
    Address,
    Card,
    Cursor,
    Line,
    Order,
    OrderNotFound,
    Requested,
)
from orders.domain.placing import (
    COUNTRY_PATTERN,
    LINES_MAX,
    QUANTITY_MAX,
    SKU_PATTERN,
    CartNotOrderable,
    EmptyCart,
    IdempotencyKeyReused,
    InvalidCard,
    MixedCurrencies,
    Priced,
    ProductUnavailable,
    card_digits,
    fingerprint,
    from_cart,
    luhn,
    price,
)

__all__ = [
    "COUNTRY_PATTERN",
    "LINES_MAX",
    "PAGE_DEFAULT",
    "PAGE_MAX",
    "QUANTITY_MAX",
    "SKU_PATTERN",
    "Address",
    "Card",
    "CartNotOrderable",
    "Checkout",
    "CheckoutsBusy",
    "Command",
    "Commands",
    "Cursor",
    "EmptyCart",
    "IdempotencyKeyReused",
    "InvalidCard",
    "Line",
    "MixedCurrencies",
    "Order",
    "OrderCharged",
    "OrderNotFound",
    "Priced",
    "ProductUnavailable",
    "Reason",
    "Requested",
    "Rules",
    "Status",
    "Step",
    "card_digits",
    "fingerprint",
    "from_cart",
    "luhn",
    "price",
]
