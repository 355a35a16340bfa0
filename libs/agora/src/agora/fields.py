"""Field types for request bodies whose OpenAPI schema and validation say the same thing."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator


def _whole(value: object) -> object:
    # To JSON Schema, and so to the OpenAPI document, 2.0 is the integer 2 (a client's JSON
    # encoder may well write it so); a strict model would refuse it. Taken as 2; 2.5, "2" and
    # true are still refused.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


WHOLE = BeforeValidator(_whole)
"""Put after an ``int``'s constraints: ``Annotated[int, Field(gt=0), WHOLE] | None`` (a union
documents constraints put after a validator as no JSON Schema keyword)."""

WholeNumber = Annotated[int, WHOLE]
"""An ``int`` field of a strict model that also takes a JSON number with no fraction (``2.0``)."""
