"""The containerised system for real: the rendered one-host Compose file under Docker.

The project is rendered into a directory of the test's (orders at two replicas, ports free on this
machine), the backing servers run as the machine's own processes (:mod:`deploy.tests.backing`),
and the Agora containers start in the order the rendering's ``depends_on`` gives (ADR 32). Then:

* a shopper's journey through the gateway: register, log in, an approving card confirms, a
  declining one cancels, the mailbox holds the messages, ``agora verify --url`` passes;
* independent deployment: while checkouts and catalogue reads run for a minute, orders is rolled
  out as a new version by ``deploy/rollout.sh``, one replica at a time. No client request fails,
  every order ends, verify passes, ``GET /api`` reports the new version, and no other container
  was restarted;
* the same load with an orders replica killed (SIGKILL) and brought back: no order is lost.

``pytest -s`` shows the figures of each run.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from shopping import TERMINAL, log_in

from agora_tools.harness import wait_for
from deploy.tests import engine
from deploy.tests.backing import BackingServers
from deploy.tests.journey import buy_once_each_way, register, verify
from deploy.tests.load import Load, Report, Shoppers
from deploy.tests.stack import BACKING, REPO, Deployment

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(1800)]

BUILD_IMAGES = str(REPO / "deploy/build-images.sh")
ROLLOUT = str(REPO / "deploy/rollout.sh")
COMPOSE = engine.PACKAGES["docker-compose"]
ROLLED = "orders"
REPLICAS = 2
# The load: at least 10 checkouts a second for at least a minute, plus catalogue reads. The
# rates stay near that floor: at 11 checkouts and 8 reads a second the shop already kept both
# cores 96% busy, and a saturated machine fails requests whatever a rollout does (ADR 32).
LOAD_SECONDS = 60.0
CHECKOUT_RATE = 10.25
READ_RATE = 5.0
# Shoppers share the checkouts (the gateway limits each user, and registrations per address).
LOAD_SHOPPERS = 6
STOCKED_SKUS = 10
# Orders the load places before the rollout or the kill begins, and while a killed replica is
# down before it is brought back: the change happens under a load already running.
ORDERS_BEFORE_CHANGE = 60
ORDERS_WHILE_DOWN = 60
SETTLE_TIMEOUT = 180.0
# Payments' simulated card processor keeps its cards in payments' own database, so on a machine
# the load holds near 100 % a card's round trip to it can pass the 1 s deadline meant for a real
# processor, and the checkout answers 503 whatever the rollout does. The test's deployment gives
# it 3 s (orders waits 5 s for payments' answer): the rollout, not the machine, is measured here.
SETTINGS = {"payments": {"AGORA_PAYMENTS_PROCESSOR_TIMEOUT": "3"}}


def _print(text: str) -> None:
    print(f"\n{text}", flush=True)


# The deployment.


@pytest.fixture(scope="module")
def deployment(images: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The rendered system, up: backing servers first, then the containers in order."""
    root = tmp_path_factory.mktemp("compose-run") / "agora"
    project = f"agora-deploy-{uuid.uuid4().hex[:8]}"
    deployment = Deployment.render(root, project, {ROLLED: REPLICAS}, SETTINGS)
    started = time.monotonic()
    with BackingServers(deployment.compose_dir, deployment.env()):
        try:
            waves = deployment.up_in_order()
            _print(
                f"system up in {time.monotonic() - started:.1f} s, in waves: "
                + " | ".join(" ".join(wave) for wave in waves)
            )
            yield deployment
        finally:
            deployment.down()


@pytest.fixture(scope="module")
def next_version(images: list[str], deployment: Deployment) -> str:
    """A new image of orders, a version of its own, built before any load runs."""
    version = f"{image_version(deployment, ROLLED)}-next"
    subprocess.run(
        [BUILD_IMAGES, "--base", engine.LOCAL_BASE, "--tag-version", version, ROLLED],
        env={**os.environ, "DOCKER": engine.DOCKER},
        stdout=subprocess.DEVNULL,
        check=True,
        timeout=900,
    )
    return version


@pytest.fixture(scope="module")
def api(deployment: Deployment) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=deployment.gateway_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def admin(deployment: Deployment, api: httpx.Client) -> dict[str, str]:
    env = deployment.env()
    return log_in(api, env["AGORA_ADMIN_EMAIL"], env["AGORA_ADMIN_PASSWORD"])


