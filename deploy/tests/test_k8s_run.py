"""The Kubernetes manifests started for real: the ``local`` overlay under ``podman kube play``.

No Kubernetes API server can run here; podman runs Kubernetes YAML without one. The project is
rendered into a directory of the test's (ports free on this machine), its ``local`` overlay built
with the kustomize inside ``kubectl``, the images of the Docker tests moved into podman's store,
the secrets made podman secrets, and the backing servers run as the machine's own processes
(:mod:`deploy.tests.backing`) at the rendering's ports. Then every process answers ready, each
pod runs as its manifest says, and a shopper's journey and ``agora verify --url`` pass through
the gateway. Everything is removed afterwards, pods, secrets and volumes, whatever happened.

``pytest -s`` shows how long each step took.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from agora.topology import GATEWAY
from agora_tools.k8s.local import scratch_volume
from agora_tools.k8s.workloads import IMAGE_USER, TOPOLOGY_CONFIGMAP, processes
from deploy.tests import podman
from deploy.tests.backing import BackingServers
from deploy.tests.journey import buy_once_each_way, verify
from deploy.tests.podman import Podman, container_name
from deploy.tests.stack import Deployment

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(1800)]

KUBECTL = str(Path(sys.executable).with_name("kubectl"))
# Migrations, then a process's start: what the overlay's startup probe allows (two minutes).
READY_TIMEOUT = 180.0
POLL = 0.5


def _print(text: str) -> None:
    print(f"\n{text}", flush=True)


class Timer:
    """How long each step took, printed as it ends."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def lap(self, step: str) -> None:
        now = time.monotonic()
        _print(f"{step}: {now - self.last:.1f} s")
        self.last = now


@pytest.fixture(scope="module")
def pods(images: list[str], tmp_path_factory: pytest.TempPathFactory) -> Podman:
    """Podman, installed and configured, holding the images the Docker tests built."""
    timer = Timer()
    podman.ensure_installed()
    client = Podman.configured(tmp_path_factory.mktemp("podman"))
    moved = client.load(images)
    timer.lap(f"podman installed, {len(moved)} of {len(images)} images moved into its store")
    return client


@pytest.fixture(scope="module")
def deployment(pods: Podman, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The rendered system, its local overlay played by podman on the backing servers."""
    timer = Timer()
    root = tmp_path_factory.mktemp("k8s-run") / "agora"
    deployment = Deployment.render(root, f"agora-k8s-{uuid.uuid4().hex[:8]}", {})
    manifest = root / "local.yaml"
    manifest.write_text(kustomize(root / "deploy" / "k8s" / "overlays" / "local"))
    topology = deployment.topology()
    secrets = podman.secret_values(topology, deployment.env())
    timer.lap("rendered, local overlay built")
    with BackingServers(deployment.compose_dir, deployment.env()):
        timer.lap("backing servers up, databases made")
        try:
            pods.create_secrets(secrets)
            pods.play(manifest)
            timer.lap("podman kube play (each pod's migrations, then its process)")
            wait_until_ready(pods, deployment)
            timer.lap("every process ready")
            yield deployment
        finally:
            with ExitStack() as cleanup:
                # Each runs even if one before it failed.
                cleanup.callback(timer.lap, "pods, secrets and volumes removed")
                cleanup.callback(pods.remove_volumes, podman.volume_names(manifest))
                cleanup.callback(pods.remove_secrets, secrets)
                cleanup.callback(pods.down, manifest)


def kustomize(overlay: Path) -> str:
    built = subprocess.run(
        [KUBECTL, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120
    )
    assert built.returncode == 0, f"kubectl kustomize {overlay} failed:\n{built.stderr}"
    return built.stdout


def ports(deployment: Deployment) -> dict[str, int]:
    """Each process's port on the host: the ``[host]`` table's."""
    topology = deployment.topology()
    host_ports = topology.host_ports()
    return {
        name: topology.host.gateway if name == GATEWAY else host_ports[name][0]
        for name in processes(topology)
    }


def wait_until_ready(pods: Podman, deployment: Deployment) -> None:
    """Until every process answers ``/readyz`` with 200; fail with the logs of those that do
    not after the bound. Podman 4.3 ignores readiness probes, so the test asks as they would."""
    waiting = ports(deployment)
    deadline = time.monotonic() + READY_TIMEOUT
    with httpx.Client(timeout=5) as client:
        while waiting:
            for name, port in list(waiting.items()):
                try:
                    if client.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        del waiting[name]
                except httpx.TransportError:
                    pass
            if waiting and time.monotonic() > deadline:
                logs = "\n".join(
                    f"--- {name}:\n{pods.logs(container_name(name, name))}" for name in waiting
                )
                pytest.fail(f"not ready after {READY_TIMEOUT:g} s: {sorted(waiting)}\n{logs}")
            if waiting:
                time.sleep(POLL)


# The tests.


def test_each_pod_runs_as_its_manifest_says(pods: Podman, deployment: Deployment) -> None:
    for name in processes(deployment.topology()):
        container = container_name(name, name)
        state = pods.inspect(container)
        host = state["HostConfig"]
        mounts = {mount["Destination"]: mount for mount in state["Mounts"]}
        assert state["Config"]["User"] == f"{IMAGE_USER}:{IMAGE_USER}", name
        assert host["ReadonlyRootfs"] is True, name
        assert host["NetworkMode"] == "host", name
        assert host["RestartPolicy"]["Name"] == "on-failure", name
        assert not state["EffectiveCaps"], name
        assert mounts["/etc/agora"]["Name"] == TOPOLOGY_CONFIGMAP, name
        assert mounts["/etc/agora"]["RW"] is False, name
        assert mounts["/tmp"]["Name"] == scratch_volume(name), name  # noqa: S108 (the pod's)
        # The liveness probe, as podman runs it: the overlay's command in the container.
        assert pods.healthy(container), f"{name}'s liveness probe failed under podman"


def test_a_shopper_buys_through_the_shop_podman_runs(deployment: Deployment) -> None:
    timer = Timer()
    with httpx.Client(base_url=deployment.gateway_url, timeout=60) as api:
        buy_once_each_way(api)
    timer.lap("shopper's journey")
    verified = verify(deployment)
    timer.lap(f"agora verify --url: {verified}")
