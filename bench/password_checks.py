"""How many password checks a second identity sustains: the former argon2id cost against the
current one, measured back to back in one run.

Each round verifies a password against a hash of each cost, on as many worker threads as
identity's gate lets run at once (``AGORA_IDENTITY_HASH_CONCURRENCY``, 2 by default), for a fixed
time; the rounds alternate between the two costs so both meet the same machine load. It prints
checks per second per round, their medians and the ratio current/former. The former cost
(64 MiB, t=3, p=4: argon2-cffi's default) managed 6 to 7 a second on two cores, so one client at 15
logins a second queued every other login into timeouts (ADR 20).

    .venv/bin/python bench/password_checks.py [--seconds 3] [--rounds 3] [--threads 2]

It measures in the environment it is run in. identity's processes start with glibc's tunables
from its ``environment`` in ``topology.toml`` (ADR 65), which cost a check about 7 % more CPU;
run it with them for identity's own figure:

    env GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4194304:glibc.malloc.hugetlb=1 \
        .venv/bin/python bench/password_checks.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from identity.adapters import Argon2Passwords
from identity.settings import IdentitySettings

PASSWORD = "correct horse battery staple"  # noqa: S105 -- a benchmark's input, not a secret


@dataclass(frozen=True)
class Cost:
    name: str
    passwords: Argon2Passwords


def checks_per_second(cost: Cost, *, seconds: float, threads: int) -> float:
    stored = cost.passwords.hash(PASSWORD)
    deadline = time.perf_counter() + seconds

    def check_until_deadline() -> int:
        done = 0
        while time.perf_counter() < deadline:
            if not cost.passwords.verify(stored, PASSWORD):
                raise RuntimeError("a right password was refused")
            done += 1
        return done

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        done = sum(pool.map(lambda _: check_until_deadline(), range(threads)))
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=IdentitySettings().hash_concurrency)
    options = parser.parse_args()
    settings = IdentitySettings()
    costs = [
        Cost(
            "former (64 MiB, t=3, p=4)",
            Argon2Passwords(time_cost=3, memory_cost=65536, parallelism=4),
        ),
        Cost(
            f"current ({settings.argon2_memory_kib // 1024} MiB, t={settings.argon2_time_cost}, "
            f"p={settings.argon2_parallelism})",
            Argon2Passwords(
                time_cost=settings.argon2_time_cost,
                memory_cost=settings.argon2_memory_kib,
                parallelism=settings.argon2_parallelism,
            ),
        ),
    ]
    rates: dict[str, list[float]] = {cost.name: [] for cost in costs}
    for round_ in range(1, options.rounds + 1):
        for cost in costs:
            rate = checks_per_second(cost, seconds=options.seconds, threads=options.threads)
            rates[cost.name].append(rate)
            print(f"round {round_}  {cost.name:32}  {rate:7.1f} checks/s")
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, median in medians.items():
        print(f"median   {name:32}  {median:7.1f} checks/s")
    former, current = (medians[cost.name] for cost in costs)
    print(f"current/former: {current / former:.1f}x on {options.threads} threads")


if __name__ == "__main__":
    main()
