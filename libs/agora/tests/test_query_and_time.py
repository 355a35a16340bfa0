"""Two small things every service's routes and adapters share: empty query parameters count as
absent, and moments read back from SQLite are UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import Field, ValidationError

from agora.db import aware
from agora.query import QueryParams


class Page(QueryParams):
    limit: int = Field(default=50, ge=1, le=100)
    cursor: str | None = None


def test_an_empty_parameter_is_the_parameter_not_given() -> None:
    assert Page.model_validate({"limit": "", "cursor": ""}) == Page(limit=50, cursor=None)
    assert Page.model_validate({"limit": "7", "cursor": "abc"}) == Page(limit=7, cursor="abc")


def test_a_given_value_is_still_checked() -> None:
    with pytest.raises(ValidationError):
        Page.model_validate({"limit": "0"})
    with pytest.raises(ValidationError):
        Page.model_validate({"limit": " "})


def test_a_moment_without_a_zone_is_read_as_utc_and_one_with_a_zone_is_kept() -> None:
    naive = datetime(2026, 11, 24, 12, 0)
    plus_one = datetime(2026, 11, 24, 13, 0, tzinfo=timezone(timedelta(hours=1)))

    assert aware(naive) == datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert aware(plus_one) is plus_one
    assert aware(None) is None
