"""The process's log lines: one JSON object a line on standard output, whichever library wrote
it, at the level configured last."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest
import structlog

from agora.logs import configure_logging, recent_logs


def written(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_an_own_line_and_a_foreign_line_have_one_shape(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("shape-svc", replica=2)
    structlog.get_logger("agora.shape").info("own line", order_id="o-1")
    logging.getLogger("foreign.shape").warning("foreign line")

    own, foreign = written(capsys)

    assert {key: own[key] for key in ("event", "level", "logger", "service", "replica")} == {
        "event": "own line",
        "level": "info",
        "logger": "agora.shape",
        "service": "shape-svc",
        "replica": 2,
    }
    assert own["order_id"] == "o-1"
    assert {key: foreign[key] for key in ("event", "level", "logger", "service")} == {
        "event": "foreign line",
        "level": "warning",
        "logger": "foreign.shape",
        "service": "shape-svc",
    }
    assert set(own) - {"order_id"} == set(foreign)
    assert [line["event"] for line in recent_logs().find(service="shape-svc", limit=2)] == [
        "foreign line",
        "own line",
    ]


def test_a_logger_used_before_a_new_configuration_obeys_its_level_and_output(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = structlog.get_logger("agora.level")
    configure_logging("level-svc", level="info")
    log.info("before")
    capsys.readouterr()

    configure_logging("level-svc", level="warning")
    log.info("dropped")
    log.warning("kept")
    # The output as it is now, not the one the logger first wrote to.
    elsewhere = io.StringIO()
    real, sys.stdout = sys.stdout, elsewhere
    try:
        log.error("redirected")
    finally:
        sys.stdout = real
    configure_logging("level-svc", level="info")

    assert [line["event"] for line in written(capsys)] == ["kept"]
    assert [json.loads(line)["event"] for line in elsewhere.getvalue().splitlines()] == [
        "redirected"
    ]


def test_an_exception_is_written_with_its_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("failing-svc")
    try:
        raise RuntimeError("the disk is full")
    except RuntimeError:
        structlog.get_logger("agora.failing").exception("could not write")

    (line,) = written(capsys)
    assert line["level"] == "error"
    assert "RuntimeError: the disk is full" in str(line["exception"])


def test_a_closed_output_loses_the_line_without_failing_the_caller() -> None:
    configure_logging("closed-svc")
    closed = io.StringIO()
    closed.close()
    real, sys.stdout = sys.stdout, closed
    try:
        structlog.get_logger("agora.closed").info("nobody reads this")
    finally:
        sys.stdout = real

    assert recent_logs().find(service="closed-svc", limit=1)[0]["event"] == "nobody reads this"
