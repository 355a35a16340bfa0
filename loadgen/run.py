"""Mixed load on a whole shop, checked: Locust's shoppers and admin, the objectives, `agora verify`.

The load generator (ADR 40); bench/checkout.py stays the saturation benchmark. Without ``--url``
it starts a shop of its own with `agora up` in a throwaway directory (its admin and rate limits
set for one address sending every shopper's traffic); with ``--url`` it loads that gateway, the
admin's credentials taken from AGORA_ADMIN_EMAIL and AGORA_ADMIN_PASSWORD. It runs
loadgen/locustfile.py headless, which holds the run to its objectives when it quits, then `agora
verify` against the same gateway. Into ``--report``: Locust's HTML report (``report.html``), its
CSV statistics (``stats_*.csv``) and each objective as measured (``objectives.json``). It exits 0
only when every objective was met and `agora verify` found nothing wrong::

    .venv/bin/python loadgen/run.py [--url URL] [--users 20] [--spawn-rate 2] [--run-time 5m]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from agora.topology import load_topology
from agora_tools.harness import ADMIN_EMAIL, ADMIN_PASSWORD, AGORA, RunningSystem, shop_settings

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
LOCUST = str(Path(sys.executable).with_name("locust"))


def shop_env() -> dict[str, str]:
    """The settings of a shop started here: its admin, and the gateway's limits lifted, every
    shopper registering, logging in and shopping from this one address."""
    return {
        **os.environ,
        **shop_settings(ADMIN_EMAIL, ADMIN_PASSWORD, AGORA_LOG_LEVEL="warning"),
    }


@contextmanager
def gateway(url: str | None) -> Iterator[tuple[str, Mapping[str, str]]]:
    """The gateway to load and the environment that logs in as its admin: ``url``, or a shop
    started for the run and stopped after it."""
    if url:
        yield url, os.environ
        return
    # nats, every replica of every service, the gateway
    processes = 2 + sum(service.replicas for service in load_topology())
    env = shop_env()
    with (
        tempfile.TemporaryDirectory(prefix="agora-loadgen-") as directory,
        RunningSystem(Path(directory) / "shop", env=env) as system,
    ):
        print(f"starting a shop with agora up in {directory} ...", flush=True)
        system.wait_healthy(count=processes)
        yield system.gateway_url, env


def locust(url: str, env: Mapping[str, str], args: argparse.Namespace) -> int:
    report: Path = args.report
    report.mkdir(parents=True, exist_ok=True)
    command = [
        LOCUST,
        "--locustfile",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        url,
        "--users",
        str(args.users),
        "--spawn-rate",
        str(args.spawn_rate),
        "--run-time",
        args.run_time,
        # Let each shopper finish the checkout it is following before Locust stops.
        "--stop-timeout",
        "30",
        "--only-summary",
        "--html",
        str(report / "report.html"),
        "--csv",
        str(report / "stats"),
        "--objectives-file",
        str(report / "objectives.json"),
    ]
    if args.place_to_terminal_p99 is not None:
        command += ["--place-to-terminal-p99", str(args.place_to_terminal_p99)]
    return subprocess.run(command, env=env, check=False).returncode  # noqa: S603 (our own tool)


def verify(url: str, env: Mapping[str, str]) -> int:
    command = [AGORA, "verify", "--url", url, "--wait", "60"]
    return subprocess.run(command, env=env, check=False).returncode  # noqa: S603 (our own tool)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a gateway to load (default: start a shop here)")
    parser.add_argument("--users", type=int, default=20, help="shoppers and the one admin")
    parser.add_argument("--spawn-rate", type=float, default=2.0, help="users started a second")
    parser.add_argument("--run-time", default="5m", help="how long, in Locust's terms (90s, 5m)")
    parser.add_argument(
        "--report", type=Path, default=HERE / "report", help="where the reports are written"
    )
    parser.add_argument(
        "--place-to-terminal-p99", type=float, metavar="SECONDS", help="(default: the locustfile's)"
    )
    args = parser.parse_args()
    with gateway(args.url) as (url, env):
        loaded = locust(url, env, args)
        print(f"\nlocust: {'objectives met' if loaded == 0 else 'FAILED'}", flush=True)
        verified = verify(url, env)
        print(f"agora verify: {'passed' if verified == 0 else 'FAILED'}", flush=True)
    print(f"report: {args.report / 'report.html'}")
    return 0 if loaded == verified == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
