"""The load generator's short run: a minute of Locust's shoppers and admin on a shop of its own.

`make loadgen` runs the same command for longer (README, "Operating Agora"). Locust runs as a
subprocess of it, never in this process: it patches the standard library with gevent when
imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

RUN = Path(__file__).resolve().parents[2] / "loadgen" / "run.py"


def test_a_minute_of_mixed_load_meets_its_objectives_and_leaves_the_shop_consistent(
    tmp_path: Path,
) -> None:
    report = tmp_path / "report"
    # Seven shoppers and the admin: enough to run every kind of request, checkouts among them,
    # side by side, while leaving the two cores to the shop itself.
    command = [sys.executable, str(RUN), "--users", "8", "--spawn-rate", "2", "--run-time", "60s"]
    run = subprocess.run(
        [*command, "--report", str(report)],
        capture_output=True,
        text=True,
        timeout=480,
        check=False,
    )
    printed = f"{run.stdout}\n{run.stderr}"

    assert run.returncode == 0, printed
    assert "locust: objectives met" in run.stdout, printed
    assert "agora verify: passed" in run.stdout, printed
    objectives = json.loads((report / "objectives.json").read_text())
    assert [o for o in objectives if not o["met"]] == [], printed
    measured = {(o["kind"], o["what"]) for o in objectives}
    assert ("place → terminal", "p99 seconds") in measured
    assert ("POST /api/orders", "p99 seconds") in measured
    assert ("GET /api/catalog/products?q=", "error ratio") in measured
    assert "<html" in (report / "report.html").read_text().lower()
