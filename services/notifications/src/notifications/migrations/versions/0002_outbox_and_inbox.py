"""The outbox and inbox: events this service publishes (none so far), and events it has applied."""

from alembic import op

from agora.messaging.schema import create_tables, drop_tables

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    create_tables(op)


def downgrade() -> None:
    drop_tables(op)
