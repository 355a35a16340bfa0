from __future__ import annotations

from fastapi import FastAPI

from tinyshop.common import build


def create_app(settings: object = None) -> FastAPI:
    return build("unmigratable")


def migrate(settings: object = None) -> None:
    raise RuntimeError("this database cannot be brought up to date")
