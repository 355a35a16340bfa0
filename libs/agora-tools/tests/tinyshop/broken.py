from __future__ import annotations

from fastapi import FastAPI


def create_app(settings: object = None) -> FastAPI:
    raise RuntimeError("this service cannot start")


def migrate(settings: object = None) -> None:
    """Nothing to migrate: it fails later, when it starts."""
