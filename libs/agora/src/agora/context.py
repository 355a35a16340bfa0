"""What the current request carries, for code far from the request object (logs, outgoing calls)."""

from __future__ import annotations

from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("agora_request_id", default=None)
# The caller's bearer token, passed on when this service calls another on the caller's behalf.
bearer_token: ContextVar[str | None] = ContextVar("agora_bearer_token", default=None)
