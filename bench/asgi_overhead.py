"""P3, what a request costs in a service: catalog's `GET /products/{sku}` against a raw ASGI app
returning the same bytes on the same server, measured side by side in one run.

It starts catalog as bench/read_path.py does (uvicorn with uvloop and httptools, as `agora serve`
runs it, on a free port with a throwaway data directory and the seeded catalogue), reads the bytes
and content type of one product's answer, and starts a raw ASGI app (this module's `create_app`:
one `async def app(scope, receive, send)` that answers every request with exactly those bytes and
that content type) under the same uvicorn settings in a process of its own. A load generator in a
process of its own drives each app in turn (keep-alive connections, a warm-up before each
measurement); rounds alternate which app goes first. Per round and as medians over rounds it
prints requests per second, p50 and p99 latency, the CPU time the server process spent per request
(/proc) and the generator's own, and the ratio service/raw. The target is that the service keeps
at least 0.15 of the raw app's throughput; missing it is reported, not an error. It exits non-zero
only when something failed: a process that did not start, a request that did not get a 200, a raw
answer that differs from the service's.

The generator is wrk when it is on PATH (`apt-get install wrk`; one thread, whole seconds), else
aiohttp. aiohttp's generator is itself a Python process on the same two cores: on the raw side it
may be the limit rather than the server. How much of a core the generator kept busy is printed
beside its CPU per request; when it spends more per request than the raw server, the raw app's
req/s is the generator's bound, not the app's, and the ratio service/raw printed is an upper
bound (the raw app's advantage is at least what is shown): it says so when that happens, and
does not call the target met then. The servers' CPU per request does not depend on the
generator's speed: its ratio is printed too.

    .venv/bin/python bench/asgi_overhead.py [--seconds 4] [--warmup 1] [--connections 32]
        [--rounds 3] [--generator auto|wrk|aiohttp]
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from agora_tools.testing import free_port

from httpload import Target, measure
from processes import (
    arguments,
    exit_status,
    first_sku,
    importable,
    run,
    running,
    service_env,
    start,
    wait_ready,
)
from procstat import cpu_seconds

TARGET = 0.15
# What the raw app answers with: the bytes of the service's answer, in a file, and its type.
RAW_BODY_FILE = "AGORA_BENCH_RAW_BODY_FILE"
RAW_CONTENT_TYPE = "AGORA_BENCH_RAW_CONTENT_TYPE"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


# --- the raw side (runs in a uvicorn process of its own) -------------------------------------


def create_app() -> ASGIApp:
    """The raw ASGI app, for uvicorn's ``--factory``: every HTTP request is answered 200 with
    the bytes of the file ``AGORA_BENCH_RAW_BODY_FILE`` names, as ``AGORA_BENCH_RAW_CONTENT_TYPE``.
    Nothing else: no routing, no middleware, no serialization."""
    body = Path(os.environ[RAW_BODY_FILE]).read_bytes()
    head = {
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-type", os.environ[RAW_CONTENT_TYPE].encode()),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    whole = {"type": "http.response.body", "body": body}

    async def app(
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "http":
            await send(head)
            await send(whole)
        elif scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})

    return app


# --- the load generators ---------------------------------------------------------------------


def measure_aiohttp(
    targets: list[tuple[str, int]], seconds: float, warmup: float, connections: int
) -> list[dict[str, Any]]:
    """Drive each (url, server pid) in turn from one load-generating Python process, on the
    servers' loop (uvloop): the generator should not be slower than it needs be."""
    driven: list[Target] = [{"url": url, "pids": {"server": pid}} for url, pid in targets]
    results = measure(driven, seconds, warmup, connections, uvloop=True)
    for result in results:
        result["server_us"] = result.pop("cpu_us_per_request").get("server", 0.0)
    return results


