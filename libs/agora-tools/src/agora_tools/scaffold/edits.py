"""The edits that make a new service one of the workspace's: its name added to every list in the
root ``pyproject.toml`` that names every service, its table appended to ``topology.toml``, and
what it consumes added to the contracts' traffic (the broker's permissions, ADR 25).

Each edit is made in the text, so the files keep their comments and layout; an edit that finds
nothing to change says so (:class:`EditFailed`) rather than leaving a service half registered.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection, Iterator
from dataclasses import dataclass

LINE_LENGTH = 100


class EditFailed(Exception):
    """A file is not laid out as the edit expects."""


@dataclass(frozen=True, slots=True)
class Span:
    start: int  # the opening '['
    end: int  # just after the closing ']'


def _arrays(text: str) -> Iterator[Span]:
    """Every array value (``key = [ ... ]``) of a TOML text, strings and comments skipped."""
    for match in re.finditer(r"(?m)^[A-Za-z0-9_.\-\"]+\s*=\s*\[", text):
        depth, index, quote = 0, match.end() - 1, ""
        while index < len(text):
            char = text[index]
            if quote:
                if char == "\\":
                    index += 1
                elif char == quote:
                    quote = ""
            elif char in "\"'":
                quote = char
            elif char == "#":
                index = text.index("\n", index)
                continue
            elif char == "[":
                depth += 1
            elif char == "]":
                depth -= 1
                if depth == 0:
                    yield Span(match.end() - 1, index + 1)
                    break
            index += 1


def _strings(array: str) -> list[str] | None:
    """The items of a TOML array when they are all strings, else None."""
    try:
        value = tomllib.loads(f"value = {array}")["value"]
    except tomllib.TOMLDecodeError:
        return None
    return value if all(isinstance(item, str) for item in value) else None


def _append(text: str, span: Span, item: str) -> str:
    """``text`` with ``"item"`` after the last item of the array at ``span``, laid out as the
    array is: on one line if it is one line, on a line of its own if each item has one, else on
    the last line while it fits."""
    inner = text[span.start : span.end - 1]
    trailing_comma = inner.rstrip().endswith(",")
    position = span.start + len(inner.rstrip().rstrip(",").rstrip())  # after the last item
    line_start = text.rfind("\n", 0, position) + 1
    line = text[line_start:position]
    indent = line[: len(line) - len(line.lstrip())]
    one_per_line = line.strip().count('", "') == 0 and "\n" in inner
    addition = f'"{item}"'
    if "\n" not in inner:
        separator = ", "
    elif one_per_line or len(line) + len(addition) + 3 > LINE_LENGTH:
        separator = ",\n" + indent
    else:
        separator = ", "
    inserted = separator + addition + ("," if trailing_comma else "")
    return text[:position] + inserted + text[position + int(trailing_comma) :]


def add_to_service_lists(text: str, services: Collection[str], name: str) -> str:
    """Add ``name`` to every array that holds each of ``services`` (and ``name.domain`` to every
    one that holds each ``<service>.domain``), ``services/name/src`` to the mypy path beside the
    others, and ``name`` to the workspace's sources."""
    for span in reversed(list(_arrays(text))):
        items = _strings(text[span.start : span.end])
        if items is None:
            continue
        if set(services) <= set(items):
            text = _append(text, span, name)
        elif {f"{service}.domain" for service in services} <= set(items):
            text = _append(text, span, f"{name}.domain")
    return _add_workspace_source(_add_to_mypy_path(text, services, name), services, name)


def _add_to_mypy_path(text: str, services: Collection[str], name: str) -> str:
    def extend(match: re.Match[str]) -> str:
        paths = match.group(2).split(":")
        ours = [i for i, path in enumerate(paths) if path.startswith("services/")]
        if {f"services/{service}/src" for service in services} - set(paths):
            return match.group(0)
        paths.insert(ours[-1] + 1, f"services/{name}/src")
        return f'{match.group(1)}"{":".join(paths)}"'

    return re.sub(r'(?m)^(mypy_path\s*=\s*)"([^"]*)"', extend, text)


def _add_workspace_source(text: str, services: Collection[str], name: str) -> str:
    header = text.find("\n[tool.uv.sources]\n")
    if header < 0:
        raise EditFailed("pyproject.toml has no [tool.uv.sources] table")
    body_start = header + len("\n[tool.uv.sources]\n")
    next_table = text.find("\n[", body_start)
    body_end = len(text) if next_table < 0 else next_table + 1
    lines = text[body_start:body_end].splitlines(keepends=True)
    last = max(
        (i for i, line in enumerate(lines) if line.split("=")[0].strip() in services),
        default=None,
    )
    if last is None:
        raise EditFailed("[tool.uv.sources] in pyproject.toml names no service")
    lines.insert(last + 1, f"{name} = {{ workspace = true }}\n")
    return text[:body_start] + "".join(lines) + text[body_end:]


def topology_table(name: str, depends_on: Collection[str]) -> str:
    """The new service's ``[services.NAME]`` table."""
    needs = ", ".join(f'"{service}"' for service in depends_on)
    return f"""
[services.{name}]
module = "{name}.bootstrap"
# Its paths name what they serve (/{name}), so the gateway adds only /api.
prefix = "/api"
store = "postgres"
replicas = 1
max_replicas = 4
depends_on = [{needs}]
routes = [
    {{ methods = ["GET", "POST"], path = "/{name}", auth = "user" }},
]
"""


def add_topology_table(text: str, name: str, depends_on: Collection[str]) -> str:
    return text.rstrip("\n") + "\n" + topology_table(name, depends_on)


def add_consumer(text: str, name: str, consumes: Collection[str]) -> str:
    """``contracts/traffic.py`` with ``name`` consuming ``consumes`` (``module.Event`` each, of
    modules the file imports) in its ``CONSUMES``."""
    start = re.search(r"(?m)^CONSUMES\b.*= \{\n", text)
    if start is None:
        raise EditFailed("the contracts' traffic has no CONSUMES table")
    end = text.find("\n}\n", start.end())
    if end < 0:
        raise EditFailed("the contracts' traffic has no end to its CONSUMES table")
    events = "".join(f"{event}, " for event in consumes).rstrip(" ")
    line = f'    "{name}": ({events}),\n'
    return text[: end + 1] + line + text[end + 1 :]
