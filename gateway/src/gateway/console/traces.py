"""Spans gathered from every replica, put back together: the latest traces, one trace's
waterfall, and the trace an order went through.

Each replica keeps its own recent spans in memory and answers ``GET /internal/spans``; a trace
that crossed services is in pieces across them, joined here by ``trace_id``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# Routes the console's own watching goes through: a trace made only of these is its polling.
_WATCHING = ("/console", "/internal/", "/metrics", "/readyz", "/livez", "/static/")
# Attributes naming the path of an HTTP span, where an order id may show.
_PATH_ATTRIBUTES = ("url.path", "url.full", "http.target", "http.url")
# What a database or Redis client's span ran (OpenTelemetry's newer name first), shown as its
# name: the instrumentation names it by the operation and the database (for SQLite the file's
# whole path), which says less.
_STATEMENT_ATTRIBUTES = ("db.query.text", "db.statement")
_STATEMENT_SHOWN = 120


@dataclass(frozen=True, slots=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    service: str
    replica: int
    start: float  # unix seconds
    duration_ms: float
    status: str
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def end(self) -> float:
        return self.start + self.duration_ms / 1000

    @property
    def error(self) -> bool:
        return self.status == "error"

    @property
    def route(self) -> str:
        """The HTTP route (or path) the span served or called, else ``""``."""
        for key in ("http.route", "url.path"):
            value = self.attributes.get(key)
            if isinstance(value, str):
                return value
        method, _, rest = self.name.partition(" ")
        return rest if method.isupper() and rest.startswith("/") else ""


def parse_span(raw: Any) -> Span | None:
    """A span from a replica's answer, or None when it lacks what a span must have."""
    if not isinstance(raw, Mapping):
        return None
    try:
        trace_id, span_id = str(raw["trace_id"]), str(raw["span_id"])
        start = float(raw["start"])
        duration_ms = max(0.0, float(raw.get("duration_ms") or 0.0))
        replica = int(raw.get("replica") or 0)
    except (KeyError, TypeError, ValueError):
        return None
    parent = raw.get("parent_id")
    attributes = raw.get("attributes")
    attributes = attributes if isinstance(attributes, Mapping) else {}
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=str(parent) if parent else None,
        name=_statement(attributes) or str(raw.get("name") or "?"),
        kind=str(raw.get("kind") or "internal"),
        service=str(raw.get("service") or "?"),
        replica=replica,
        start=start,
        duration_ms=duration_ms,
        status=str(raw.get("status") or "ok"),
        attributes=attributes,
    )


def _statement(attributes: Mapping[str, Any]) -> str | None:
    """The statement a client's span ran, on one line and cut short, if it ran one."""
    for key in _STATEMENT_ATTRIBUTES:
        statement = attributes.get(key)
        if isinstance(statement, str) and statement.strip():
            shown = " ".join(statement.split())
            if len(shown) > _STATEMENT_SHOWN:
                shown = shown[: _STATEMENT_SHOWN - 1] + "…"
            return shown
    return None


def parse_spans(answers: Iterable[Any]) -> list[Span]:
    """Every span of every replica's ``{"spans": [...]}``, each once."""
    seen: dict[tuple[str, str], Span] = {}
    for answer in answers:
        raw_spans = answer.get("spans") if isinstance(answer, Mapping) else None
        for raw in raw_spans if isinstance(raw_spans, list) else ():
            span = parse_span(raw)
            if span is not None:
                seen.setdefault((span.trace_id, span.span_id), span)
    return list(seen.values())


@dataclass(frozen=True, slots=True)
class TraceSummary:
    trace_id: str
    root: str  # the name of the span that began it
    services: tuple[str, ...]  # in the order they joined
    start: float
    duration_ms: float
    spans: int
    error: bool

    def as_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "services": list(self.services),
            "duration_ms": round(self.duration_ms, 3),
        }


def by_trace(spans: Iterable[Span]) -> dict[str, list[Span]]:
    grouped: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        grouped[span.trace_id].append(span)
    for members in grouped.values():
        members.sort(key=lambda span: span.start)
    return grouped


def watching_only(spans: Sequence[Span]) -> bool:
    """Whether a trace is the console watching: begun by a read of a console page, its JSON, a
    scrape or a probe (with whatever that read needed, a key set fetched to check a token).
    What an admin does from the console (a replay, a verify) is a POST, and is kept."""
    root = _root(spans)
    method = root.attributes.get("http.request.method") or root.name.partition(" ")[0]
    return method in ("GET", "HEAD") and root.route.startswith(_WATCHING)


