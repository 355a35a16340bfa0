"""The outbox and inbox: events this service publishes, and events it has applied."""

from agora.migrations import create_outbox_and_inbox, drop_outbox_and_inbox

revision = "0002"
down_revision = "0001"

upgrade = create_outbox_and_inbox
downgrade = drop_outbox_and_inbox
