from __future__ import annotations

from fastapi import FastAPI

from tinyshop.common import build, record_migration


def create_app(settings: object = None) -> FastAPI:
    return build("beta")


def migrate(settings: object = None) -> None:
    record_migration("beta")
