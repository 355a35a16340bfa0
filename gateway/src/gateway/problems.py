"""Problem details answered by the gateway's own middleware (the proxy, the check of ended
tokens), which refuses a request before any route sees it."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request

from agora.app import problem_response
from agora.errors import Problem
from agora.middleware import Receive, Scope, Send


async def send_problem(
    scope: Scope,
    receive: Receive,
    send: Send,
    problem: Problem,
    *,
    headers: Mapping[str, str] | None = None,
) -> None:
    """What the app's problem handler would answer for ``problem``, without going through the
    app; ``headers`` in place of the problem's own when given."""
    answer = problem_response(
        Request(scope),
        problem.status,
        problem.title,
        detail=problem.detail,
        type_=problem.type,
        headers=problem.headers if headers is None else headers,
    )
    await answer(scope, receive, send)