def _root(spans: Sequence[Span]) -> Span:
    """The span that began the trace: the earliest one without a parent among them."""
    ids = {span.span_id for span in spans}
    roots = [span for span in spans if span.parent_id is None or span.parent_id not in ids]
    return min(roots or spans, key=_by_start)


def summarize(trace_id: str, spans: Sequence[Span]) -> TraceSummary:
    root = _root(spans)
    start = min(span.start for span in spans)
    end = max(span.end for span in spans)
    services = tuple(dict.fromkeys(span.service for span in spans))
    return TraceSummary(
        trace_id=trace_id,
        root=f"{root.service}: {root.name}",
        services=services,
        start=start,
        duration_ms=(end - start) * 1000,
        spans=len(spans),
        error=any(span.error for span in spans),
    )


def latest_traces(spans: Iterable[Span], limit: int) -> list[TraceSummary]:
    """The ``limit`` newest traces (by their first span), leaving out the console's own."""
    summaries = [
        summarize(trace_id, members)
        for trace_id, members in by_trace(spans).items()
        if not watching_only(members)
    ]
    summaries.sort(key=lambda summary: summary.start, reverse=True)
    return summaries[:limit]


@dataclass(frozen=True, slots=True)
class Bar:
    """One span of a waterfall: where its bar starts and how wide it is, in % of the trace."""

    span: Span
    depth: int
    offset: float
    width: float


@dataclass(frozen=True, slots=True)
class Waterfall:
    trace_id: str
    start: float
    duration_ms: float
    bars: tuple[Bar, ...]
    services: tuple[str, ...]


def waterfall(trace_id: str, spans: Sequence[Span]) -> Waterfall:
    """The spans of a trace in call order (each after its parent, siblings by start), each
    placed on the trace's time line."""
    start = min(span.start for span in spans)
    end = max(span.end for span in spans)
    total = max(end - start, 1e-6)
    ids = {span.span_id for span in spans}
    children: dict[str | None, list[Span]] = defaultdict(list)
    for span in sorted(spans, key=lambda span: span.start):
        parent = span.parent_id if span.parent_id in ids else None
        children[parent].append(span)
    bars: list[Bar] = []
    placed: set[str] = set()

    def place(span: Span, depth: int) -> None:
        if span.span_id in placed:  # a broken parent chain must not loop
            return
        placed.add(span.span_id)
        offset = (span.start - start) / total * 100
        width = max(span.duration_ms / 1000 / total * 100, 0.3)
        bars.append(Bar(span, depth, round(offset, 3), round(min(width, 100 - offset), 3)))
        for child in children.get(span.span_id, []):
            place(child, depth + 1)

    for root in children[None]:
        place(root, 0)
    for span in spans:  # whatever a cycle of parents left out
        place(span, 0)
    return Waterfall(
        trace_id=trace_id,
        start=start,
        duration_ms=total * 1000,
        bars=tuple(bars),
        services=tuple(dict.fromkeys(span.service for span in sorted(spans, key=_by_start))),
    )


def _by_start(span: Span) -> float:
    return span.start


def trace_of_order(spans: Iterable[Span], order_id: str) -> str | None:
    """The trace that placed this order, when it is still kept: the earliest of those that carried
    its messages (a span whose ``agora.subject`` is the order), else the earliest whose path names
    it. A page that showed the order names it in its path too, and may even start before the
    checkout's first message is sent, so carrying the order's messages comes first. The
    console's own look-ups of the order are not it."""
    found: tuple[int, float, str] | None = None
    for trace_id, members in by_trace(spans).items():
        if watching_only(members):
            continue
        if any(span.attributes.get("agora.subject") == order_id for span in members):
            rank = 0
        elif any(_names_in_path(span, order_id) for span in members):
            rank = 1
        else:
            continue
        key = (rank, min(span.start for span in members), trace_id)
        if found is None or key < found:
            found = key
    return found[2] if found is not None else None


def _names_in_path(span: Span, order_id: str) -> bool:
    paths = (span.attributes.get(key) for key in _PATH_ATTRIBUTES)
    return any(isinstance(path, str) and order_id in path for path in paths)


def log_lines(answers: Iterable[Any]) -> list[dict[str, Any]]:
    """Every replica's ``{"logs": [...]}`` merged, oldest first."""
    lines = [
        line
        for answer in answers
        if isinstance(answer, Mapping) and isinstance(answer.get("logs"), list)
        for line in answer["logs"]
        if isinstance(line, dict)
    ]
    lines.sort(key=lambda line: str(line.get("timestamp", "")))
    return lines
