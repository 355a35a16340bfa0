"""The floor under a Python service's memory: what its libraries hold once imported, before any
of Agora's code runs, against the target of 80 MB resident a service process.

Each figure is the resident memory (VmRSS from /proc) of a fresh interpreter, run with
``PYTHONDONTWRITEBYTECODE=1`` as `agora up` runs services (the workspace byte-compiled by
`make sync`), that has imported something and nothing else:

- the interpreter alone;
- the libraries every Python service imports, added one after the other in one process: uvicorn
  with uvloop and httptools, FastAPI with pydantic, SQLAlchemy with its SQLite dialect, the
  OpenTelemetry SDK, prometheus-client, structlog, aiohttp, nats-py, and PyJWT with cryptography.
  rich is kept out, as in the images (ADR 31): structlog imports it wherever it is installed, and
  the `agora` command installs it beside the services on a developer's machine. The last line is
  the floor: no service that uses these libraries holds less;
- each Python service's composition root (its ``module`` in ``topology.toml``), imported alone, as
  `agora up` runs it (rich included where it is installed).

A service holds more than its imports once it serves (its app, pools, caches, an order gone
through: `bench/startup.py` measures that). The order in which the libraries are imported moves
memory from one line to another, not the total. The pages of the libraries' own files count as
they are mapped, which moves with the machine's page cache: a MB or two between runs, hours
apart. It exits non-zero only when a measurement failed.

    .venv/bin/python bench/memory_floor.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from agora.topology import load_topology

from processes import importable
from startup import TARGET_RSS_MB as TARGET_MB  # the figure bench/startup.py holds a process to

# What every Python service imports: its composition root the most, uvloop and httptools once it
# serves.
LIBRARIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("uvicorn, uvloop, httptools", ("uvicorn", "uvloop", "httptools")),
    ("FastAPI, pydantic", ("fastapi", "pydantic")),
    ("SQLAlchemy, its SQLite dialect", ("sqlalchemy", "sqlalchemy.dialects.sqlite")),
    ("OpenTelemetry SDK", ("opentelemetry.sdk.trace",)),
    ("prometheus-client", ("prometheus_client",)),
    ("structlog", ("structlog",)),
    ("aiohttp", ("aiohttp",)),
    ("nats-py", ("nats",)),
    ("PyJWT, cryptography", ("jwt", "jwt.algorithms")),
)
# Run in the fresh interpreter: import each group in turn and print the resident MB after it.
PROBE = """
import importlib, os, sys
from procstat import rss_mb
if os.environ.get("FLOOR_WITHOUT_RICH"):
    sys.modules["rich"] = None  # an import of it now fails, as where it is not installed
print(rss_mb(), flush=True)
for group in sys.argv[1:]:
    for module in group.split(","):
        if module:
            importlib.import_module(module)
    print(rss_mb(), flush=True)
"""


def resident_after(*groups: tuple[str, ...], rich: bool = True) -> list[float]:
    """The resident MB of a fresh interpreter at its start, then after importing each group
    (with rich importable where it is installed, or not). The probe imports ``procstat`` from
    this folder, which ``importable`` puts first on its path."""
    env = importable(
        {
            **os.environ,
            "PYTHONDONTWRITEBYTECODE": "1",
            **({} if rich else {"FLOOR_WITHOUT_RICH": "1"}),
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *(",".join(group) for group in groups)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the probe failed:\n{done.stderr}")
    return [float(line) for line in done.stdout.split()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    start, *after = resident_after(*(modules for _, modules in LIBRARIES), rich=False)
    print(f"resident memory (VmRSS) of a fresh interpreter, MB; the target is {TARGET_MB:g} MB")
    print(f"{'the interpreter alone':<48} {start:7.1f}")
    print("the libraries every Python service imports, rich kept out:")
    previous = start
    for (label, _), mb in zip(LIBRARIES, after, strict=True):
        print(f"  + {label:<44} {mb:7.1f}  (+{mb - previous:.1f})")
        previous = mb
    floor = after[-1]
    print("each service's composition root, as `agora up` imports it:")
    for name, service in load_topology().services.items():
        if service.runtime == "python":
            _, imported = resident_after((service.module,))
            print(f"  {name + ': ' + service.module:<46} {imported:7.1f}")
    verdict = "out of reach" if floor > TARGET_MB else "within reach"
    print(
        f"\nthe libraries alone: {floor:.1f} MB against {TARGET_MB:g} MB a service process: "
        f"the target is {verdict} for a service that uses them"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
