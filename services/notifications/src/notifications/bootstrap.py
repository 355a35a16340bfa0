"""Notifications' composition root: the one place that picks the SQL store, the templates and,
when a mail server is configured, the SMTP sender."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from agora.app import Hook, Resources, create_service_app
from agora.auth import TokenVerifier
from agora.migrations import upgrade
from agora.tasks import Bell
from notifications import application, entrypoints
from notifications.adapters import JinjaTemplates, SmtpMailer, SqlMailbox
from notifications.application import Sender
from notifications.settings import NotificationsSettings

MIGRATIONS = Path(__file__).parent / "migrations"

ERRORS: dict[type[Exception], int] = {}

DESCRIPTION = """Messages to users: a welcome for every new account, and a message for every
order that was confirmed or cancelled.

Every message is kept in its user's mailbox (`GET /notifications`); admins read every mailbox
(`GET /notifications/all`). When a mail server is configured, each message is also mailed to the
address the user registered with.
"""


def sender_for(settings: NotificationsSettings, resources: Resources, wakeup: Bell) -> Sender:
    """The sender that mails pending messages through the configured SMTP server."""
    assert settings.smtp_host is not None
    assert resources.uow is not None
    password = settings.smtp_password
    mailer = SmtpMailer(
        settings.smtp_host,
        settings.smtp_port,
        settings.smtp_from,
        timeout=settings.smtp_timeout,
        username=settings.smtp_username,
        password=password.get_secret_value() if password is not None else None,
        starttls=settings.smtp_starttls,
    )
    return Sender(
        resources.uow,
        SqlMailbox,
        mailer,
        timeout=settings.smtp_timeout,
        lease=timedelta(seconds=settings.smtp_timeout + settings.lease_margin),
        poll=settings.sender_poll,
        batch=settings.sender_batch,
        wakeup=wakeup,
    )


def create_app(
    settings: NotificationsSettings | None = None, *, verifier: TokenVerifier | None = None
) -> FastAPI:
    settings = settings or NotificationsSettings()
    store: application.Store = SqlMailbox
    wakeup = Bell()
    # Without a mail server nothing is sent, nor tried: the messages wait in the mailboxes.
    background: list[Hook] = [entrypoints.send_mail] if settings.mail_configured else []
    app = create_service_app(
        settings,
        title="Agora notifications",
        description=DESCRIPTION,
        routers=[entrypoints.router],
        migrations=MIGRATIONS,
        errors=ERRORS,
        verifier=verifier,
        subscriptions=entrypoints.subscriptions(store, JinjaTemplates(), wakeup),
        background=background,
    )
    resources: Resources = app.state.resources
    resources.extra[entrypoints.STORE] = store
    if settings.mail_configured:
        resources.extra[entrypoints.SENDER] = sender_for(settings, resources, wakeup)
    return app


def migrate(settings: NotificationsSettings | None = None) -> None:
    settings = settings or NotificationsSettings()
    upgrade(settings.database_url, MIGRATIONS)
