"""Agora's integration events: one module per publishing service, each listing its ``EVENTS``."""

from __future__ import annotations

import importlib
import pkgutil

from contracts.base import IntegrationEvent, TypeName, parse_type

__all__ = ["IntegrationEvent", "TypeName", "all_events", "parse_type", "publishers"]

# The package's own machinery; every other module is a publisher's.
_TOOLS = frozenset({"base", "compat", "export"})


def publishers() -> dict[str, tuple[type[IntegrationEvent], ...]]:
    """Every publisher module's name and the events it lists, by name."""
    found: dict[str, tuple[type[IntegrationEvent], ...]] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        if module_info.name in _TOOLS or module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        events = getattr(module, "EVENTS", None)
        if events is None:
            # A publisher module that forgot its list would silently publish nothing documented.
            raise LookupError(f"{module.__name__} lists no EVENTS")
        found[module_info.name] = tuple(events)
    return found


def all_events() -> tuple[type[IntegrationEvent], ...]:
    """Every event class of every publisher, ordered by type."""
    events = [event for listed in publishers().values() for event in listed]
    return tuple(sorted(events, key=lambda event: event.type))
