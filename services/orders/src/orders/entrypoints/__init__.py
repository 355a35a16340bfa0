"""Orders' entry points: the HTTP routes (:mod:`.routes`, reading and answering through
:mod:`.schemas`) and the message subscriptions (:mod:`.answers`). Each parses, runs one handler
and answers."""

from orders.entrypoints.answers import subscriptions
from orders.entrypoints.routes import router

__all__ = ["router", "subscriptions"]
