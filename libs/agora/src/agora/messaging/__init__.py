"""Events between services: the outbox, the relay, consumers with an inbox, on NATS JetStream.

What a service's own code uses is here; the relay and the consumers are started by the app
factory (``agora.app.create_service_app``) and need no code of the service's.

``record`` and ``Subscription`` are imported when first asked for: they bring SQLAlchemy, and a
process that reaches this package only for the broker's credentials (``agora status``, the
settings of every process) should not pay for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agora.messaging.envelope import CloudEvent

if TYPE_CHECKING:
    from agora.messaging.outbox import record
    from agora.messaging.subscriptions import Subscription

__all__ = ["CloudEvent", "Subscription", "record"]

_LAZY = {"record": "agora.messaging.outbox", "Subscription": "agora.messaging.subscriptions"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
