"""The paging cursor codec: a cursor comes back as it was handed out, and anything else a client
makes up is the one InvalidCursor (a 400), never an error deeper in."""

from __future__ import annotations

import base64
import contextlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agora.cursor import INT64_MAX, INT64_MIN, CursorCodec, InvalidCursor


class Order(StrEnum):
    UP = "up"
    DOWN = "-up"


@dataclass(frozen=True)
class Key:
    order: Order
    at: datetime
    rank: int | str
    id: str

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("a row has an id")


CODEC = CursorCodec(Key)
AT = datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC)


def token(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "rank", [0, INT64_MIN, INT64_MAX, "Ärger & Öl", "名前", "tab\tnew\nline", "👨\u200d👩\u200d👧"]
)
def test_a_cursor_comes_back_as_it_was_handed_out(rank: int | str) -> None:
    key = Key(Order.DOWN, AT, rank, "row-1")

    handed_out = CODEC.encode(key)

    assert CODEC.decode(handed_out) == key
    # URL-safe without escaping: it travels in a query string.
    assert set(handed_out) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    )


def test_a_moment_in_another_zone_is_read_as_the_same_moment_in_utc() -> None:
    moment = datetime(2026, 1, 1, 5, tzinfo=timezone(timedelta(hours=5)))

    key = CODEC.decode(token(["up", moment.isoformat(), 1, "r"]))

    assert key.at == datetime(2026, 1, 1, tzinfo=UTC)
    assert key.at.tzinfo == UTC


@pytest.mark.parametrize(
    "made_up",
    [
        "",
        "not base64!",
        "名前",
        "x" * 5000,
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        token({"order": "up"}),
        token([]),
        token(["up", AT.isoformat(), 1]),
        token(["up", AT.isoformat(), 1, "r", "extra"]),
        token(["sideways", AT.isoformat(), 1, "r"]),
        # An integer no 64-bit column holds: it would overflow inside the database driver.
        token(["up", AT.isoformat(), INT64_MAX + 1, "r"]),
        token(["up", AT.isoformat(), INT64_MIN - 1, "r"]),
        token(["up", AT.isoformat(), 10**400, "r"]),
        token(["up", AT.isoformat(), True, "r"]),
        token(["up", AT.isoformat(), 1.5, "r"]),
        token(["up", AT.isoformat(), None, "r"]),
        token(["up", AT.isoformat(), [1], "r"]),
        token(["up", AT.isoformat(), {"a": 1}, "r"]),
        token(["up", "2026-01-01T00:00:00", 1, "r"]),
        token(["up", "yesterday", 1, "r"]),
        token(["up", 1764000000, 1, "r"]),
        token(["up", "0001-01-01T00:00:00+05:00", 1, "r"]),
        token(["up", AT.isoformat(), 1, "r\x00"]),
        token(["up", AT.isoformat(), 1, "\ud800"]),
        token(["up", AT.isoformat(), 1, "r" * 1001]),
        token(["up", AT.isoformat(), 1, ""]),
        base64.urlsafe_b64encode(b"[" * 10_000 + b"]" * 10_000).decode(),
    ],
)
def test_a_cursor_not_handed_out_is_refused(made_up: str) -> None:
    with pytest.raises(InvalidCursor) as refused:
        CODEC.decode(made_up)

    assert refused.value.status == 400
    assert refused.value.type == "/problems/invalid-cursor"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.datetimes(timezones=st.timezones()).map(datetime.isoformat),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(made_up=st.one_of(st.text(), st.binary().map(lambda raw: base64.b64encode(raw).decode())))
def test_any_text_is_a_cursor_or_an_invalid_cursor(made_up: str) -> None:
    with contextlib.suppress(InvalidCursor):
        CODEC.decode(made_up)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(fields=st.lists(json_values, min_size=4, max_size=4) | json_values)
def test_any_json_is_a_valid_key_or_an_invalid_cursor(fields: object) -> None:
    try:
        key = CODEC.decode(token(fields))
    except InvalidCursor:
        return
    assert isinstance(key.rank, str) or INT64_MIN <= key.rank <= INT64_MAX
    assert key.at.tzinfo == UTC
    assert "\x00" not in key.id


def test_a_cursor_holds_only_what_it_can_check() -> None:
    @dataclass
    class Loose:
        anything: object

    with pytest.raises(TypeError):
        CursorCodec(Loose)
