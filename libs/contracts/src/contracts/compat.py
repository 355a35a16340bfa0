"""Whether a new JSON Schema of an event can replace the published one under the same type.

Both sides of a published type must keep understanding each other: a consumer built on the old
schema reads events from the new publisher, and a consumer built on the new schema reads events
still in the stream from the old one. So, under one type:

- no field may be removed (an old consumer still requires or reads it);
- no field may change type, format or nullability (either side would reject the other's value);
- no field may become required, new or not (old events lack it);
- a set of allowed values (an enum or a constant) may not change: a removed value breaks new
  consumers reading old events, an added one breaks old consumers (they validate with the enum
  they were built with);
- a new optional field is fine: consumers ignore fields they do not know.

Constraints on values (minimum, pattern, length) and descriptions are not compared. A change that
breaks these rules is a new version of the event: a new class with type ``...v<N+1>``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

Schema = Mapping[str, Any]


def incompatibilities(old_schema: Schema, new_schema: Schema) -> list[str]:
    """What in ``new_schema`` breaks readers or writers of ``old_schema``; empty when compatible."""
    return _Comparison(old_schema, new_schema).run()


def breaking_changes(
    published: Mapping[str, Schema], current: Mapping[str, Schema]
) -> dict[str, list[str]]:
    """Per event type present on both sides, its incompatibilities; types with none are left out.

    Only the same type is compared: a new version (``.v2``) is free to differ from ``.v1``, and a
    type no longer published at all is not a change of shape.
    """
    found: dict[str, list[str]] = {}
    for event_type in sorted(published.keys() & current.keys()):
        problems = incompatibilities(published[event_type], current[event_type])
        if problems:
            found[event_type] = problems
    return found


class _Comparison:
    def __init__(self, old_root: Schema, new_root: Schema) -> None:
        self._old_root = old_root
        self._new_root = new_root
        self._problems: list[str] = []
        # Pairs of object schemas being compared, so a recursive model ends the walk.
        self._visiting: set[tuple[int, int]] = set()

    def run(self) -> list[str]:
        self._compare(self._old_root, self._new_root, "")
        return self._problems

    def _report(self, path: str, problem: str) -> None:
        where = f"field {path!r}" if path else "the event"
        self._problems.append(f"{where}: {problem}")

    def _compare(self, old: Schema, new: Schema, path: str) -> None:
        old_branches = _branches(self._old_root, old)
        new_branches = _branches(self._new_root, new)
        old_kinds = _kinds(old_branches)
        new_kinds = _kinds(new_branches)
        if old_kinds != new_kinds:
            self._report(
                path, f"type changed from {' | '.join(old_kinds)} to {' | '.join(new_kinds)}"
            )
            return
        self._compare_values(_allowed_values(old_branches), _allowed_values(new_branches), path)
        for kind in ("object", "array"):
            old_of_kind = [branch for branch in old_branches if kind in _types(branch)]
            new_of_kind = [branch for branch in new_branches if kind in _types(branch)]
            if len(old_of_kind) == 1 and len(new_of_kind) == 1:
                if kind == "object":
                    self._compare_object(old_of_kind[0], new_of_kind[0], path)
                else:
                    self._compare_array(old_of_kind[0], new_of_kind[0], path)
            elif _canonical(old_of_kind) != _canonical(new_of_kind):
                # Several object (or array) alternatives cannot be paired reliably.
                self._report(path, f"the {kind} alternatives changed")

    def _compare_values(
        self, old_values: frozenset[str] | None, new_values: frozenset[str] | None, path: str
    ) -> None:
        if old_values == new_values:
            return
        if new_values is None:
            self._report(path, "no longer limited to a set of values")
        elif old_values is None:
            self._report(path, f"now limited to the values {_listed(new_values)}")
        else:
            if removed := old_values - new_values:
                self._report(path, f"values removed: {_listed(removed)}")
            if added := new_values - old_values:
                self._report(path, f"values added: {_listed(added)} (older consumers reject them)")

    def _compare_object(self, old: Schema, new: Schema, path: str) -> None:
        key = (id(old), id(new))
        if key in self._visiting:
            return
        self._visiting.add(key)
        old_fields: Mapping[str, Schema] = old.get("properties", {})
        new_fields: Mapping[str, Schema] = new.get("properties", {})
        for name, old_field in old_fields.items():
            if name not in new_fields:
                self._report(_join(path, name), "removed")
            else:
                self._compare(old_field, new_fields[name], _join(path, name))
        old_required = set(old.get("required", ()))
        for name in new.get("required", ()):
            if name in old_required:
                continue
            if name in old_fields:
                self._report(_join(path, name), "became required")
            else:
                self._report(_join(path, name), "new required field")
        old_extra, new_extra = old.get("additionalProperties"), new.get("additionalProperties")
        if isinstance(old_extra, Mapping) and isinstance(new_extra, Mapping):
            self._compare(old_extra, new_extra, _join(path, "*"))
        self._visiting.discard(key)

    def _compare_array(self, old: Schema, new: Schema, path: str) -> None:
        old_items, new_items = old.get("items"), new.get("items")
        if isinstance(old_items, Mapping) and isinstance(new_items, Mapping):
            self._compare(old_items, new_items, f"{path}[]")
        elif _canonical(old_items) != _canonical(new_items):
            self._report(path, "its items changed")
        old_tuple, new_tuple = old.get("prefixItems", []), new.get("prefixItems", [])
        if len(old_tuple) != len(new_tuple):
            self._report(path, f"length changed from {len(old_tuple)} to {len(new_tuple)} items")
            return
        for index, (old_item, new_item) in enumerate(zip(old_tuple, new_tuple, strict=True)):
            self._compare(old_item, new_item, f"{path}[{index}]")


def _listed(values: frozenset[str]) -> str:
    return ", ".join(sorted(values))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _resolve(root: Schema, schema: Schema) -> Schema:
    seen: set[str] = set()
    while "$ref" in schema:
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/") or ref in seen:
            raise ValueError(f"cannot follow $ref {ref!r}: only local, acyclic references")
        seen.add(ref)
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        schema = target
    return schema


def _branches(root: Schema, schema: Schema) -> list[Schema]:
    """The alternatives a schema allows, references followed and unions flattened."""
    schema = _resolve(root, schema)
    for union in ("anyOf", "oneOf"):
        if union in schema:
            return [branch for part in schema[union] for branch in _branches(root, part)]
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _branches(root, schema["allOf"][0])
    return [schema]


_JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"))


def _types(schema: Schema) -> frozenset[str]:
    declared = schema.get("type")
    if isinstance(declared, str):
        return frozenset({declared})
    if isinstance(declared, list):
        return frozenset(declared)
    values = _values_of(schema)
    if values is not None:
        return frozenset(_json_type(value) for value in values)
    return frozenset({"any"})


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for python_type, name in _JSON_TYPES:
        if isinstance(value, python_type):
            return name
    return "array" if isinstance(value, list) else "object"


def _kinds(branches: list[Schema]) -> list[str]:
    """What a value may be, as comparable words: ``string (date-time)``, ``integer``, ``null``."""
    kinds: set[str] = set()
    for branch in branches:
        for json_type in _types(branch):
            kind = json_type
            if json_type == "string" and "format" in branch:
                kind = f"string ({branch['format']})"
            kinds.add(kind)
    return sorted(kinds)


def _values_of(schema: Schema) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    if "enum" in schema:
        return list(schema["enum"])
    return None


def _allowed_values(branches: list[Schema]) -> frozenset[str] | None:
    """The values allowed when every non-null alternative lists them; None when any is open."""
    allowed: set[str] = set()
    for branch in branches:
        if _types(branch) == {"null"}:
            continue
        values = _values_of(branch)
        if values is None:
            return None
        allowed.update(json.dumps(value) for value in values)
    return frozenset(allowed)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
