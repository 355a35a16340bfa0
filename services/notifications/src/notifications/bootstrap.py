"""Notifications' composition root: the one place that picks the SQL messages, the templates and,
when a mail server is configured, the SMTP mailer and the sender loop."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from agora.app import Hook, Migrate, Resources, ServiceDefinition, create_service_app, with_provided
from agora.auth import TokenVerifier
from agora.tasks import Bell
from notifications import application, entrypoints
from notifications.adapters import JinjaTemplates, SmtpMailer, SqlMessages
from notifications.settings import NotificationsSettings

MIGRATIONS = Path(__file__).parent / "migrations"

SERVICE = ServiceDefinition(
    title="Agora notifications",
    description="""Messages to users: a welcome for every new account, a message for every
order that was confirmed or cancelled, and one for every shipment the carrier collected (its
order is on its way).

Every message is kept in its user's mailbox (`GET /notifications`); admins read every mailbox
(`GET /notifications/all`). When a mail server is configured, each message is also mailed to the
address the user registered with.
""",
    routers=[entrypoints.router],
    migrations=MIGRATIONS,
)


def mailer_for(settings: NotificationsSettings) -> SmtpMailer | None:
    """The configured SMTP server; None when there is none."""
    if not settings.mail_configured:
        return None
    assert settings.smtp_host is not None
    password = settings.smtp_password
    return SmtpMailer(
        settings.smtp_host,
        settings.smtp_port,
        settings.smtp_from,
        timeout=settings.smtp_timeout,
        username=settings.smtp_username,
        password=password.get_secret_value() if password is not None else None,
        starttls=settings.smtp_starttls,
    )


def create_app(
    settings: NotificationsSettings | None = None, *, verifier: TokenVerifier | None = None
) -> FastAPI:
    settings = settings or NotificationsSettings()
    wakeup = Bell()
    parts = application.Parts(
        messages=SqlMessages(),
        templates=JinjaTemplates(),
        wakeup=wakeup,
        mailer=mailer_for(settings),
    )

    async def send_mail(resources: Resources) -> None:
        """The sender loop: mails what the events left in the mailboxes."""
        assert resources.uow is not None
        parts = resources.get(application.Parts)
        assert parts.mailer is not None
        sender = application.sender(
            resources.uow,
            parts.messages,
            parts.mailer,
            timeout=settings.smtp_timeout,
            lease=timedelta(seconds=settings.smtp_timeout + settings.lease_margin),
            poll=settings.sender_poll,
            batch=settings.sender_batch,
            wakeup=wakeup,
        )
        await sender.run()

    # Without a mail server nothing is sent, nor tried: the messages wait in the mailboxes.
    background: list[Hook] = [send_mail] if parts.mailer is not None else []
    app = create_service_app(
        settings,
        SERVICE,
        verifier=verifier,
        subscriptions=with_provided(application.Parts, entrypoints.subscriptions),
        background=background,
    )
    app.state.resources.provide(parts)
    return app


migrate = Migrate(NotificationsSettings, MIGRATIONS)
