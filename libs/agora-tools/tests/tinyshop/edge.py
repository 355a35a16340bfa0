from __future__ import annotations

from fastapi import FastAPI

from tinyshop.common import build


def create_app(settings: object = None) -> FastAPI:
    return build("gateway")
