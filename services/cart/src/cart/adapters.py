"""Where the carts live (a SQL table, or one Redis hash per user), and the client of the catalog
service that prices them."""

from __future__ import annotations

import json
import zlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

import structlog
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript, Script
from redis.exceptions import RedisError
from redis.retry import Retry
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    func,
    select,
)

from agora.app import Resources
from agora.calls import items
from agora.client import ServiceClient
from agora.columns import timestamp
from agora.db import UnitOfWork, aware
from agora.errors import ServiceUnavailable
from agora.messaging.credentials import without_credentials
from cart.domain import LINES_MAX, Line, Product, TooManyLines

log = structlog.get_logger("cart")

T = TypeVar("T")

metadata = MetaData()

cart_lines = Table(
    "cart_lines",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("sku", String(32), primary_key=True),
    Column("quantity", Integer, nullable=False),
    timestamp("updated_at"),
    CheckConstraint("quantity > 0", name="ck_cart_lines_quantity_positive"),
)

LINE_COLUMNS = (cart_lines.c.sku, cart_lines.c.quantity, cart_lines.c.updated_at)


# --- SQL ---------------------------------------------------------------------------------------


def _lines(connection: Connection, user_id: str, skus: Sequence[str] | None = None) -> list[Line]:
    statement = select(*LINE_COLUMNS).where(cart_lines.c.user_id == user_id)
    if skus is not None:
        # Locked until the transaction ends (PostgreSQL; SQLite runs writers one at a time).
        statement = statement.where(cart_lines.c.sku.in_(skus)).order_by(cart_lines.c.sku)
        statement = statement.with_for_update()
    rows = connection.execute(statement)
    return [Line(row.sku, row.quantity, aware(row.updated_at)) for row in rows]


def _lock_cart(connection: Connection, user_id: str) -> None:
    """On PostgreSQL, one writer at a time per cart, so two new lines at once cannot both pass
    the limit: a row lock cannot hold back the insert of another row. SQLite's write
    transactions run one at a time already."""
    if connection.dialect.name == "postgresql":
        key = zlib.crc32(f"agora-cart:{user_id}".encode())
        connection.execute(select(func.pg_advisory_xact_lock(bindparam("key", key, BigInteger))))


def _put(connection: Connection, user_id: str, line: Line) -> list[Line]:
    _lock_cart(connection, user_id)
    mine = cart_lines.c.user_id == user_id
    this = cart_lines.c.sku == line.sku
    values = {"quantity": line.quantity, "updated_at": line.updated_at}
    if connection.execute(select(cart_lines.c.sku).where(mine, this)).first() is not None:
        connection.execute(cart_lines.update().where(mine, this).values(**values))
    elif connection.execute(select(func.count()).where(mine)).scalar_one() >= LINES_MAX:
        raise TooManyLines()
    else:
        connection.execute(cart_lines.insert().values(user_id=user_id, sku=line.sku, **values))
    return _lines(connection, user_id)


def _delete(connection: Connection, user_id: str, skus: Sequence[str] | None = None) -> None:
    """Delete the user's lines of ``skus``, or every line of theirs."""
    statement = delete(cart_lines).where(cart_lines.c.user_id == user_id)
    if skus is not None:
        statement = statement.where(cart_lines.c.sku.in_(skus))
    connection.execute(statement)


def _remove(connection: Connection, user_id: str, sku: str) -> list[Line]:
    _delete(connection, user_id, [sku])
    return _lines(connection, user_id)


class SqlCarts:
    """The :class:`cart.application.Carts` in the service's database (SQLite or PostgreSQL):
    one ``cart_lines`` row per line, through the app's unit of work, handed over at start-up."""

    def __init__(self) -> None:
        self._uow: UnitOfWork | None = None

    async def start(self, resources: Resources) -> None:
        self._uow = resources.uow

    async def close(self, resources: Resources) -> None:
        self._uow = None

    @property
    def uow(self) -> UnitOfWork:
        if self._uow is None:
            raise ServiceUnavailable("the cart store has not started")
        return self._uow

    async def lines(self, user_id: str) -> list[Line]:
        # A read of a few rows, on every cart page and checkout: on a connection (ADR 56).
        return await self.uow.query(_lines, user_id)

    async def put(self, user_id: str, line: Line) -> list[Line]:
        return await self.uow.run(_put, user_id, line)

    async def remove(self, user_id: str, sku: str) -> list[Line]:
        return await self.uow.run(_remove, user_id, sku)

    async def clear(self, user_id: str) -> None:
        await self.uow.run(_delete, user_id)

    def held(self, connection: Connection, user_id: str, skus: Sequence[str]) -> list[Line]:
        return _lines(connection, user_id, skus)

    def drop(self, connection: Connection, user_id: str, lines: Sequence[Line]) -> None:
        # The rows were locked by ``held``: none of them changed since.
        if lines:
            _delete(connection, user_id, [line.sku for line in lines])


# --- Redis -------------------------------------------------------------------------------------

