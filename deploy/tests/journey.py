"""The shopper's journey and the consistency check, against a deployed shop's gateway: what
every real run (Compose, podman) shows a user can do."""

from __future__ import annotations

import os
import subprocess
import uuid

import httpx
from shopping import APPROVED, DECLINED, Shopper, log_in

from deploy.tests.stack import AGORA, Deployment


def register(api: httpx.Client) -> Shopper:
    email = f"shopper-{uuid.uuid4().hex[:10]}@example.com"
    password = f"plum-orchard-{uuid.uuid4().hex[:8]}"
    answer = api.post("/api/identity/users", json={"email": email, "password": password})
    assert answer.status_code == 201, answer.text
    return Shopper(api, log_in(api, email, password), email)


def buy_once_each_way(api: httpx.Client) -> None:
    """Register, log in, an approving card to CONFIRMED, a declining one to CANCELLED, and the
    messages of each in the shopper's mailbox."""
    products = api.get("/api/catalog/products", params={"limit": "30"})
    assert products.status_code == 200, products.text
    sku = products.json()["items"][-1]["sku"]
    shopper = register(api)
    assert shopper.wait_for_messages(1, kind="welcome")

    approved = shopper.place([{"sku": sku, "quantity": 1}], APPROVED)
    assert approved.status_code in {201, 202}, approved.text
    assert shopper.wait_until_terminal(approved.json()["id"])["status"] == "CONFIRMED"
    declined = shopper.place([{"sku": sku, "quantity": 1}], DECLINED)
    assert declined.status_code in {201, 202}, declined.text
    assert shopper.wait_until_terminal(declined.json()["id"])["status"] == "CANCELLED"

    assert shopper.wait_for_messages(1, kind="order_confirmed")
    assert shopper.wait_for_messages(1, kind="order_cancelled")


def verify(deployment: Deployment) -> str:
    """``agora verify --url`` against the gateway, as its admin; fails the test on a violation."""
    env = deployment.env()
    admin = {k: env[k] for k in ("AGORA_ADMIN_EMAIL", "AGORA_ADMIN_PASSWORD")}
    result = subprocess.run(
        [AGORA, "verify", "--url", deployment.gateway_url, "--wait", "120"],
        env={**os.environ, **admin},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"agora verify failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout.strip()
