"""Finding (or installing) the machine's Chromium and opening it with Playwright.

Browsers cannot be downloaded by ``playwright install`` everywhere, so the browser tests and
``make screenshots`` drive the system's own Chromium (Debian's ``chromium`` package). When it is
missing and the machine allows it (root and apt-get), it is installed once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Quiet, headless and without the sandbox (which needs privileges a container may not have).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
APT_TIMEOUT = 900


class NoChromium(RuntimeError):
    """There is no Chromium here and it could not be installed; the message says why."""


def find() -> str | None:
    given = os.environ.get("AGORA_CHROMIUM")
    if given:
        return given if Path(given).exists() else None
    for name in CANDIDATES:
        if found := shutil.which(name):
            return found
    return None


def ensure() -> str:
    """The path of a Chromium, installing Debian's package when it is missing and allowed."""
    if found := find():
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise NoChromium("no Chromium on PATH and no apt-get to install one (set AGORA_CHROMIUM)")
    if os.geteuid() != 0:
        raise NoChromium("no Chromium on PATH; installing it needs root (apt-get install chromium)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-q", "--no-install-recommends", "chromium"]
    # The package lists may be missing (a fresh image): read them once and try again.
    for attempt in ([install], [[apt, "update", "-q"], install]):
        for command in attempt:
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT, check=False
            )
            if done.returncode != 0:
                break
        if found := find():
            return found
    raise NoChromium(f"apt-get could not install chromium: {done.stderr.strip()[-500:]}")


@contextmanager
def browser(executable: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        opened = playwright.chromium.launch(executable_path=executable, args=FLAGS)
        try:
            yield opened
        finally:
            opened.close()
