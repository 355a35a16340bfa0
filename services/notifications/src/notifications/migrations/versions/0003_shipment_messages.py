"""Messages about shipments: the shipment a message is about, beside its order.

A ``shipment_dispatched`` message is on the topic ``shipment:<id>`` (at most 109 characters, within
the topic's 110) and names both its order and its shipment; every earlier message is about no
shipment, so the column is empty for them and nothing is filled in.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.add_column("messages", sa.Column("shipment_id", sa.String(100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("shipment_id")
