"""Mail: every message goes to its user's address through the configured SMTP server, once the
address is known, at least once and recognisably so, and never from two senders at once."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from agora.tasks import Bell
from agora_tools.testing import User, an_order, free_port
from notifications import application
from notifications.adapters import SqlMessages
from notifications.application import Mail, Parts, claim_messages
from notifications.domain import Kind, Status
from notifications.settings import NotificationsSettings

from .conftest import PATIENCE, SHOP, Bench, Postbox, a_user, act, app_for, mail_server


async def test_a_message_is_mailed_to_its_user(bench: Bench, smtp: tuple[Postbox, int]) -> None:
    postbox, port = smtp
    ada, order_id = a_user(), an_order()
    await bench.register(ada)
    await bench.confirm(order_id, ada, total=4250)

    assert await bench.sender(port).run_once() == 2

    mailbox = {message.kind: message for message in await bench.mailbox(ada)}
    confirmed = mailbox[Kind.ORDER_CONFIRMED]
    (mail,) = [m for m in postbox.received if m.mail["Subject"] == confirmed.subject]
    assert mail.rcpt_tos == [ada.email]
    assert mail.mail["To"] == ada.email
    assert mail.mail["From"] == SHOP
    assert mail.mail_from == "shop@example.com"
    assert mail.mail["Subject"] == f"Your order {order_id} is confirmed"
    assert mail.message_id == f"<{confirmed.id}@example.com>"
    assert mail.body == confirmed.body
    assert "EUR 42.50" in mail.body
    assert {m.message_id for m in postbox.received} == {
        f"<{message.id}@example.com>" for message in mailbox.values()
    }
    assert all(m.delivery.status is Status.SENT for m in mailbox.values())
    assert all(m.delivery.sent_at is not None for m in mailbox.values())
    assert await bench.sender(port).run_once() == 0  # nothing is sent twice


async def test_with_the_server_down_a_message_waits_and_goes_once_it_listens(
    bench: Bench,
) -> None:
    port = free_port()
    ada = a_user()
    await bench.register(ada)
    sender = bench.sender(port)

    assert await sender.run_once() == 1  # tried: nobody listens
    (waiting,) = await bench.mailbox(ada)
    assert waiting.delivery.status is Status.PENDING
    assert waiting.delivery.attempts == 1
    assert waiting.delivery.last_error
    assert await sender.run_once() == 0  # not again before its pause is over

    with mail_server(port) as (postbox, _):
        bench.clock.advance(60)
        assert await sender.run_once() == 1

    (mail,) = postbox.received
    assert mail.rcpt_tos == [ada.email]
    (sent,) = await bench.mailbox(ada)
    assert sent.delivery.status is Status.SENT
    assert sent.delivery.attempts == 2
    assert mail.message_id == f"<{sent.id}@example.com>"


async def test_an_order_message_before_the_registration_is_mailed_once_the_address_comes(
    bench: Bench, smtp: tuple[Postbox, int]
) -> None:
    postbox, port = smtp
    ada, order_id = a_user(), an_order()
    sender = bench.sender(port)
    await bench.cancel(order_id, ada, reason="payment_failed")

    assert await sender.run_once() == 0
    assert postbox.received == []

    await bench.register(ada)
    assert await sender.run_once() == 2

    subjects = sorted(str(m.mail["Subject"]) for m in postbox.received)
    assert subjects == ["Welcome to Agora", f"Your order {order_id} was cancelled"]
    assert all(m.rcpt_tos == [ada.email] for m in postbox.received)
    assert {m.delivery.status for m in await bench.mailbox(ada)} == {Status.SENT}


async def test_two_senders_at_once_send_each_message_once(
    bench: Bench, smtp: tuple[Postbox, int]
) -> None:
    postbox, port = smtp
    users = [a_user() for _ in range(12)]
    for user in users:
        await bench.register(user)
    replicas = [bench.sender(port, replica=True, batch=3) for _ in range(2)]

    for _ in range(20):
        taken = await asyncio.gather(*(replica.run_once() for replica in replicas))
        if sum(taken) == 0:
            break

    ids = [mail.message_id for mail in postbox.received]
    assert len(ids) == len(set(ids)) == 12
    assert sorted(m.rcpt_tos[0] for m in postbox.received) == sorted(u.email for u in users)
    assert {m.delivery.status for m in await bench.mailbox()} == {Status.SENT}


async def test_a_sender_that_died_mid_send_is_replaced_once_its_lease_runs_out(
    bench: Bench, smtp: tuple[Postbox, int]
) -> None:
    postbox, port = smtp
    ada = a_user()
    await bench.register(ada)
    died = bench.sender(port)
    (claim,) = await bench.uow.run(claim_messages, SqlMessages(), bench.clock(), died.lease, 10)
    await died.steps.mailer.send(claim.mail)  # the server has it; the sender dies before recording

    survivor = bench.sender(port, replica=True)
    assert await survivor.run_once() == 0  # leased: left alone
    bench.clock.advance(died.lease.total_seconds() + 1)
    assert await survivor.run_once() == 1

    first, second = postbox.received
    assert first.message_id == second.message_id == f"<{claim.mail.message_id}@example.com>"
    assert first.body == second.body
    assert first.mail["Date"] == second.mail["Date"]
    (message,) = await bench.mailbox(ada)
    assert message.delivery.status is Status.SENT
    assert message.delivery.attempts == 2


class Silent:
    """A mail server that takes the connection and never answers."""

    async def send(self, mail: Mail) -> None:
        await asyncio.Event().wait()


async def test_a_send_the_server_never_answers_is_given_up_and_tried_again_later(
    bench: Bench,
) -> None:
    ada = a_user()
    await bench.register(ada)
    silent = application.sender(
        bench.uow,
        SqlMessages(),
        Silent(),
        timeout=0.1,
        lease=timedelta(seconds=5),
        clock=bench.clock,
    )

    assert await silent.run_once() == 1

    (message,) = await bench.mailbox(ada)
    assert message.delivery.status is Status.PENDING
    assert message.delivery.last_error == "the mail server did not answer in time"
    assert message.delivery.lease_until is None
    assert message.delivery.next_attempt_at > bench.clock()


async def test_a_recipient_the_server_refuses_for_good_is_not_tried_again(bench: Bench) -> None:
    ada, bob = a_user(), a_user()
    await bench.register(ada)
    await bench.register(bob)

    with mail_server(unknown=frozenset({ada.email})) as (postbox, port):
        sender = bench.sender(port)
        assert await sender.run_once() == 2
        bench.clock.advance(3600)
        assert await sender.run_once() == 0

    (refused,) = await bench.mailbox(ada)
    assert refused.delivery.status is Status.FAILED
    assert refused.delivery.last_error is not None
    assert refused.delivery.last_error.startswith("550")
    assert [m.rcpt_tos for m in postbox.received] == [[bob.email]]


class Watched(Bell):
    """A wakeup that tells when the loop first waits on it: its first round is over."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 (a poll interval)
        self.waiting.set()
        await super().wait(timeout)


