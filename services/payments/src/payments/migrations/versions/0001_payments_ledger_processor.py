"""Payments, the double-entry ledger, and the simulated card processor's own tables.

The processor's tables keep what a real processor keeps on its side: a card's token, brand, last
four digits and the behaviour its test number selects (never the number), and every operation it
has done, by the caller's reference, so that a repeated reference gets the first answer.
"""

import sqlalchemy as sa
from alembic import op

from agora.columns import serial, serial_key, timestamp

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "payments",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("order_id", sa.String(100), nullable=False, unique=True),
        sa.Column("user_id", sa.String(100), nullable=True),
        sa.Column("amount", sa.BigInteger, nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("card_token", sa.String(64), nullable=True),
        sa.Column("card_brand", sa.String(20), nullable=True),
        sa.Column("card_last4", sa.String(4), nullable=True),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("reason", sa.String(40), nullable=True),
        sa.Column("captured_amount", sa.BigInteger, nullable=False),
        sa.Column("refunded_amount", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("authorization_id", sa.String(64), nullable=True),
        sa.Column("pending_operation", sa.String(10), nullable=True),
        timestamp("lease_until", nullable=True),
        sa.Column("lease_token", sa.String(32), nullable=True),
        sa.Column("failures", sa.Integer, nullable=False),
        timestamp("created_at"),
        timestamp("updated_at"),
        sa.CheckConstraint("amount IS NULL OR amount > 0", name="ck_payments_amount_positive"),
        sa.CheckConstraint(
            "captured_amount >= 0 AND refunded_amount >= 0 AND refunded_amount <= captured_amount",
            name="ck_payments_amounts",
        ),
    )
    op.create_index("ix_payments_pending", "payments", ["pending_operation", "lease_until"])
    op.create_index("ix_payments_created", "payments", ["created_at", "id"])
    op.create_index("ix_payments_user_created", "payments", ["user_id", "created_at", "id"])
    op.create_table(
        "ledger_movements",
        serial_key(),
        sa.Column("order_id", sa.String(100), nullable=False),
        sa.Column("payment_id", sa.String(36), sa.ForeignKey("payments.id"), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        timestamp("created_at"),
        sa.CheckConstraint("amount > 0", name="ck_ledger_movements_amount_positive"),
        sa.UniqueConstraint("payment_id", "kind", name="uq_ledger_movements_payment_kind"),
    )
    op.create_index("ix_ledger_movements_order", "ledger_movements", ["order_id", "id"])
    op.create_table(
        "ledger_entries",
        serial_key(),
        sa.Column("movement_id", serial(), sa.ForeignKey("ledger_movements.id"), nullable=False),
        sa.Column("account", sa.String(40), nullable=False),
        sa.Column("debit", sa.BigInteger, nullable=False),
        sa.Column("credit", sa.BigInteger, nullable=False),
        sa.CheckConstraint(
            "debit >= 0 AND credit >= 0 AND (debit = 0 OR credit = 0) AND debit + credit > 0",
            name="ck_ledger_entries_one_side",
        ),
    )
    op.create_index("ix_ledger_entries_movement", "ledger_entries", ["movement_id"])
    op.create_index("ix_ledger_entries_account", "ledger_entries", ["account"])
    op.create_table(
        "processor_cards",
        sa.Column("token", sa.String(64), primary_key=True),
        sa.Column("brand", sa.String(20), nullable=False),
        sa.Column("last4", sa.String(4), nullable=False),
        sa.Column("behaviour", sa.String(20), nullable=False),
        timestamp("created_at"),
    )
    op.create_table(
        "processor_operations",
        sa.Column("reference", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("token", sa.String(64), nullable=True),
        sa.Column("authorization_id", sa.String(64), nullable=True),
        sa.Column("amount", sa.BigInteger, nullable=True),
        timestamp("created_at"),
    )
    op.create_index(
        "ix_processor_operations_authorization",
        "processor_operations",
        ["authorization_id", "kind"],
    )


def downgrade() -> None:
    op.drop_table("processor_operations")
    op.drop_table("processor_cards")
    op.drop_table("ledger_entries")
    op.drop_table("ledger_movements")
    op.drop_table("payments")