@pytest.fixture(scope="module")
def skus(api: httpx.Client, admin: dict[str, str]) -> list[str]:
    """Products the load buys, stocked up so that no run sells out."""
    answer = api.get("/api/catalog/products", params={"limit": str(STOCKED_SKUS)})
    assert answer.status_code == 200, answer.text
    chosen = [product["sku"] for product in answer.json()["items"]]
    for sku in chosen:
        stocked = api.post(
            f"/api/inventory/stock/{sku}/adjustments",
            json={"delta": 1_000_000, "reason": "deploy test: never sell out"},
            headers=admin,
        )
        assert stocked.status_code == 200, stocked.text
    return chosen


@pytest.fixture(scope="module")
def shoppers(api: httpx.Client, skus: list[str]) -> Shoppers:
    bearers = [register(api).headers["authorization"] for _ in range(LOAD_SHOPPERS)]
    return Shoppers([bearer.removeprefix("Bearer ") for bearer in bearers], skus)


def image_version(deployment: Deployment, service: str) -> str:
    """The tag a service's image has unless the env file says otherwise (the rendered default)."""
    image = deployment.rendered()["services"][f"{service}-0"]["image"]
    return str(image.rsplit(":-", 1)[1].rstrip("}"))


# What the tests look at.


def all_orders(api: httpx.Client, admin: dict[str, str]) -> list[dict[str, Any]]:
    """Every order of the shop, as its admin lists them."""
    found: list[dict[str, Any]] = []
    cursor = ""
    while True:
        params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
        answer = api.get("/api/orders", params=params, headers=admin)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        found += page["items"]
        cursor = page.get("next_cursor") or ""
        if not cursor:
            return found


def settled_orders(
    api: httpx.Client, admin: dict[str, str], placed: list[str]
) -> list[dict[str, Any]]:
    """Every order of the shop once all are terminal and every one the load placed is there;
    after the bound, whatever there is, for the assertions to name what is missing."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        orders = all_orders(api, admin)
        known = {order["id"] for order in orders}
        done = all(order["status"] in TERMINAL for order in orders)
        if (done and known >= set(placed)) or time.monotonic() > deadline:
            return orders
        time.sleep(1.0)


def assert_no_order_lost(
    api: httpx.Client, admin: dict[str, str], report: Report
) -> list[dict[str, Any]]:
    orders = settled_orders(api, admin, report.order_ids)
    missing = set(report.order_ids) - {order["id"] for order in orders}
    assert not missing, f"{len(missing)} placed orders are gone: {sorted(missing)[:10]}"
    stuck = [f"{o['id']} {o['status']}" for o in orders if o["status"] not in TERMINAL]
    assert not stuck, f"{len(stuck)} orders never ended: {stuck[:10]}"
    return orders


def containers(deployment: Deployment, *, except_service: str) -> dict[str, tuple[str, str]]:
    """Each container of the project but the replicas of one service: (id, start time)."""
    names = [
        name
        for name in deployment.rendered()["services"]
        if name not in BACKING and not is_replica(name, except_service)
    ]
    ids = [deployment.container(name) for name in names]
    states = deployment.inspect(*ids)
    return {
        name: (state["Id"], state["State"]["StartedAt"])
        for name, state in zip(names, states, strict=True)
    }


def is_replica(name: str, service: str) -> bool:
    prefix, _, number = name.rpartition("-")
    return prefix == service and number.isdigit()


def reported_versions(api: httpx.Client, service: str) -> list[Any]:
    """What ``GET /api`` says each replica of ``service`` runs."""
    answer = api.get("/api")
    assert answer.status_code == 200, answer.text
    (entry,) = [s for s in answer.json()["services"] if s["name"] == service]
    return [instance.get("version") for instance in entry["instances"]]


def explain(deployment: Deployment, report: Report, title: str) -> str:
    """The report, and what the containers logged about the requests that failed."""
    ids = set(re.findall(r'"request_id":"([0-9a-f]+)"', "\n".join(map(str, report.failures))))
    logged = deployment.compose("logs", "--no-color", timeout=120).splitlines()
    about = [line for line in logged if any(request in line for request in ids)]
    return "\n".join([report.summary(title), "What the containers logged about them:", *about])


def under_load(
    deployment: Deployment,
    shoppers: Shoppers,
    change: Callable[[Load], None],
) -> tuple[Report, float, float]:
    """Runs the load and, once it has placed its first orders, ``change`` beside it. Returns
    the load's report, when the change ended and when the load did (seconds from its start)."""
    load = Load(deployment.gateway_url, shoppers)
    with ThreadPoolExecutor(max_workers=1) as pool:
        running: Future[Report] = pool.submit(
            asyncio.run, load.run(LOAD_SECONDS, CHECKOUT_RATE, READ_RATE)
        )
        try:
            wait_for(
                "the load's first orders",
                lambda: len(load.report.order_ids) >= ORDERS_BEFORE_CHANGE or None,
                timeout=60,
            )
            change(load)
            changed = time.monotonic() - load.began
        finally:
            report = running.result(timeout=LOAD_SECONDS + 120)
        ended = time.monotonic() - load.began
    return report, changed, ended


