"""What a deployment may scale, as ``topology.toml`` says it (ADR 33): each process's replica
bounds and resources, refused with an error naming the service and what is wrong."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from agora.topology import Topology, load_topology


def service(**spec: Any) -> Topology:
    return Topology.model_validate({"services": {"orders": {"module": "orders.bootstrap", **spec}}})


def refusal(**spec: Any) -> str:
    with pytest.raises(ValidationError) as refused:
        service(**spec)
    return str(refused.value)


def test_a_service_scales_between_its_bounds_which_default_to_its_replicas() -> None:
    assert service().services["orders"].scaling == (1, 1)
    assert service(replicas=2).services["orders"].scaling == (2, 2)
    assert service(max_replicas=6).services["orders"].scaling == (1, 6)
    assert service(replicas=2, min_replicas=2, max_replicas=4).services["orders"].scaling == (2, 4)


def test_a_service_on_sqlite_may_not_run_or_scale_past_one_replica() -> None:
    assert service(store="sqlite").services["orders"].scaling == (1, 1)

    for spec in ({"replicas": 2}, {"max_replicas": 3}):
        message = refusal(store="sqlite", **spec)
        assert "services.orders" in message
        assert "SQLite" in message
        assert 'store = "postgres"' in message


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ({"replicas": 3, "max_replicas": 2}, "replicas = 3 is above max_replicas = 2"),
        ({"replicas": 1, "min_replicas": 2}, "replicas = 1 is below min_replicas = 2"),
        ({"max_replicas": 17}, "less than or equal to 16"),
        ({"resources": {"memory": "1Gi", "memory_limit": "512Mi"}}, "memory_limit 512Mi is below"),
        ({"resources": {"cpu": "lots"}}, "'lots' is not a quantity"),
        ({"resources": {"gpu": "1"}}, "Extra inputs are not permitted"),
    ],
)
def test_bounds_and_resources_that_cannot_be_are_refused_saying_why(
    spec: dict[str, Any], said: str
) -> None:
    message = refusal(**spec)

    assert "services.orders" in message
    assert said in message


def test_the_gateway_scales_between_its_own_bounds() -> None:
    gateway = Topology.model_validate(
        {"gateway": {"min_replicas": 2, "max_replicas": 5}, "services": {}}
    ).gateway

    assert gateway.scaling == (2, 5)
    with pytest.raises(ValidationError, match="min_replicas = 3 is above max_replicas = 2"):
        Topology.model_validate({"gateway": {"min_replicas": 3, "max_replicas": 2}, "services": {}})


def test_the_repository_s_topology_lets_every_process_scale() -> None:
    topology = load_topology()

    assert all(s.scaling[1] > 1 and s.store != "sqlite" for s in topology)
    assert topology.gateway.scaling[1] > 1
