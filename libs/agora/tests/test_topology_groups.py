"""Groups of services that run in one process (ADR 53), as ``topology.toml`` names them: what a
group may hold, refused with an error naming the group and what is wrong, and ``--together``'s
one group of every Python service and the gateway."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from agora.topology import TOGETHER, Topology, load_topology

SERVICES = {
    "catalog": {"module": "catalog.bootstrap"},
    "cart": {"module": "cart.bootstrap"},
    "orders": {"module": "orders.bootstrap"},
    "shipping": {"runtime": "node", "path": "services/shipping"},
}


def grouped(groups: dict[str, Any]) -> Topology:
    return Topology.model_validate({"services": SERVICES, "groups": groups})


def test_a_group_names_services_and_perhaps_the_gateway() -> None:
    topology = grouped({"shop": ["catalog", "cart", "gateway"]})

    assert topology.group_of("cart") == topology.group_of("gateway") == "shop"
    assert topology.group_of("orders") is None


@pytest.mark.parametrize(
    ("groups", "said"),
    [
        ({"shop": ["catalog"]}, "group shop names 1 member: it needs two"),
        ({"shop": ["catalog", "catalog"]}, "group shop names 1 member: it needs two"),
        ({"shop": ["catalog", "stock"]}, "group shop names an unknown service 'stock'"),
        ({"shop": ["catalog", "shipping"]}, "names shipping, a node service"),
        ({"a": ["catalog", "cart"], "b": ["cart", "orders"]}, "cart is in two groups, a and b"),
        ({"cart": ["catalog", "orders"]}, "group name 'cart' must be"),
        ({"Shop": ["catalog", "orders"]}, "group name 'Shop' must be"),
    ],
)
def test_a_group_that_cannot_be_is_refused_saying_why(groups: dict[str, Any], said: str) -> None:
    with pytest.raises(ValidationError) as refused:
        grouped(groups)

    assert said in str(refused.value)


def test_together_is_one_group_of_every_python_service_and_the_gateway() -> None:
    topology = grouped({"shop": ["catalog", "cart"]}).together()

    assert topology.groups == {TOGETHER: ("catalog", "cart", "orders", "gateway")}


def test_the_repository_s_topology_names_no_group() -> None:
    # One image and one Deployment per service: rendering a group into one comes later.
    assert load_topology().groups == {}