# KEYS[1] a cart; ARGV the sku, its line, the most lines a cart holds. Nothing (nil) when the
# line is new and the cart is full; the cart after, otherwise.
_PUT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
    and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return false
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('HGETALL', KEYS[1])
"""

# KEYS[1] a cart; ARGV a sku. The cart after.
_REMOVE = """
redis.call('HDEL', KEYS[1], ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""

# KEYS[1] a cart; ARGV sku, line, sku, line...: each goes only if it still holds that line.
_DROP = """
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 0
"""


def _encode(line: Line) -> str:
    value = {"quantity": line.quantity, "updated_at": line.updated_at.isoformat()}
    return json.dumps(value, separators=(",", ":"))


def _decode(sku: str, value: str | bytes) -> Line:
    fields = json.loads(value)
    return Line(sku, int(fields["quantity"]), datetime.fromisoformat(fields["updated_at"]))


def _from_hash(cart: Mapping[Any, Any]) -> list[Line]:
    # The clients answer text (decode_responses), though redis-py types it text or bytes.
    return [_decode(str(sku), value) for sku, value in cart.items()]


def _from_flat(reply: Sequence[Any]) -> list[Line]:
    """The lines of a script's ``HGETALL`` answer: field, value, field, value..."""
    return _from_hash(dict(zip(reply[::2], reply[1::2], strict=True)))


class RedisCarts:
    """The :class:`cart.application.Carts` in Redis: one hash per user,
    ``<prefix>cart:<user id>``, a field per sku holding the line's JSON
    ``{"quantity": 2, "updated_at": "<ISO 8601>"}``.

    Two clients of one Redis: redis-py's asyncio client for the routes, and its blocking client
    for the consumer, whose handler runs synchronously inside the inbox's transaction. Both
    connect on first use. Timeouts are short and a failed command is sent once more (every one
    here can be repeated safely); a Redis that still fails is a 503.
    """

    def __init__(self, url: str, *, prefix: str = "agora:", timeout: float = 0.5) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self._redis: AsyncRedis | None = None
        self._blocking: Redis | None = None
        self._put: AsyncScript | None = None
        self._remove: AsyncScript | None = None
        self._drop: Script | None = None

    def key(self, user_id: str) -> str:
        return f"{self.prefix}cart:{user_id}"

    async def start(self, resources: Resources) -> None:
        options: dict[str, Any] = {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "decode_responses": True,
        }
        self._redis = AsyncRedis.from_url(self.url, retry=AsyncRetry(NoBackoff(), 1), **options)
        self._blocking = Redis.from_url(self.url, retry=Retry(NoBackoff(), 1), **options)
        # Sent by their SHA1 (EVALSHA), and loaded again when the server does not know them.
        self._put = self._redis.register_script(_PUT)
        self._remove = self._redis.register_script(_REMOVE)
        self._drop = self._blocking.register_script(_DROP)

    async def close(self, resources: Resources) -> None:
        if self._redis is not None:
            await self._redis.aclose()
        if self._blocking is not None:
            self._blocking.close()
        self._redis = self._blocking = self._put = self._remove = self._drop = None

    async def ping(self) -> None:
        """Raise unless Redis answers (a readiness check)."""
        await self._client().ping()

    async def lines(self, user_id: str) -> list[Line]:
        with self._answering():
            return _from_hash(await self._client().hgetall(self.key(user_id)))

    async def put(self, user_id: str, line: Line) -> list[Line]:
        script = self._started(self._put)
        with self._answering():
            after = await script(
                keys=[self.key(user_id)], args=[line.sku, _encode(line), LINES_MAX]
            )
        if after is None:
            raise TooManyLines()
        return _from_flat(after)

    async def remove(self, user_id: str, sku: str) -> list[Line]:
        script = self._started(self._remove)
        with self._answering():
            return _from_flat(await script(keys=[self.key(user_id)], args=[sku]))

    async def clear(self, user_id: str) -> None:
        with self._answering():
            await self._client().delete(self.key(user_id))

    def held(self, connection: Connection, user_id: str, skus: Sequence[str]) -> list[Line]:
        if not skus:
            return []
        with self._answering():
            values = self._blocking_client().hmget(self.key(user_id), list(skus))
        return [_decode(sku, value) for sku, value in zip(skus, values, strict=True) if value]

    def drop(self, connection: Connection, user_id: str, lines: Sequence[Line]) -> None:
        if not lines:
            return
        script = self._started(self._drop)
        pairs = [part for line in lines for part in (line.sku, _encode(line))]
        with self._answering():
            script(keys=[self.key(user_id)], args=pairs)

    def _client(self) -> AsyncRedis:
        return self._started(self._redis)

    def _blocking_client(self) -> Redis:
        return self._started(self._blocking)

    @staticmethod
    def _started(part: T | None) -> T:
        if part is None:
            raise ServiceUnavailable("the cart store has not started")
        return part

    @contextmanager
    def _answering(self) -> Iterator[None]:
        try:
            yield
        except RedisError as error:
            log.warning(
                "redis failed",
                redis=without_credentials(self.url),
                error=str(error) or type(error).__name__,
            )
            raise ServiceUnavailable("the cart store (Redis) does not answer") from error


# --- other services ----------------------------------------------------------------------------


class HttpCatalogService:
    """Products from the catalog service: one ``GET /products/batch?sku=...`` per cart shown.

    Every catalog has answered that route since before the cart existed, so a 404 to it says
    that the callee is no catalog this cart can use (a wrong address, a proxy's answer): the
    catalogue is unavailable (503), rather than asked again sku by sku, which would answer every
    product unknown, one call each.
    """

    def __init__(self, client: ServiceClient, service: str = "catalog") -> None:
        self.client = client
        self.service = service

    async def products(self, skus: Collection[str]) -> dict[str, Product]:
        if not skus:
            return {}
        path = "/products/batch?" + urlencode([("sku", sku) for sku in skus])
        found = await items(self.client, self.service, "the catalogue", path, _product, "products")
        wanted = set(skus)
        return {product.sku: product for product in found if product.sku in wanted}


def _product(product: Any) -> Product:
    return Product(
        sku=str(product["sku"]),
        name=str(product["name"]),
        price=int(product["price"]),
        currency=str(product["currency"]),
        active=bool(product["active"]),
    )
