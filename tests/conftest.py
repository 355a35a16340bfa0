"""What the whole-system tests share."""

from __future__ import annotations

import pytest

from agora_tools.harness import SHAPES


@pytest.fixture(scope="module", params=list(SHAPES))
def shape(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """``agora up``'s arguments for one of its shapes (ADR 53): each test that asks for it runs
    against a shop of a process per service, then against one of a single process."""
    return SHAPES[request.param]
