"""Orders and their checkout sagas.

An order keeps its card as payments' token with brand and last four digits, never the number.
``(user_id, idempotency_key)`` is unique: of two placements racing with one key, one inserts.
A checkout's ``deadline_at`` is when the deadline timer acts on it next (indexed: the timer
looks for those at or before now).
"""

import sqlalchemy as sa
from alembic import op

from agora.columns import timestamp

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("lines", sa.JSON, nullable=False),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("shipping_address", sa.JSON, nullable=False),
        sa.Column("card_token", sa.String(200), nullable=False),
        sa.Column("card_brand", sa.String(32), nullable=False),
        sa.Column("card_last4", sa.String(4), nullable=False),
        timestamp("placed_at"),
        timestamp("updated_at"),
        timestamp("deadline_at"),
        sa.Column("trace_id", sa.String(32), nullable=True),
        sa.Column("traceparent", sa.String(64), nullable=True),
        sa.CheckConstraint("total > 0", name="ck_orders_total_positive"),
        sa.UniqueConstraint("user_id", "idempotency_key", name="uq_orders_user_idempotency_key"),
    )
    op.create_index("ix_orders_placed_at", "orders", ["placed_at", "id"])
    op.create_index("ix_orders_user_placed_at", "orders", ["user_id", "placed_at", "id"])
    op.create_table(
        "checkouts",
        sa.Column(
            "order_id",
            sa.String(36),
            sa.ForeignKey("orders.id", name="fk_checkouts_order"),
            primary_key=True,
        ),
        sa.Column("step", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        timestamp("deadline_at", nullable=True),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("reserved", sa.Boolean, nullable=False),
        sa.Column("authorized", sa.Boolean, nullable=False),
        sa.Column("captured", sa.Boolean, nullable=False),
        sa.Column("committed", sa.Boolean, nullable=False),
        sa.Column("awaiting_release", sa.Boolean, nullable=False),
        sa.Column("awaiting_void", sa.Boolean, nullable=False),
        sa.Column("awaiting_refund", sa.Boolean, nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("retry_scheduled", sa.Boolean, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("silent", sa.Integer, nullable=False),
    )
    op.create_index("ix_checkouts_deadline_at", "checkouts", ["deadline_at"])


def downgrade() -> None:
    op.drop_table("checkouts")
    op.drop_table("orders")
