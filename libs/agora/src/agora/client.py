"""The client for calling other services (interface; retry and breaker to be completed)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from agora import context
from agora.errors import ServiceUnavailable
from agora.telemetry import inject


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class ServiceClient:
    def __init__(self, service_urls: Mapping[str, Sequence[str]], *, timeout: float = 5.0) -> None:
        self.service_urls = {name: list(urls) for name, urls in service_urls.items()}
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._cursors = {name: itertools.cycle(urls) for name, urls in self.service_urls.items()}

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        service: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Reply:
        if self._session is None:
            await self.start()
        assert self._session is not None
        if service not in self._cursors:
            raise ServiceUnavailable(f"no address known for {service}")
        base = next(self._cursors[service])
        out = dict(headers or {})
        inject(out)
        if (token := context.bearer_token.get()) and "Authorization" not in out:
            out["Authorization"] = f"Bearer {token}"
        data = orjson.dumps(json) if json is not None else None
        if data is not None:
            out.setdefault("Content-Type", "application/json")
        async with self._session.request(method, base + path, data=data, headers=out, params=params) as r:
            return Reply(r.status, dict(r.headers), await r.read())

    async def get_json(self, service: str, path: str) -> Any:
        reply = await self.request(service, "GET", path)
        if reply.status >= 400:
            raise ServiceUnavailable(f"{service} answered {reply.status} to GET {path}")
        return reply.json()

    # The gateway's way through: the caller streams the body in and the reply out.
    # (Signature fixed; retry/breaker rules to be completed.)
    def stream(
        self,
        service: str,
        method: str,
        path_qs: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
    ) -> Any:
        """``async with client.stream(...) as response:`` yields an ``aiohttp.ClientResponse``."""
        if self._session is None:
            raise RuntimeError("start() the client first")
        base = next(self._cursors[service])
        return self._session.request(method, base + path_qs, data=body, headers=list(headers))