def measure_wrk(
    targets: list[tuple[str, int]], seconds: float, warmup: float, connections: int
) -> list[dict[str, Any]]:
    """Drive each (url, server pid) in turn with wrk (one thread; whole seconds only)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not on PATH")
    results = []
    for url, pid in targets:
        if warmup > 0:
            warm = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(warmup))}s", url]
            subprocess.run(warm, capture_output=True, timeout=warmup + 30, check=True)
        command = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url]
        # wrk's own CPU: what the children reaped so far have used, before and after it.
        own_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_before = cpu_seconds(pid)
        done = subprocess.run(command, capture_output=True, timeout=seconds + 30, check=True)
        server_after = cpu_seconds(pid)
        own_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = (own_after.ru_utime + own_after.ru_stime) - (
            own_before.ru_utime + own_before.ru_stime
        )
        results.append(wrk_figures(done.stdout.decode(), server_before, server_after, own))
    return results


def wrk_figures(
    output: str, server_before: float | None, server_after: float | None, own: float
) -> dict[str, Any]:
    """The figures of one wrk run (its output with ``--latency``), in the aiohttp side's shape."""

    def found(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise ValueError(f"wrk printed no {pattern!r}:\n{output}")
        return match

    def latency_ms(percent: int) -> float:
        value, unit = found(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)$").groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    sent = int(found(r"(\d+) requests in")[1])
    rps = float(found(r"^Requests/sec:\s+([\d.]+)")[1])
    failures: dict[str, int] = {}
    if non_2xx := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        failures["non-2xx"] = int(non_2xx[1])
    if errors := re.search(r"Socket errors: (.*)$", output, re.MULTILINE):
        for kind, count in (e.split() for e in errors[1].split(", ")):
            if int(count):
                failures[kind] = int(count)
    elapsed = sent / rps if rps else 0.0
    server = (
        server_after - server_before
        if server_before is not None and server_after is not None
        else 0.0
    )
    return {
        "requests": sent - sum(failures.values()),
        "rps": rps,
        "p50_ms": latency_ms(50),
        "p99_ms": latency_ms(99),
        "failures": failures,
        "server_us": server / max(sent, 1) * 1e6,
        "generator_us": own / max(sent, 1) * 1e6,
        "generator_busy": own / elapsed if elapsed else 0.0,
    }


# --- the run ----------------------------------------------------------------------------------


def answer_of(url: str) -> tuple[bytes, str]:
    """The body and content type of a GET of ``url`` (a loopback URL built here)."""
    with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310 (http on loopback)
        return reply.read(), reply.headers.get("content-type", "")


def figures(r: dict[str, Any]) -> str:
    busy = f"({r['generator_busy'] * 100:.0f} % of a core)"
    return (
        f"{r['rps']:>7.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['server_us']:>10.0f}"
        f" {r['generator_us']:>13.0f} {busy}"
    )


def main() -> int:
    parser = arguments(__doc__, "app", "both apps")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections")
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "aiohttp"),
        default="auto",
        help="what drives the load: wrk when it is on PATH (auto), else aiohttp",
    )
    args = parser.parse_args()
    if args.generator == "auto":
        args.generator = "wrk" if shutil.which("wrk") else "aiohttp"
    generate = measure_wrk if args.generator == "wrk" else measure_aiohttp
    labels = ("service", "raw")
    with tempfile.TemporaryDirectory(prefix="agora-bench-") as scratch:
        data = Path(scratch)
        ports = {"service": free_port(), "raw": free_port()}
        env = service_env(data, AGORA_SERVICE_URLS="{}", AGORA_CATALOG_PORT=str(ports["service"]))
        with running("asgi_overhead", []) as processes:
            processes.append(start("catalog", "catalog.bootstrap", ports["service"], env, data))
            wait_ready(processes)
            sku = first_sku(processes[0].url)
            path = f"/products/{sku}"
            body, content_type = answer_of(processes[0].url + path)
            (data / "raw-body").write_bytes(body)
            raw_env = importable(
                {**env, RAW_BODY_FILE: str(data / "raw-body"), RAW_CONTENT_TYPE: content_type}
            )
            processes.append(start("raw", Path(__file__).stem, ports["raw"], raw_env, data))
            wait_ready(processes)
            if answer_of(processes[1].url + path) != (body, content_type):
                raise RuntimeError("the raw app's answer differs from the service's")
            targets = {
                p_label: (p.url + path, p.popen.pid)
                for p_label, p in zip(labels, processes, strict=True)
            }
            rounds: list[dict[str, dict[str, Any]]] = []
            for n in range(args.rounds):
                # Alternate which app goes first: neither always meets the machine as the other
                # left it.
                order = labels if n % 2 == 0 else labels[::-1]
                results = generate(
                    [targets[label] for label in order], args.seconds, args.warmup, args.connections
                )
                rounds.append(dict(zip(order, results, strict=True)))

    print(
        f"GET {path} ({len(body)} bytes, {content_type}), {args.connections} connections, "
        f"{args.seconds:g} s each after {args.warmup:g} s of warm-up, {args.rounds} rounds, "
        f"load from {args.generator}"
    )
    print(
        f"{'round':<7} {'app':<8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'server µs':>10}"
        f" {'generator µs':>13} (generator busy)"
    )
    for n, measured in enumerate(rounds, 1):
        for label in labels:
            print(f"{n:<7} {label:<8} {figures(measured[label])}")
    medians = {
        label: {
            key: statistics.median(r[label][key] for r in rounds)
            for key in ("rps", "p50_ms", "p99_ms", "server_us", "generator_us", "generator_busy")
        }
        for label in labels
    }
    for label in labels:
        print(f"{'median':<7} {label:<8} {figures(medians[label])}")

    throughput = [r["service"]["rps"] / r["raw"]["rps"] for r in rounds]
    ratio = statistics.median(throughput)
    raw = medians["raw"]
    # The generator and the server share two cores: the one that spends more per request sets
    # the pace. When it is the generator, the ratio is an upper bound: a miss is still a miss,
    # a hit shows nothing.
    bounded = raw["generator_us"] >= raw["server_us"]
    if ratio < TARGET:
        verdict = "missed"
    else:
        verdict = "not shown (the generator bounds the raw side)" if bounded else "met"
    each = ", ".join(f"{t:.2f}" for t in throughput)
    print(
        f"service/raw throughput: {ratio:.2f}x (rounds {each}); target ≥ {TARGET:.2f}x: {verdict}"
    )
    cpu = [
        r["service"]["server_us"] / r["raw"]["server_us"] for r in rounds if r["raw"]["server_us"]
    ]
    if cpu:
        each = ", ".join(f"{c:.1f}" for c in cpu)
        print(f"server CPU per request service/raw: {statistics.median(cpu):.1f}x (rounds {each})")
    if bounded:
        print(
            f"on the raw side the generator spent more CPU per request than the server "
            f"({raw['generator_us']:.0f} µs against {raw['server_us']:.0f} µs): the raw req/s is "
            "bounded by the generator, so the throughput ratio is an upper bound (the raw app's "
            "advantage is at least what is shown); wrk on PATH measures it better"
        )
    return exit_status("asgi_overhead", rounds)


if __name__ == "__main__":
    sys.exit(run(main, "asgi_overhead"))
