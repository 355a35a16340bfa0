"""``agora verify``: check the running system's invariants across services; exit 0 only when all
hold, printing each violation otherwise."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import aiohttp
import typer
from rich.console import Console
from rich.markup import escape

from agora_tools.runner import Layout, running_state
from consistency.checks import Report, check
from consistency.snapshot import SHIPMENT_GRACE, Gateway, ReadFailed, read_settled

# The defaults identity itself falls back to in the embedded profile.
DEFAULT_ADMIN_EMAIL = "admin@agora.local"
DEFAULT_ADMIN_PASSWORD = "agora-admin-password"  # noqa: S105 (the embedded profile's default)

console = Console()


def gateway_url(given: str | None, directory: Path) -> str:
    """``--url``, else the gateway of the system ``agora up`` runs in ``directory``."""
    if given:
        return given
    state = running_state(Layout.of(directory))
    if state is None or not state.gateway_url:
        raise ReadFailed(
            f"no Agora system runs in {directory.resolve()} (start one with `agora up`, or give "
            "--url with a gateway's address)"
        )
    return state.gateway_url


async def run_checks(
    url: str,
    email: str,
    password: str,
    *,
    wait: float = 60.0,
    shipment_grace: timedelta = SHIPMENT_GRACE,
) -> Report:
    """Log in at the gateway ``url`` and check every invariant once the orders have settled."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        gateway = Gateway(session, url)
        await gateway.log_in(email, password)
        settled = await read_settled(gateway, wait=wait, shipment_grace=shipment_grace)
        return check(settled, shipment_grace=shipment_grace)


def verify(
    url: Annotated[
        str | None,
        typer.Option("--url", help="A gateway (default: the system `agora up` runs here)."),
    ] = None,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            help="Seconds to wait for orders in progress to end, and for the messages and "
            "shipments on their way, before checking.",
        ),
    ] = 60.0,
    shipment_grace: Annotated[
        float,
        typer.Option(
            "--shipment-grace",
            min=0,
            help="Seconds a CONFIRMED order may be without its shipment after its confirmation "
            "(shipping makes it from the confirmation event: well under a second, up to about "
            "18 s through the broker's redeliveries). Within it the order is waited for (up to "
            "--wait) and then left unjudged; past it, no shipment is a violation.",
        ),
    ] = SHIPMENT_GRACE.total_seconds(),
) -> None:
    """Check the running system's invariants across services; exit 1 on any violation.

    Every order terminal after its checkout deadline; per SKU, opening stock plus adjustments
    minus confirmed sales equals inventory's on-hand, never negative, with no reservation left
    for a terminal order; per order, captured minus refunded equals its total when CONFIRMED
    and zero when CANCELLED, never two captures; the payments ledger balances; one welcome per
    user and one message per CONFIRMED or CANCELLED order, in its owner's mailbox.

    When the topology declares shipping (the gateway's GET /api): every CONFIRMED order has
    exactly one shipment once --shipment-grace has passed, no CANCELLED order has one that is
    not cancelled, no shipment is of an order orders does not know, and every dispatched or
    delivered shipment has exactly one shipment_dispatched message. Shipping declared but not
    answering is a read failure (exit 2), as for any service; a system without shipping is
    checked without it, and says so.

    Logs in with AGORA_ADMIN_EMAIL and AGORA_ADMIN_PASSWORD.
    """
    email = os.environ.get("AGORA_ADMIN_EMAIL", DEFAULT_ADMIN_EMAIL)
    password = os.environ.get("AGORA_ADMIN_PASSWORD", DEFAULT_ADMIN_PASSWORD)
    try:
        target = gateway_url(url, Path.cwd())
        grace = timedelta(seconds=shipment_grace)
        report = asyncio.run(run_checks(target, email, password, wait=wait, shipment_grace=grace))
    except (ReadFailed, aiohttp.ClientError, TimeoutError) as error:
        Console(stderr=True).print(f"[bold red]Could not read the system:[/] {error}")
        raise typer.Exit(2) from None
    summary = ", ".join(f"{count} {what}" for what, count in report.counts.items())
    for violation in report.violations:
        console.print(f"[red]✗[/] {escape(str(violation))}", highlight=False, soft_wrap=True)
    if report.in_progress:
        console.print(
            f"{len(report.in_progress)} order(s) still in progress before their deadline: "
            "their stock and money were not judged.",
            highlight=False,
            soft_wrap=True,
        )
    for note in report.notes:
        console.print(escape(note), highlight=False, soft_wrap=True)
    if report.ok:
        console.print(
            f"[green]✓[/] every invariant holds ({summary})", highlight=False, soft_wrap=True
        )
        return
    console.print(
        f"[bold red]{len(report.violations)} violation(s)[/] ({summary})",
        highlight=False,
        soft_wrap=True,
    )
    sys.stdout.flush()
    raise typer.Exit(1)
