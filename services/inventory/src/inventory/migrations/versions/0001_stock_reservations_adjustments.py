"""Stock per SKU, the reservations of orders, and the admins' adjustments.

The checks keep ``0 <= reserved <= on_hand`` true whatever the code does. SKUs and order ids
compare in code point order ("C" collation) on PostgreSQL, as on SQLite and in Python, so rows
are locked and pages cut in one order.
"""

import sqlalchemy as sa
from alembic import op

from agora.columns import key_text, serial_key, timestamp

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "stock",
        sa.Column("sku", key_text(32), primary_key=True),
        sa.Column("on_hand", sa.BigInteger, nullable=False),
        sa.Column("reserved", sa.BigInteger, nullable=False),
        sa.Column("seeded", sa.BigInteger, nullable=True),
        sa.Column("adjusted", sa.BigInteger, nullable=False),
        sa.CheckConstraint("reserved >= 0", name="ck_stock_reserved_not_negative"),
        sa.CheckConstraint("reserved <= on_hand", name="ck_stock_reserved_within_on_hand"),
    )
    op.create_table(
        "reservations",
        sa.Column("order_id", key_text(100), primary_key=True),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("lines", sa.JSON, nullable=False),
        timestamp("expires_at", nullable=True),
        timestamp("created_at"),
        timestamp("updated_at"),
    )
    op.create_index("ix_reservations_status_expires_at", "reservations", ["status", "expires_at"])
    op.create_index("ix_reservations_status_order_id", "reservations", ["status", "order_id"])
    op.create_table(
        "adjustments",
        serial_key(),
        sa.Column("sku", key_text(32), nullable=False),
        sa.Column("delta", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=True, unique=True),
        sa.Column("available", sa.BigInteger, nullable=False),
        timestamp("created_at"),
    )


def downgrade() -> None:
    op.drop_table("adjustments")
    op.drop_table("reservations")
    op.drop_table("stock")
