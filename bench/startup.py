"""How long `agora up` takes until every process is ready, and how much memory each then holds.

Each round runs `agora up` in a fresh temporary directory (a new `.agora/`: databases made and
migrated, secrets and broker passwords written, streams made) with ``PYTHONDONTWRITEBYTECODE=1``,
as on a machine that never writes bytecode at run time, and times it from the command's start
until the broker takes connections and every service replica and the gateway answer 200 on
``/readyz`` (probed here, every 50 ms, not taken from the runner's word). It also notes when the
runner printed that the system is up. Then it stops the system (SIGTERM) and starts the next
round. The target is 10 s, warm: installed, byte-compiled (`make sync`), packages built.

After the last round's start it places one order through the gateway (a new customer, a product
stocked by the shop's admin), waits until it is CONFIRMED, and prints every process's resident
memory (VmRSS from /proc); the target there is 80 MB per service process. Each round also says
how much CPU `agora up` had spent when all was ready (the runner, the migrations, every process),
which the machine's other load does not stretch as it does the seconds.

Before the rounds, the packages of services in another language are brought up to date (as
`agora up` does on its first run), so that no round pays for a build.

    .venv/bin/python bench/startup.py [--rounds 3] [--no-order] [--together]

``--together`` runs every Python service and the gateway in one process (ADR 53): the targets
there are 5 s to all ready, and 300 MB resident in all, the runner included.

To time an earlier commit, run this file with that commit's environment, which runs that commit's
`agora` (the `agora` beside the Python running the bench):

    /tmp/before/.venv/bin/python bench/startup.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from agora.topology import find_topology_file, load_topology
from agora_tools import runtimes
from agora_tools.harness import (
    ADDRESS,
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    APPROVED,
    SHAPES,
    RunningSystem,
    shop_settings,
)

from procstat import cpu_seconds, rss_mb

TARGET_SECONDS = 10.0
TARGET_RSS_MB = 80.0
TOGETHER_SECONDS = 5.0
TOGETHER_RSS_MB = 300.0
NATS = "nats"


def build_packages() -> None:
    """Bring every non-Python service's package up to date, untimed."""
    path = find_topology_file()
    for service in load_topology(path).services.values():
        for argv in runtimes.build_steps(service, path.parent):
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def expected_processes() -> int:
    """The broker, every service replica and the gateway."""
    topology = load_topology(find_topology_file())
    return 1 + sum(service.replicas for service in topology.services.values()) + 1


async def _ready(session: aiohttp.ClientSession, process: dict[str, Any]) -> bool:
    if process["service"] == NATS:
        host, port = process["url"].removeprefix("nats://").rsplit(":", 1)
        try:
            _, writer = await asyncio.open_connection(host.rsplit("@", 1)[-1], int(port))
        except OSError:
            return False
        writer.close()
        return True
    try:
        async with session.get(f"{process['url']}/readyz") as reply:
            return reply.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def wait_all_ready(
    system: RunningSystem, count: int, started: float
) -> tuple[float, dict[str, float]]:
    """Seconds from ``started`` until ``count`` processes are listed and all are ready, and the
    CPU seconds spent by then."""
    state_file = system.directory / ".agora" / "state.json"
    timeout = aiohttp.ClientTimeout(total=1)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() - started < 300:
            if system.process is not None and system.process.poll() is not None:
                raise RuntimeError(f"agora up exited early:\n{system.printed()}")
            try:
                processes = json.loads(state_file.read_text())["processes"]
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                processes = []
            if len(processes) == count:
                answers = await asyncio.gather(*(_ready(session, p) for p in processes))
                if all(answers):
                    ready = time.monotonic() - started
                    assert system.process is not None
                    return ready, cpu_spent(system.process.pid, processes)
            await asyncio.sleep(0.05)
    raise RuntimeError(f"not every process was ready after 300 s:\n{system.printed()}")


