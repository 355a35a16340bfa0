"""The carts' lines: one row per (user, sku), with the quantity and when it was last set.

Used when the carts live in the database; with Redis the table stays empty.
"""

import sqlalchemy as sa
from alembic import op

from agora.columns import timestamp

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "cart_lines",
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("sku", sa.String(32), primary_key=True),
        sa.Column("quantity", sa.Integer, nullable=False),
        timestamp("updated_at"),
        sa.CheckConstraint("quantity > 0", name="ck_cart_lines_quantity_positive"),
    )


def downgrade() -> None:
    op.drop_table("cart_lines")