async def test_a_commit_wakes_the_sender_loop(bench: Bench, smtp: tuple[Postbox, int]) -> None:
    postbox, port = smtp
    ada = a_user()
    wakeup = Watched()
    bench.listen(wakeup)
    sender = bench.sender(port, wakeup=wakeup, poll=3600.0)  # only a wake starts a round
    loop = asyncio.create_task(sender.run())
    try:
        async with asyncio.timeout(PATIENCE):
            await wakeup.waiting.wait()  # its first round found nothing
        await bench.register(ada)
        deadline = time.monotonic() + PATIENCE
        while not postbox.received:
            assert time.monotonic() < deadline, "the sender loop was not woken"
            await asyncio.sleep(0.02)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)

    assert postbox.received[0].rcpt_tos == [ada.email]


def _mailbox(client: TestClient, user: User, admin: User) -> list[dict[str, Any]]:
    answer = client.get("/notifications/all", params={"user_id": user.id}, headers=admin.headers)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def test_the_service_mails_what_its_events_leave(
    migrated: str, settings: NotificationsSettings, smtp: tuple[Postbox, int], admin: User
) -> None:
    postbox, port = smtp
    configured = settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_from": SHOP, "sender_poll": 0.05}
    )
    ada = a_user()

    with TestClient(app_for(configured), raise_server_exceptions=False) as client:
        act(migrated, lambda bench: bench.register(ada))
        (mail,) = postbox.wait_for(1)
        deadline = time.monotonic() + PATIENCE
        while (found := _mailbox(client, ada, admin))[0]["delivery"]["status"] != "sent":
            assert time.monotonic() < deadline, found
            time.sleep(0.02)
        mine = client.get("/notifications", headers=ada.headers).json()["items"]

    assert mail.rcpt_tos == [ada.email]
    assert mail.message_id == f"<{mine[0]['id']}@example.com>"
    assert found[0]["delivery"]["attempts"] == 1


def test_without_a_mail_server_nothing_is_sent_and_the_mailbox_keeps_the_message(
    migrated: str, settings: NotificationsSettings, smtp: tuple[Postbox, int], admin: User
) -> None:
    postbox, port = smtp
    # A port, a sender address, but no host: mail is not configured.
    unconfigured = settings.model_copy(update={"smtp_port": port, "smtp_from": SHOP})
    ada, order_id = a_user(), an_order()

    async def events(bench: Bench) -> None:
        await bench.register(ada)
        await bench.confirm(order_id, ada)

    app = app_for(unconfigured)
    with TestClient(app, raise_server_exceptions=False) as client:
        act(migrated, events)
        mine = client.get("/notifications", headers=ada.headers).json()["items"]
        everything = _mailbox(client, ada, admin)

    assert app.state.resources.get(Parts).mailer is None  # no sender loop either
    assert [item["kind"] for item in mine] == ["order_confirmed", "welcome"]
    assert [item["delivery"]["status"] for item in everything] == ["pending", "pending"]
    assert [item["delivery"]["attempts"] for item in everything] == [0, 0]
    assert postbox.received == []
