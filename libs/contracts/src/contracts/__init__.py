"""Agora's integration events and commands: one module per service, each listing the ``EVENTS``
it publishes and, when it takes commands, the ``COMMANDS`` it accepts."""

from __future__ import annotations

import importlib
import pkgutil

from contracts.base import IntegrationCommand, IntegrationEvent, TypeName, parse_type, subject_of

__all__ = [
    "IntegrationCommand",
    "IntegrationEvent",
    "TypeName",
    "all_events",
    "parse_type",
    "publishers",
    "subject_of",
]

# The package's own machinery, and the services' HTTP rules (api); every other module is a
# publisher's.
_TOOLS = frozenset({"api", "base", "compat", "export", "traffic"})


def publishers() -> dict[str, tuple[type[IntegrationEvent], ...]]:
    """Every service module's name and the messages it defines (events, then commands)."""
    found: dict[str, tuple[type[IntegrationEvent], ...]] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        if module_info.name in _TOOLS or module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        events = getattr(module, "EVENTS", None)
        if events is None:
            # A publisher module that forgot its list would silently publish nothing documented.
            raise LookupError(f"{module.__name__} lists no EVENTS")
        found[module_info.name] = (*events, *getattr(module, "COMMANDS", ()))
    return found


def all_events() -> tuple[type[IntegrationEvent], ...]:
    """Every event and command class of every service, ordered by type."""
    events = [event for listed in publishers().values() for event in listed]
    return tuple(sorted(events, key=lambda event: event.type))
