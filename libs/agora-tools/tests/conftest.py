"""What several of agora-tools' tests need: promtool, for the rules and the dashboards' queries."""

from __future__ import annotations

import shutil

import pytest

from agora_tools.testing import install_debian_packages, skip_or_fail, why_no_debian_packages

PROMTOOL_PACKAGE = "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    """The path of promtool, installed from Debian's packages when missing; skips saying why
    when it cannot be (fails instead under CI)."""
    if (found := shutil.which("promtool")) is None:
        if why := why_no_debian_packages(f"promtool (Debian's {PROMTOOL_PACKAGE} package)"):
            skip_or_fail(why)
        install_debian_packages([PROMTOOL_PACKAGE])
        found = shutil.which("promtool")
    assert found is not None, f"{PROMTOOL_PACKAGE} was installed but promtool is not on PATH"
    return found