# The tests.


def test_a_shopper_buys_through_the_containerised_shop(
    deployment: Deployment, api: httpx.Client
) -> None:
    buy_once_each_way(api)
    _print(f"journey: {verify(deployment)}")


def test_orders_is_replaced_one_replica_at_a_time_while_the_shop_sells(
    deployment: Deployment,
    next_version: str,
    api: httpx.Client,
    admin: dict[str, str],
    shoppers: Shoppers,
) -> None:
    before = containers(deployment, except_service=ROLLED)
    old = {deployment.container(f"{ROLLED}-{r}") for r in range(REPLICAS)}
    took: list[float] = []

    def roll_out(load: Load) -> None:
        started = time.monotonic()
        subprocess.run(
            [REPO / "deploy/rollout.sh", *deployment.rollout_options(), ROLLED, next_version],
            env={
                **os.environ,
                "DOCKER": engine.DOCKER,
                "COMPOSE": engine.PACKAGES["docker-compose"],
            },
            check=True,
            timeout=600,
        )
        took.append(time.monotonic() - started)

    report, rolled_at, ended_at = under_load(deployment, shoppers, roll_out)
    _print(report.summary("rollout under load"))
    _print(f"rollout of {next_version}: {took[0]:.1f} s, over {rolled_at:.1f} s into the load")

    assert report.seconds >= LOAD_SECONDS
    assert report.checkouts_per_second >= 10
    assert rolled_at < ended_at, "the load ended before the rollout did"
    assert not report.failures, explain(deployment, report, "failed requests during the rollout")
    orders = assert_no_order_lost(api, admin, report)
    _print(f"after the rollout: {len(orders)} orders, all terminal; {verify(deployment)}")

    new = {deployment.container(f"{ROLLED}-{r}") for r in range(REPLICAS)}
    assert not new & old, "a replica of orders was not replaced"
    assert f"{ROLLED.upper()}_TAG={next_version}" in deployment.env_file.read_text()
    assert containers(deployment, except_service=ROLLED) == before
    assert reported_versions(api, ROLLED) == [next_version] * REPLICAS


def test_a_killed_orders_replica_loses_no_order(
    deployment: Deployment,
    api: httpx.Client,
    admin: dict[str, str],
    shoppers: Shoppers,
) -> None:
    victim = f"{ROLLED}-1"
    downtime: list[float] = []

    def kill_and_bring_back(load: Load) -> None:
        container = deployment.container(victim)
        killed = time.monotonic()
        engine.docker("kill", container)
        placed = len(load.report.order_ids)
        wait_for(
            "orders placed while a replica is down",
            lambda: len(load.report.order_ids) >= placed + ORDERS_WHILE_DOWN or None,
            timeout=60,
        )
        deployment.compose("up", "-d", "--no-deps", victim)
        deployment.wait_for([victim])
        downtime.append(time.monotonic() - killed)

    report, back_at, _ = under_load(deployment, shoppers, kill_and_bring_back)
    _print(report.summary(f"{victim} killed under load"))
    _print(f"{victim} killed and healthy again after {downtime[0]:.1f} s ({back_at:.1f} s in)")

    orders = assert_no_order_lost(api, admin, report)
    _print(f"after the kill: {len(orders)} orders, all terminal; {verify(deployment)}")
