"""Events between services: the outbox, the relay, consumers with an inbox, on NATS JetStream.

What a service's own code uses is here; the relay and the consumers are started by the app
factory (``agora.app.create_service_app``) and need no code of the service's.
"""

from agora.messaging.envelope import CloudEvent
from agora.messaging.outbox import record
from agora.messaging.subscriptions import Subscription

__all__ = ["CloudEvent", "Subscription", "record"]
