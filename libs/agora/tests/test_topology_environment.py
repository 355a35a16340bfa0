"""The variables a service's processes start with (``environment`` in ``topology.toml``, ADR 65):
what a name and a value may be, and a group's process, which starts with all its members'."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from agora.topology import Topology

TUNED = "glibc.malloc.mmap_threshold=4194304"


def topology(environments: dict[str, dict[str, str]], **groups: list[str]) -> Topology:
    services: dict[str, Any] = {
        name: {"module": f"{name}.bootstrap", "environment": environments.get(name, {})}
        for name in ("identity", "catalog", "cart")
    }
    return Topology.model_validate({"services": services, "groups": groups})


def test_a_process_starts_with_its_service_s_variables_and_a_group_s_with_its_members() -> None:
    shop = topology({"identity": {"GLIBC_TUNABLES": TUNED}, "cart": {"TZ": "UTC"}})

    assert shop.environment_of(["identity"]) == {"GLIBC_TUNABLES": TUNED}
    assert shop.environment_of(["catalog"]) == {}
    assert shop.environment_of(["gateway"]) == {}
    assert shop.together().environment_of(shop.together().groups["together"]) == {
        "GLIBC_TUNABLES": TUNED,
        "TZ": "UTC",
    }


@pytest.mark.parametrize(
    ("environment", "said"),
    [
        ({"AGORA_IDENTITY_PORT": "1"}, "AGORA_IDENTITY_PORT is a setting: it belongs in the env"),
        ({"NOT A NAME": "1"}, "'NOT A NAME' is not the name of an environment variable"),
        ({"GREETING": "${SECRET}"}, "GREETING's value may not hold a '$'"),
    ],
)
def test_a_variable_that_cannot_be_given_is_refused_saying_why(
    environment: dict[str, str], said: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        topology({"identity": environment})

    assert said in str(refused.value)


def test_members_that_disagree_on_a_variable_cannot_share_a_process() -> None:
    clashing = {"identity": {"GLIBC_TUNABLES": TUNED}, "cart": {"GLIBC_TUNABLES": ""}}
    said = "identity and cart start their process with different values of GLIBC_TUNABLES"

    with pytest.raises(ValidationError) as refused:
        topology(clashing, shop=["identity", "catalog", "cart"])
    assert f"group shop: {said}" in str(refused.value)

    # Apart they may differ; --together puts them in one process, and is refused.
    with pytest.raises(ValueError, match=f"group together: {said}"):
        topology(clashing).together()
