"""What a one-row read costs: catalog's product read by the unit of work (`UnitOfWork.query`,
on a Core connection since ADR 63), against the same handler in an ORM session, as the unit of
work ran every handler before, measured side by side in one process.

It makes a throwaway SQLite database (the embedded profile's store) with catalog's migrations and
shipped seed, then reads the seed's first product with `catalog.application.get_product` each
way in turn, round after round (a warm-up before each measurement). The session way opens an ORM
`Session` per read, as the unit of work did, its statements through `Session.execute` and a
rollback at the end, on a plain engine of its own over the same file: that engine sends no BEGIN
of its own for a read, so if anything the session way costs less here than it did. It prints the
CPU time per read of each way, their medians over the rounds and the median of the rounds'
ratios. It exits non-zero only when a read did not find the product.

    .venv/bin/python bench/unit_of_work.py [--reads 3000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

from sqlalchemy import Connection, create_engine
from sqlalchemy.orm import Session

from agora.db import UnitOfWork
from agora.migrations import upgrade
from catalog import application
from catalog.adapters import SqlProducts, load_seed
from catalog.bootstrap import MIGRATIONS
from catalog.domain import Product


async def _cpu_per_call(call: Callable[[], Awaitable[Product]], sku: str, count: int) -> float:
    """CPU microseconds per call, after a warm-up of a tenth as many."""
    for _ in range(max(1, count // 10)):
        await call()
    started = time.process_time()
    for _ in range(count):
        if (await call()).sku != sku:
            raise SystemExit("a read did not find the product")
    return (time.process_time() - started) / count * 1e6


async def run(reads: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="agora-bench-") as scratch:
        url = f"sqlite:///{Path(scratch) / 'catalog.db'}"
        upgrade(url, MIGRATIONS)
        uow = UnitOfWork(url, source="catalog")
        store = SqlProducts()
        seed = load_seed()
        await uow.run(application.seed_catalogue, store, seed)
        sku = seed.products[0].sku
        engine = create_engine(url)

        async def in_session() -> Product:
            with Session(bind=engine, expire_on_commit=False) as session:
                try:
                    # A session executes statements as a connection does; the handler only
                    # executes statements.
                    return application.get_product(cast(Connection, session), store, sku)
                finally:
                    session.rollback()

        ways: dict[str, Callable[[], Awaitable[Product]]] = {
            "session": in_session,
            "unit of work": lambda: uow.query(application.get_product, store, sku),
        }
        results: dict[str, list[float]] = {name: [] for name in ways}
        print(f"catalog's product read, {reads} reads a way, {rounds} rounds, SQLite")
        print(f"{'round':<8}{'way':<20}{'CPU µs a read':>14}")
        for round_ in range(1, rounds + 1):
            for name, call in ways.items():
                results[name].append(await _cpu_per_call(call, sku, reads))
                print(f"{round_:<8}{name:<20}{results[name][-1]:>14.0f}")
        await uow.dispose()
        engine.dispose()
    for name, figures in results.items():
        print(f"{'median':<8}{name:<20}{statistics.median(figures):>14.0f}")
    session, connection = results.values()
    ratio = statistics.median(c / s for s, c in zip(session, connection, strict=True))
    print(f"unit of work/session CPU per read: {ratio:.2f}x (median of the rounds' ratios)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=3000, help="reads a way and round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    args = parser.parse_args()
    asyncio.run(run(args.reads, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
