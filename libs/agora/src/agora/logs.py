"""Structured logs: one JSON object a line, carrying service, request id and trace id.

The chassis's and the services' own loggers are structlog's: a line goes through the processors
and is written, with no standard-library record in between (it costs a third as much, and the
access line is written on every request). Standard-library loggers (uvicorn, alembic, aiohttp)
are routed through the same processors, so every line a process writes has one shape and can be
joined with its trace. The process keeps its last
lines in memory (:func:`recent_logs`), where the console reads them through ``GET /internal/logs``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any, NamedTuple

import orjson
import structlog
from opentelemetry import trace
from structlog.processors import NAME_TO_LEVEL

from agora import context
from agora.telemetry import Recent, span_service

LOGS_KEPT = 5_000


def _add_request(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    if (request_id := context.request_id.get()) is not None:
        event.setdefault("request_id", request_id)
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event.setdefault("trace_id", format(span_context.trace_id, "032x"))
        event.setdefault("span_id", format(span_context.span_id, "016x"))
    return event


# Who this process is, and the lowest level it writes. Read on every line rather than captured
# in a closure: loggers are cached on first use, and a test process builds several services' apps
# one after another.
_process: dict[str, Any] = {"service": "agora", "replica": 0, "level": logging.INFO}


def _at_level(_: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    if NAME_TO_LEVEL.get(method, logging.INFO) < _process["level"]:
        raise structlog.DropEvent
    return event


def _add_service(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    # Inside a request or a message, the service whose span is current (a process may hold
    # several services' apps); otherwise the one configured last.
    if "service" not in event:
        event["service"] = span_service(trace.get_current_span()) or _process["service"]
    event.setdefault("replica", _process["replica"])
    return event


class Stdout:
    """The logger under structlog's own pipeline: writes each rendered line to the process's
    standard output as it is when the line is written (a test may have replaced it since the
    logger was made), whole and flushed, as the standard library's handler does. The line is
    also kept in memory (:func:`recent_logs`) by the pipeline's last processor."""

    _lock = threading.Lock()

    def __init__(self, name: str = "") -> None:
        self.name = name

    def msg(self, line: str) -> None:
        # A closed or broken output (its reader went away) loses the line, as the standard
        # library's handler would, and never fails what was being logged.
        with self._lock, contextlib.suppress(OSError, ValueError):
            out = sys.stdout
            out.write(line + "\n")
            out.flush()

    debug = info = warn = warning = error = exception = critical = fatal = msg


class LogLine(NamedTuple):
    trace_id: str | None
    service: str
    line: bytes  # the event as JSON: a snapshot later changes cannot reach, cheap to keep


class RecentLogs:
    """Keeps the process's last log lines; a structlog processor placed just before rendering,
    so it sees each line as written, whatever the output format."""

    def __init__(self, capacity: int = LOGS_KEPT) -> None:
        self.lines: Recent[LogLine] = Recent(capacity)

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        """Keep the line, and pass it on to a renderer of another format."""
        self._keep(event, orjson.dumps(event, default=str, option=orjson.OPT_NON_STR_KEYS))
        return event

    def render_json(self, _: Any, __: str, event: MutableMapping[str, Any]) -> str:
        """Keep the line and render it as JSON, serialized once for both (it runs per line)."""
        line = orjson.dumps(event, default=str, option=orjson.OPT_NON_STR_KEYS)
        self._keep(event, line)
        return line.decode()

    def _keep(self, event: Mapping[str, Any], line: bytes) -> None:
        trace_id = event.get("trace_id")
        service = str(event.get("service"))
        self.lines.add(LogLine(trace_id if isinstance(trace_id, str) else None, service, line))

    def find(
        self, *, service: str | None = None, trace_id: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        """The newest lines (of ``service``, of the trace ``trace_id``), as event dicts."""

        def match(line: LogLine) -> bool:
            return (trace_id is None or line.trace_id == trace_id) and (
                service is None or line.service == service
            )

        return [orjson.loads(line.line) for line in self.lines.newest(match, limit)]


_recent = RecentLogs()
_pipeline: list[Any] = []


def recent_logs() -> RecentLogs:
    """The process's recent log lines (kept once :func:`configure_logging` has run)."""
    return _recent


def configure_logging(
    service: str, *, level: str = "info", fmt: str = "json", replica: int = 0
) -> None:
    """Set up structlog and the standard library for this process. Safe to call again."""
    _process.update(service=service, replica=replica, level=NAME_TO_LEVEL[level.lower()])

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,  # a Stdout logger has the name it was made with
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_service,
        _add_request,
        structlog.processors.format_exc_info,
    ]
    # JSON lines are kept as rendered; other formats keep a JSON copy beside their rendering.
    rendering: list[Any] = (
        [_recent.render_json]
        if fmt == "json"
        else [_recent, structlog.dev.ConsoleRenderer(colors=False)]
    )
    # Changed in place: a logger cached under an earlier configuration holds this very list.
    _pipeline[:] = [_at_level, *shared, *rendering]
    structlog.configure(
        processors=_pipeline,
        logger_factory=Stdout,
        # Every level passes the wrapper: _at_level filters, so that a logger cached before a
        # later configuration still obeys the level set last.
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    for name in ("httpx", "httpcore", "asyncio"):
        logging.getLogger(name).setLevel("WARNING")
    # Requests are logged once, by the chassis middleware, with their trace id.
    logging.getLogger("uvicorn.access").disabled = True
