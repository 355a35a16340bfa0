"""What a one-row read costs the unit of work: catalog's product read in an ORM session
(`UnitOfWork.query`) against the same read on a Core connection (`UnitOfWork.read`), measured
side by side in one process.

It makes a throwaway SQLite database (the embedded profile's store) with catalog's tables and one
product, then runs `catalog.application.get_product` through each way in turn, round after round
(a warm-up before each measurement), and prints the CPU time per read of each, their medians over
the rounds and the median of the per-round ratios. It exits non-zero only when a read did not
find the product.

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
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert
from sqlalchemy.orm import Session

from agora.db import UnitOfWork
from catalog import application
from catalog.adapters import SqlProducts, categories, metadata, products
from catalog.domain import Product, name_key, search_text

SKU = "BENCH-1"


def _create(session: Session) -> None:
    metadata.create_all(session.connection())
    now = datetime.now(UTC)
    session.execute(insert(categories).values(slug="bench", name="Bench"))
    session.execute(
        insert(products).values(
            sku=SKU,
            name="Bench kettle",
            name_key=name_key("Bench kettle"),
            search_text=search_text("Bench kettle", "Boils."),
            description="Boils.",
            price=2990,
            currency="EUR",
            category="bench",
            image_url=None,
            active=True,
            created_at=now,
            updated_at=now,
        )
    )


async def _cpu_per_call(call: Callable[[], Awaitable[Product]], count: int) -> float:
    """CPU microseconds per call, after a warm-up of a tenth as many."""
    for _ in range(max(1, count // 10)):
        await call()
    started = time.process_time()
    for _ in range(count):
        if (await call()).sku != SKU:
            raise SystemExit("a read did not find the product")
    return (time.process_time() - started) / count * 1e6


async def run(reads: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="agora-bench-") as scratch:
        uow = UnitOfWork(f"sqlite:///{Path(scratch) / 'catalog.db'}")
        await uow.run(_create)
        store = SqlProducts()
        ways: dict[str, Callable[[], Awaitable[Product]]] = {
            "session (query)": lambda: uow.query(application.get_product, store, SKU),
            "connection (read)": lambda: uow.read(application.get_product, store, SKU),
        }
        results: dict[str, list[float]] = {name: [] for name in ways}
        print(f"catalog's product read, {reads} reads a way, {rounds} rounds, SQLite")
        print(f"{'round':<8}{'way':<20}{'CPU µs a read':>14}")
        for round_ in range(1, rounds + 1):
            for name, call in ways.items():
                results[name].append(await _cpu_per_call(call, reads))
                print(f"{round_:<8}{name:<20}{results[name][-1]:>14.0f}")
        await uow.dispose()
    for name, figures in results.items():
        print(f"{'median':<8}{name:<20}{statistics.median(figures):>14.0f}")
    session, connection = results.values()
    ratio = statistics.median(c / s for s, c in zip(session, connection, strict=True))
    print(f"connection/session CPU per read: {ratio:.2f}x (median of the rounds' ratios)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=3000, help="reads a way and round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    args = parser.parse_args()
    asyncio.run(run(args.reads, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
