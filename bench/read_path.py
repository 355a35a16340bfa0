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

import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from agora_tools.testing import free_port

from httpload import Target, measure
from processes import arguments, first_sku, run, running, service_env, start, wait_ready

TARGET = 0.5


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
    parser = arguments(__doc__, "path", "both paths")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="agora-bench-") as scratch:
        data = Path(scratch)
        ports = {"identity": free_port(), "catalog": free_port(), "gateway": free_port()}
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        env = service_env(
            data,
            AGORA_SERVICE_URLS=json.dumps(
                {"identity": [urls["identity"]], "catalog": [urls["catalog"]]}
            ),
            AGORA_IDENTITY_PORT=str(ports["identity"]),
            AGORA_CATALOG_PORT=str(ports["catalog"]),
            AGORA_GATEWAY_PORT=str(ports["gateway"]),
            AGORA_GATEWAY_RATE_LIMIT="1e9",
            AGORA_GATEWAY_RATE_BURST="1000000000",
        )
        with running("read_path", []) as processes:
            processes.extend(
                start(name, f"{name}.bootstrap", port, env, data) for name, port in ports.items()
            )
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
            pids = {p.name: p.popen.pid for p in processes if p.name != "identity"}
            targets: list[Target] = [{"url": url, "pids": pids} for url, _ in paths.values()]
            rounds = [
                dict(
                    zip(
                        paths,
                        measure(targets, args.seconds, args.warmup, args.connections),
                        strict=True,
                    )
                )
                for _ in range(args.rounds)
            ]
            results = {label: median_result([r[label] for r in rounds]) for label in paths}

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
    sys.exit(run(main, "read_path"))
