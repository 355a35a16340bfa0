"""The read path's cost: `GET /api/catalog/products/{sku}` through the gateway against
`GET /products/{sku}` straight to catalog, measured in one run.

It starts identity, catalog and the gateway as processes of their own (uvicorn with uvloop and
httptools, as `agora serve` runs them) on free ports with a throwaway data directory and the rate
limit raised out of the way, waits until each is ready, then drives each path from a separate
load-generating process (aiohttp, keep-alive connections, a warm-up before each measurement) and
prints requests per second, p50 and p99 latency, and the ratio gateway/direct. The target is that
the gateway keeps at least half of the direct throughput; missing it is reported, not an error.
It exits non-zero only when something failed: a process that did not start, a request that did
not get a 200.

    .venv/bin/python bench/read_path.py [--seconds 5] [--warmup 1] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from agora_tools.testing import free_port

from procstat import cpu_seconds

ROOT = Path(__file__).resolve().parents[1]
READY_WITHIN = 40.0  # seconds for all three processes to answer /readyz (first start seeds)
TARGET = 0.5


@dataclass
class Process:
    name: str
    url: str
    popen: subprocess.Popen[bytes]
    log: Path


def start(name: str, module: str, port: int, env: dict[str, str], logs: Path) -> Process:
    log = logs / f"{name}.log"
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        f"{module}:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--lifespan",
        "on",
    ]
    with log.open("wb") as out:
        popen = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    return Process(name, f"http://127.0.0.1:{port}", popen, log)


def wait_ready(processes: list[Process]) -> None:
    deadline = time.monotonic() + READY_WITHIN
    waiting = list(processes)
    while waiting:
        for process in list(waiting):
            if process.popen.poll() is not None:
                raise RuntimeError(f"{process.name} exited with {process.popen.returncode}")
            try:
                # The URLs are built here (http://127.0.0.1 only): no other scheme can come in.
                with urllib.request.urlopen(f"{process.url}/readyz", timeout=1) as reply:  # noqa: S310 (http on loopback)
                    if reply.status == 200:
                        waiting.remove(process)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
        if waiting and time.monotonic() > deadline:
            names = ", ".join(p.name for p in waiting)
            raise RuntimeError(f"not ready within {READY_WITHIN:g} s: {names}")
        time.sleep(0.1)


def stop(processes: list[Process]) -> None:
    for process in processes:
        if process.popen.poll() is None:
            process.popen.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait()


def first_sku(catalog_url: str) -> str:
    with urllib.request.urlopen(f"{catalog_url}/products?limit=1", timeout=5) as reply:  # noqa: S310 (http on loopback)
        items = json.load(reply)["items"]
    if not items:
        raise RuntimeError("the catalog has no products: was the seed loaded?")
    return str(items[0]["sku"])


# --- the load generator (runs in a process of its own) --------------------------------------


async def drive(
    url: str, seconds: float, warmup: float, connections: int, pids: dict[str, int]
) -> dict[str, Any]:
    latencies: list[float] = []
    failures: dict[str, int] = {}
    sent = 0
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(until: float, record: bool) -> None:
            nonlocal sent
            while (now := time.perf_counter()) < until:
                sent += 1
                try:
                    async with session.get(url) as reply:
                        await reply.read()
                        status = reply.status
                except (aiohttp.ClientError, TimeoutError) as error:
                    status = 0
                    failures[type(error).__name__] = failures.get(type(error).__name__, 0) + 1
                if not record:
                    continue
                if status == 200:
                    latencies.append(time.perf_counter() - now)
                elif status:
                    failures[str(status)] = failures.get(str(status), 0) + 1

        until = time.perf_counter() + warmup
        await asyncio.gather(*(worker(until, False) for _ in range(connections)))
        started = time.perf_counter()
        until = started + seconds
        await asyncio.gather(*(worker(until, True) for _ in range(connections)))
        elapsed = time.perf_counter() - started
    cpu_us = {}
    for name, pid in pids.items():
        before, after = cpu_before[name], cpu_seconds(pid)
        if before is not None and after is not None:
            cpu_us[name] = (after - before) / sent * 1e6
    latencies.sort()

    def quantile(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0
        )

    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": quantile(0.50),
        "p99_ms": quantile(0.99),
        "failures": failures,
        "cpu_us_per_request": cpu_us,
    }


async def drive_each(
    urls: list[str], seconds: float, warmup: float, connections: int, pids: dict[str, int]
) -> list[dict[str, Any]]:
    return [await drive(url, seconds, warmup, connections, pids) for url in urls]


def measure(
    urls: list[str], seconds: float, warmup: float, connections: int, pids: dict[str, int]
) -> list[Any]:
    """Drive each URL in turn from one load-generating process (started once, for its imports),
    which also reads how much CPU time the servers spent per request."""
    command = [
        sys.executable,
        __file__,
        "--seconds",
        str(seconds),
        "--warmup",
        str(warmup),
        "--connections",
        str(connections),
    ]
    for url in urls:
        command += ["--drive", url]
    for name, pid in pids.items():
        command += ["--pid", f"{name}={pid}"]
    budget = len(urls) * (seconds + warmup) + 30
    done = subprocess.run(command, capture_output=True, timeout=budget, check=True)
    results: list[Any] = json.loads(done.stdout)
    return results


# --- the run ----------------------------------------------------------------------------------


def median_result(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the median over rounds; failures and requests are summed."""
    merged: dict[str, Any] = {
        key: statistics.median(r[key] for r in results) for key in ("rps", "p50_ms", "p99_ms")
    }
    merged["requests"] = sum(r["requests"] for r in results)
    failures: dict[str, int] = {}
    for r in results:
        for kind, count in r["failures"].items():
            failures[kind] = failures.get(kind, 0) + count
    merged["failures"] = failures
    merged["cpu_us_per_request"] = {
        name: statistics.median(r["cpu_us_per_request"].get(name, 0.0) for r in results)
        for name in results[0]["cpu_us_per_request"]
    }
    return merged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per path")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per path")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of both paths")
    parser.add_argument("--drive", metavar="URL", action="append", help=argparse.SUPPRESS)
    parser.add_argument("--pid", metavar="NAME=PID", action="append", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        pids = {name: int(pid) for name, _, pid in (p.partition("=") for p in args.pid or [])}
        driven = asyncio.run(
            drive_each(args.drive, args.seconds, args.warmup, args.connections, pids)
        )
        print(json.dumps(driven))
        return 0

    with tempfile.TemporaryDirectory(prefix="agora-bench-") as scratch:
        data = Path(scratch)
        ports = {"identity": free_port(), "catalog": free_port(), "gateway": free_port()}
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        env = {
            **os.environ,
            "AGORA_DATA_DIR": str(data),
            "AGORA_TOPOLOGY": str(ROOT / "topology.toml"),
            "AGORA_SERVICE_URLS": json.dumps(
                {"identity": [urls["identity"]], "catalog": [urls["catalog"]]}
            ),
            "AGORA_IDENTITY_PORT": str(ports["identity"]),
            "AGORA_CATALOG_PORT": str(ports["catalog"]),
            "AGORA_GATEWAY_PORT": str(ports["gateway"]),
            "AGORA_GATEWAY_RATE_LIMIT": "1e9",
            "AGORA_GATEWAY_RATE_BURST": "1000000000",
        }
        processes = [
            start(name, f"{name}.bootstrap", port, env, data) for name, port in ports.items()
        ]
        try:
            wait_ready(processes)
            sku = first_sku(urls["catalog"])
            paths = {
                "direct": (f"{urls['catalog']}/products/{sku}", "GET /products/{sku}"),
                "gateway": (
                    f"{urls['gateway']}/api/catalog/products/{sku}",
                    "GET /api/catalog/products/{sku}",
                ),
            }
            # Rounds alternate the two paths; the medians over rounds are what is reported, and
            # each round's ratio compares two measurements taken moments apart.
            rounds = [
                dict(
                    zip(
                        paths,
                        measure(
                            [url for url, _ in paths.values()],
                            args.seconds,
                            args.warmup,
                            args.connections,
                            {p.name: p.popen.pid for p in processes if p.name != "identity"},
                        ),
                        strict=True,
                    )
                )
                for _ in range(args.rounds)
            ]
            results = {label: median_result([r[label] for r in rounds]) for label in paths}
        except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as error:
            print(f"read_path: {error}", file=sys.stderr)
            for process in processes:
                tail = process.log.read_text(errors="replace").splitlines()[-15:]
                print(
                    f"--- {process.name} ({process.log.name}) ---", *tail, sep="\n", file=sys.stderr
                )
            return 1
        finally:
            stop(processes)

    print(
        f"GET a product ({sku}), {args.connections} connections, {args.seconds:g} s each, "
        f"medians of {args.rounds} rounds"
    )
    print(f"{'path':<8} {'request':<34} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}  CPU per request")
    for label, (_, shown) in paths.items():
        r = results[label]
        cpu = ", ".join(
            f"{name} {us:.0f} µs" for name, us in r["cpu_us_per_request"].items() if us >= 1
        )
        figures = f"{r['rps']:>7.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f}"
        print(f"{label:<8} {shown:<34} {figures}  {cpu}")
    ratios = [r["gateway"]["rps"] / r["direct"]["rps"] for r in rounds]
    ratio = statistics.median(ratios)
    verdict = "meets" if ratio >= TARGET else "misses"
    each = ", ".join(f"{r:.2f}" for r in ratios)
    print(
        f"gateway/direct throughput: {ratio:.2f} median of {len(ratios)} rounds ({each}); "
        f"{verdict} the target of {TARGET:.2f}"
    )
    failed = {label: r["failures"] for label, r in results.items() if r["failures"]}
    if failed or not all(r["requests"] for r in results.values()):
        print(f"read_path: requests failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
