"""Browser tests: a real headless Chromium, driven by Playwright, against ``agora up``.

Chromium comes from the machine (installed with apt-get when missing and allowed). Without it
these tests skip, saying why, except under CI, where a missing browser fails the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from chromium import NoChromium, browser, ensure
from playwright.sync_api import Browser

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def chromium_path() -> str:
    try:
        return ensure()
    except NoChromium as error:
        if IN_CI:
            pytest.fail(f"browser tests must run under CI: {error}")
        pytest.skip(f"browser tests skipped: {error}")


# Per module, not per session: Playwright's synchronous API runs an event loop in the main
# thread while it is open, and tests after these ones call asyncio.run().
@pytest.fixture(scope="module")
def chromium(chromium_path: str) -> Iterator[Browser]:
    with browser(chromium_path) as opened:
        yield opened
