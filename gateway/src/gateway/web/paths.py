"""Where the pages' files are, and which paths are pages at all."""

from __future__ import annotations

from pathlib import Path

TEMPLATES_DIR = Path(__file__).parent.parent / "templates"
STATIC_DIR = Path(__file__).parent.parent / "static"
# Paths that are not pages: the proxied API, the probes and the API documents keep problem details.
NOT_PAGES = ("/api", "/livez", "/readyz", "/metrics", "/docs", "/openapi.json", "/static/")


def is_page_path(path: str) -> bool:
    return not any(path == p.rstrip("/") or path.startswith(p.rstrip("/") + "/") for p in NOT_PAGES)
