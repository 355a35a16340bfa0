"""What the routes' query strings have in common."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator

CURSOR_DESCRIPTION = (
    "The `next_cursor` of the previous page, as it was handed out; any other value is refused "
    "(400)."
)


class QueryParams(BaseModel):
    """A model of a query string in which an empty value (``?cursor=``) is the parameter not
    given: a form or a client that sends every field, filled or not, gets the defaults rather
    than a 422 for an empty limit or an empty cursor. The OpenAPI document says so: each
    parameter's schema admits the empty string besides its own values."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        # FastAPI documents each field as a parameter of its own, from the field's own info.
        for field in cls.model_fields.values():
            if field.json_schema_extra is None:
                field.json_schema_extra = _or_empty

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_absent(cls, value: Any, info: ValidationInfo) -> Any:
        if value == "" and info.field_name is not None:
            return cls.model_fields[info.field_name].default
        return value


# What a parameter's schema keeps for itself rather than for one of its alternatives.
_OWN = ("title", "description", "default", "examples")


def _or_empty(schema: dict[str, Any]) -> None:
    own = {key: schema.pop(key) for key in _OWN if key in schema}
    alternatives = schema.pop("anyOf", None) or [dict(schema)]
    schema.clear()
    schema.update(own, anyOf=[*alternatives, {"const": ""}])


def page_limit(default: int, most: int, *, clamped: bool = True) -> Any:
    """A listing's ``limit``: a page size of at least 1 (``limit: int = page_limit(50, 100)``).
    Past ``most`` it is ``clamped`` (the route serves ``agora.cursor.page_size``, and the document
    says so) or, not clamped, refused with a 422."""
    if clamped:
        return Field(
            default=default, ge=1, description=f"Page size; more than {most} is served as {most}."
        )
    return Field(default=default, ge=1, le=most)


def page_cursor(max_length: int = 512) -> Any:
    """A listing's ``cursor``: the ``next_cursor`` it handed out (``cursor: str | None =
    page_cursor()``); longer than ``max_length`` is a 422, anything else it did not hand out a 400
    (``agora.cursor.InvalidCursor``)."""
    return Field(default=None, max_length=max_length, description=CURSOR_DESCRIPTION)
