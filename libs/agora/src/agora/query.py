"""What the routes' query strings have in common."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationInfo, field_validator


class QueryParams(BaseModel):
    """A model of a query string in which an empty value (``?cursor=``) is the parameter not
    given: a form or a client that sends every field, filled or not, gets the defaults rather
    than a 422 for an empty limit or an empty cursor."""

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_absent(cls, value: Any, info: ValidationInfo) -> Any:
        if value == "" and info.field_name is not None:
            return cls.model_fields[info.field_name].default
        return value
