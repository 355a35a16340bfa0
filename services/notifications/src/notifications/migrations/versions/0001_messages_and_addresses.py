"""The users' messages with the delivery of their mail, and the users' addresses.

One message per topic per user (``welcome``, ``order:<id>``): the unique key refuses a second,
whatever delivers an event twice. Message ids compare in code point order ("C" collation) on
PostgreSQL, as on SQLite, so pages are cut in one order.
"""

import sqlalchemy as sa
from alembic import op

from agora.columns import key_text, timestamp

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "addresses",
        sa.Column("user_id", sa.String(100), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        timestamp("updated_at"),
    )
    op.create_table(
        "messages",
        sa.Column("id", key_text(36), primary_key=True),
        sa.Column("user_id", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("topic", sa.String(110), nullable=False),
        sa.Column("order_id", sa.String(100), nullable=True),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        timestamp("created_at"),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        timestamp("next_attempt_at"),
        timestamp("lease_until", nullable=True),
        sa.Column("lease_token", sa.String(32), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        timestamp("sent_at", nullable=True),
        sa.UniqueConstraint("user_id", "topic", name="uq_messages_user_topic"),
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed')", name="ck_messages_status"),
        sa.CheckConstraint("attempts >= 0", name="ck_messages_attempts"),
    )
    op.create_index("ix_messages_user_created", "messages", ["user_id", "created_at", "id"])
    op.create_index("ix_messages_created", "messages", ["created_at", "id"])
    op.create_index("ix_messages_due", "messages", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("messages")
    op.drop_table("addresses")