async def place_one_order(url: str) -> str:
    """A new customer's order of one stocked product, waited for until it is CONFIRMED."""
    async with aiohttp.ClientSession() as session:

        async def token(email: str, password: str) -> str:
            body = {"email": email, "password": password}
            async with session.post(f"{url}/api/identity/token", json=body) as reply:
                assert reply.status == 200, await reply.text()
                return str((await reply.json())["access_token"])

        admin = await token(ADMIN_EMAIL, ADMIN_PASSWORD)
        async with session.get(f"{url}/api/catalog/products?limit=1") as reply:
            sku = (await reply.json())["items"][0]["sku"]
        async with session.post(
            f"{url}/api/inventory/stock/{sku}/adjustments",
            json={"delta": 10, "reason": "startup bench"},
            headers={"authorization": f"Bearer {admin}"},
        ) as reply:
            assert reply.status == 200, await reply.text()
        email, password = f"start-{uuid.uuid4().hex[:10]}@example.com", uuid.uuid4().hex
        body = {"email": email, "password": password}
        async with session.post(f"{url}/api/identity/users", json=body) as reply:
            assert reply.status == 201, await reply.text()
        customer = {"authorization": f"Bearer {await token(email, password)}"}
        order = {
            "lines": [{"sku": sku, "quantity": 1}],
            "shipping_address": ADDRESS,
            "card_number": APPROVED,
        }
        headers = {**customer, "idempotency-key": uuid.uuid4().hex}
        async with session.post(f"{url}/api/orders", json=order, headers=headers) as reply:
            assert reply.status in {200, 201, 202}, await reply.text()
            order_id = (await reply.json())["id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            async with session.get(f"{url}/api/orders/{order_id}", headers=customer) as reply:
                status = str((await reply.json())["status"])
            if status in {"CONFIRMED", "CANCELLED"}:
                return status
            await asyncio.sleep(0.2)
        return status


def cpu_spent(runner: int, processes: list[dict[str, Any]]) -> dict[str, float]:
    """CPU seconds `agora up` has spent so far, by whom: the runner itself, its children that
    ended (the migrations; the kernel adds them to the runner's), and each running process. A
    figure the machine's other load stretches less than the seconds to ready."""
    try:
        fields = Path(f"/proc/{runner}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return {}
    tick = os.sysconf("SC_CLK_TCK")
    spent = {
        "runner": (int(fields[11]) + int(fields[12])) / tick,  # utime, stime
        "ended (migrations, builds)": (int(fields[13]) + int(fields[14])) / tick,
    }
    for name, pid in each_process(processes).items():
        if (cpu := cpu_seconds(pid)) is not None:
            spent[name] = cpu
    return spent


def each_process(processes: list[dict[str, Any]]) -> dict[str, int]:
    """Each running process of the state's rows, once: a group's, whose members are rows of
    their own with its pid, by the group's name."""
    return {
        p["group"] if p.get("group") else f"{p['service']}[{p['replica']}]": int(p["pid"])
        for p in processes
        if p.get("pid") is not None
    }


def one_round(
    count: int, order: bool, shape: tuple[str, ...] = ()
) -> tuple[float, float | None, float | None]:
    """Seconds to all ready, CPU seconds spent by then, and seconds to the runner's own "up"
    line (None if it never said so)."""
    env = {
        **os.environ,
        **shop_settings(ADMIN_EMAIL, ADMIN_PASSWORD),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    with tempfile.TemporaryDirectory(prefix="agora-startup-") as directory:
        system = RunningSystem(Path(directory) / "shop", *shape, env=env)
        started = time.monotonic()
        with system:
            ready, spent = asyncio.run(wait_all_ready(system, count, started))
            cpu = sum(spent.values()) if spent else None
            said = None
            while said is None and time.monotonic() - started < ready + 30:
                if f"Gateway: {system.gateway_url}" in system.printed():
                    said = time.monotonic() - started
                else:
                    time.sleep(0.05)
            if order:
                for who, seconds in spent.items():
                    print(f"  CPU until ready, {who}: {seconds:.2f} s")
                status = asyncio.run(place_one_order(system.gateway_url))
                print(f"  one order went through: {status}")
                state = json.loads((system.directory / ".agora/state.json").read_text())
                assert system.process is not None
                resident = {"runner": rss_mb(system.process.pid)}
                resident.update(
                    (name, rss_mb(pid)) for name, pid in each_process(state["processes"]).items()
                )
                for name, mb in resident.items():
                    shown = f"{mb:6.1f} MB" if mb is not None else "      ?"
                    print(f"  VmRSS {name}: {shown}")
                total = sum(mb for mb in resident.values() if mb is not None)
                print(f"  VmRSS in all: {total:.1f} MB")
                if shape:
                    met = "met" if total <= TOGETHER_RSS_MB else "MISSED"
                    print(f"  (target ≤ {TOGETHER_RSS_MB:g} MB in all: {met})")
                else:
                    services = [mb for name, mb in resident.items() if name != "runner" and mb]
                    met = "met" if max(services) <= TARGET_RSS_MB else "MISSED"
                    print(f"  (target ≤ {TARGET_RSS_MB:g} MB per process: {met})")
            system.stop()
    return ready, cpu, said


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-order", action="store_true", help="skip the order and the VmRSS")
    parser.add_argument(
        "--together", action="store_true", help="every Python service in one process (ADR 53)"
    )
    args = parser.parse_args()
    shape = SHAPES["together"] if args.together else SHAPES["apart"]
    target = TOGETHER_SECONDS if args.together else TARGET_SECONDS
    build_packages()
    count = expected_processes()
    readies: list[float] = []
    cpus: list[float] = []
    for round_ in range(1, args.rounds + 1):
        last = round_ == args.rounds
        ready, cpu, said = one_round(count, order=last and not args.no_order, shape=shape)
        readies.append(ready)
        cpus += [cpu] if cpu is not None else []
        spent = f", {cpu:.1f} s of CPU" if cpu is not None else ""
        told = f"; the runner said so at {said:.1f} s" if said is not None else ""
        print(f"round {round_}: all {count} processes ready in {ready:.1f} s{spent}{told}")
    median = statistics.median(readies)
    met = "met" if median <= target else "MISSED"
    print(f"agora up, all ready (median of {len(readies)}): {median:.1f} s", end="")
    print(f", CPU {statistics.median(cpus):.1f} s" if cpus else "")
    print(f"(target ≤ {target:g} s: {met}; {os.cpu_count()} cores; {sys.executable})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
