"""The whole-system harness's own helpers: stopping a child, and waiting for a condition."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from agora_tools.harness import terminate, wait_for

# A child that says it is ready, then ignores SIGTERM (or not) and sleeps.
CHILD = """
import signal, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""


def child(kind: str) -> subprocess.Popen[str]:
    started = subprocess.Popen(
        [sys.executable, "-c", CHILD, kind], stdout=subprocess.PIPE, text=True
    )
    assert started.stdout is not None
    assert started.stdout.readline() == "ready\n"
    return started


def test_terminate_stops_a_child_with_sigterm_and_gives_its_status() -> None:
    assert terminate(child("obliging"), grace=30) == -signal.SIGTERM


def test_terminate_kills_a_child_that_outlives_its_grace() -> None:
    assert terminate(child("stubborn"), grace=0.5) == -signal.SIGKILL


def test_wait_for_gives_the_first_answer_and_fails_naming_what_it_waited_for() -> None:
    answers = iter([None, None, "found"])
    assert wait_for("the third answer", lambda: next(answers), timeout=30) == "found"

    with pytest.raises(AssertionError, match="gave up waiting for nothing at all"):
        wait_for("nothing at all", lambda: None, timeout=0.3)
