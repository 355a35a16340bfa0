"""A trace's database statements and Redis commands in the console's waterfall: each under the
span that ran it, shown by what it ran rather than by the database's file."""

from __future__ import annotations

from typing import Any

from gateway.console import traces

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def span(span_id: str, parent: str | None, name: str, kind: str, **attributes: Any) -> Any:
    return {
        "trace_id": TRACE,
        "span_id": span_id,
        "parent_id": parent,
        "name": name,
        "kind": kind,
        "service": "catalog",
        "replica": 0,
        "start": 1_800_000_000.0 + int(span_id, 16) / 1000,
        "duration_ms": 1.0,
        "status": "ok",
        "attributes": attributes,
    }


REQUEST = span("1", None, "GET /products/{sku}", "server", **{"http.route": "/products/{sku}"})
SELECT = span(
    "2",
    "1",
    "SELECT /home/shop/.agora/data/catalog.db",
    "client",
    **{
        "db.system": "sqlite",
        "db.statement": "SELECT products.sku, products.name\nFROM products\nWHERE products.sku = ?",
    },
)
HSET = span("3", "1", "HSET", "client", **{"db.system": "redis", "db.statement": "HSET ? ? ?"})


def test_a_statement_is_shown_by_what_it_ran_under_the_request_that_ran_it() -> None:
    drawn = traces.waterfall(TRACE, traces.parse_spans([{"spans": [HSET, SELECT, REQUEST]}]))

    shown = [(bar.depth, bar.span.name, bar.span.kind) for bar in drawn.bars]
    assert shown == [
        (0, "GET /products/{sku}", "server"),
        (1, "SELECT products.sku, products.name FROM products WHERE products.sku = ?", "client"),
        (1, "HSET ? ? ?", "client"),
    ]
    assert [bar.span.route for bar in drawn.bars] == ["/products/{sku}", "", ""]


def test_a_long_statement_is_cut_short_and_kept_whole_in_its_attributes() -> None:
    columns = ", ".join(f"products.column_{n}" for n in range(40))
    statement = f"SELECT {columns} FROM products"  # noqa: S608 (shown, never run)
    raw = span("2", "1", "SELECT catalog", "client", **{"db.statement": statement})

    parsed = traces.parse_span(raw)

    assert parsed is not None
    assert len(parsed.name) == 120
    assert parsed.name.endswith("…")
    assert statement.startswith(parsed.name[:-1])
    assert parsed.attributes["db.statement"] == statement
