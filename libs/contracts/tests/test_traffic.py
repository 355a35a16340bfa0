"""The traffic the broker's permissions come from (ADR 25) says what the services do: every
subscription a service declares is one its broker user may consume, and nothing more."""

from __future__ import annotations

import importlib
import inspect
from typing import Any
from unittest.mock import Mock

import pytest

from agora.topology import load_topology
from contracts.traffic import traffic

# Every Python service the topology declares, one written by `agora new` included. A service in
# another language declares its subscriptions in its own code: its own tests run it under exactly
# its broker user's grant (services/shipping/test, ADR 39).
SERVICES = tuple(s.name for s in load_topology() if s.runtime == "python")


def declared_subjects(service: str) -> set[str]:
    """The subjects of the subscriptions ``service``'s entry points declare.

    Each service builds them around what its bootstrap picks (its Parts: stores, a clock);
    building them only hands those to the handlers and calls none of them, so a stand-in that
    records nothing serves for every argument here.
    """
    module = importlib.import_module(f"{service}.entrypoints")
    build: Any = getattr(module, "subscriptions", None)
    if build is None:
        return set()
    parameters = inspect.signature(build).parameters.values()
    arguments = {
        p.name: Mock(name=p.name) for p in parameters if p.default is inspect.Parameter.empty
    }
    return {subscription.subject for subscription in build(**arguments)}


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_consumes_exactly_what_its_broker_user_may(service: str) -> None:
    assert declared_subjects(service) == set(traffic()[service].consumes)


def test_a_service_publishes_its_own_events_and_sends_only_commands_of_others() -> None:
    for service, subjects in traffic().items():
        for subject in subjects.publishes:
            _, owner, kind, *_ = subject.split(".")
            assert (owner, kind) == (service, "events") or kind == "commands", subject


def test_every_message_a_service_consumes_is_still_published_or_sent_by_one() -> None:
    # An event's older version stays published while a service here consumes it (ADR 38).
    sent = {subject for subjects in traffic().values() for subject in subjects.publishes}
    for service, subjects in traffic().items():
        assert set(subjects.consumes) <= sent, service
