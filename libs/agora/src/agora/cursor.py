"""Opaque paging cursors: one codec for the ``next_cursor`` of every listing.

A listing pages by key (keyset paging): its cursor is the key of the last row of a page, which the
client hands back to get the next. A service states that key as a dataclass of its domain
(``Cursor(placed_at, id)``); on the wire it is the dataclass's fields as a JSON array, in
base64url without padding, so it travels in a query string unescaped.

A cursor comes back from anyone, so :meth:`CursorCodec.decode` trusts nothing in it: bad base64,
bad JSON, another shape, a field of another type, an integer outside a signed 64-bit column
(SQLite's and PostgreSQL's ``bigint``), a string too long or holding a NUL, a moment
without a time zone, or a key the dataclass itself refuses (its ``__post_init__`` raising
``ValueError``) — each is the one :class:`InvalidCursor`, a 400 problem, before any of it reaches
a query (ADR 0023).
"""

from __future__ import annotations

import base64
import dataclasses
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import (
    Annotated,
    Any,
    Generic,
    Self,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

from pydantic import AfterValidator, AwareDatetime, BaseModel, Field, TypeAdapter

from agora.errors import Problem

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# Longer than any key a listing here pages by: a product's name key is its name (200 characters
# at most) case-folded, which may triple it ("ﬃ" is "ffi").
TEXT_MAX = 1000
# The longest token decoded at all: room for every field at its longest, in any script.
TOKEN_MAX = 4096

C = TypeVar("C")
T = TypeVar("T")
R = TypeVar("R")

# What a listing route says of its 400 in the document: ``responses=REFUSED_CURSOR``.
REFUSED_CURSOR: dict[int | str, dict[str, Any]] = {
    400: {"description": "A cursor this listing did not hand out."}
}


class InvalidCursor(Problem, status=400, title="Invalid cursor"):
    def __init__(self, detail: str = "the cursor is not one this service handed out") -> None:
        super().__init__(detail)


def _storable(text: str) -> str:
    # PostgreSQL refuses a NUL in text, and a lone surrogate is no UTF-8 at all: either would
    # fail inside the query rather than here. Anything else may be in a key (a product's name).
    if "\x00" in text or any("\ud800" <= char <= "\udfff" for char in text):
        raise ValueError("a cursor's text holds no NUL and no lone surrogate")
    return text


def _in_utc(moment: datetime) -> datetime:
    # Stored moments are UTC; one that has no UTC reading (year 1 at +05:00) is no key of ours.
    try:
        return moment.astimezone(UTC)
    except OverflowError as error:
        raise ValueError("the moment has no UTC reading") from error


Int64 = Annotated[int, Field(strict=True, ge=INT64_MIN, le=INT64_MAX)]
Text = Annotated[str, Field(strict=True, max_length=TEXT_MAX), AfterValidator(_storable)]
Moment = Annotated[AwareDatetime, AfterValidator(_in_utc)]


def _checked(hint: Any) -> Any:
    """The checked form of a key field's type: what a decoded value must be to pass."""
    if hint is int:
        return Int64
    if hint is str:
        return Text
    if hint is datetime:
        return Moment
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint
    if get_origin(hint) in (Union, types.UnionType):
        return Union[tuple(_checked(arg) for arg in get_args(hint))]  # noqa: UP007 (X | Y takes no tuple)
    raise TypeError(f"a cursor holds ints, strings, moments and enums, not {hint!r}")


class CursorCodec(Generic[C]):
    """Turns a listing's key (a dataclass) into an opaque token and back.

    ``CursorCodec(Cursor).encode(Cursor(placed_at, order_id))`` is the ``next_cursor`` to hand
    out; ``decode(token)`` the ``Cursor`` again, or :class:`InvalidCursor`.
    """

    def __init__(self, kind: type[C]) -> None:
        if not dataclasses.is_dataclass(kind):
            raise TypeError(f"a cursor is a dataclass, not {kind!r}")
        hints = get_type_hints(kind)
        self._kind = kind
        self._names = [field.name for field in dataclasses.fields(kind)]
        shape: Any = tuple.__class_getitem__(tuple(_checked(hints[name]) for name in self._names))
        self._fields: TypeAdapter[tuple[Any, ...]] = TypeAdapter(shape)

    def encode(self, cursor: C) -> str:
        raw = self._fields.dump_json(tuple(getattr(cursor, name) for name in self._names))
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def decode(self, token: str) -> C:
        if len(token) > TOKEN_MAX:
            raise InvalidCursor
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            fields = self._fields.validate_json(raw, strict=True)
            # The dataclass's own rules (a sku's pattern, a key that fits its sort) come last.
            return self._kind(*fields)
        except (ValueError, TypeError) as error:
            # binascii.Error and pydantic's ValidationError are ValueErrors too.
            raise InvalidCursor from error


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing: its rows, and the cursor of the next page (None on the last)."""

    items: list[T]
    next_cursor: str | None


class PageOut(BaseModel, Generic[T]):
    """A page of a listing as the API answers it: ``{items, next_cursor}``.

    A service names its page once, so the document's schema is named for the listing::

        class ProductPage(PageOut[ProductOut]):
            pass

    and answers ``ProductPage.of(page, ProductOut.model_validate)``.
    """

    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )

    @classmethod
    def of(cls, page: Page[R], convert: Callable[[R], T]) -> Self:
        """``page``'s rows, each ``convert``ed to what the API shows, and its cursor."""
        return cls(items=[convert(row) for row in page.items], next_cursor=page.next_cursor)


def page_size(limit: int, most: int) -> int:
    """A requested page size, clamped to the largest page a listing hands out (``most``)."""
    if limit < 1:
        raise ValueError("a page holds at least one row")
    return min(limit, most)


def paged(codec: CursorCodec[C], rows: Sequence[T], limit: int, key: Callable[[T], C]) -> Page[T]:
    """The page of ``rows``, fetched with one row more than ``limit``: that row, when it came,
    says that another page follows, which starts after the ``key`` of this page's last row."""
    items = list(rows[:limit])
    more = len(rows) > limit
    return Page(items, codec.encode(key(items[-1])) if more else None)
