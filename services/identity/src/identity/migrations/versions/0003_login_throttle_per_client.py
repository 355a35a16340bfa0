"""The login throttle per (email, client): login_throttle replaces login_failures.

The old table's rows are dropped, not carried over: they are minutes of failure counts with no
client, and a failure count is all the throttle ever loses by it.
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from agora.columns import timestamp

revision = "0003"
down_revision = "0002"


def _counts() -> list[sa.Column[Any]]:
    """What the throttle counts, the same in the new table as in the old."""
    return [
        sa.Column("failures", sa.Integer, nullable=False),
        timestamp("window_started_at", nullable=True),
        timestamp("locked_until", nullable=True),
        sa.Column("lockouts", sa.Integer, nullable=False),
        timestamp("last_failure_at", nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "login_throttle",
        sa.Column("email", sa.String(320), primary_key=True),
        # "" for the record of every client together.
        sa.Column("client", sa.String(64), primary_key=True),
        *_counts(),
    )
    op.create_index("ix_login_throttle_last_failure_at", "login_throttle", ["last_failure_at"])
    op.drop_index("ix_login_failures_last_failure_at", table_name="login_failures")
    op.drop_table("login_failures")


def downgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("email", sa.String(320), primary_key=True),
        *_counts(),
    )
    op.create_index("ix_login_failures_last_failure_at", "login_failures", ["last_failure_at"])
    op.drop_index("ix_login_throttle_last_failure_at", table_name="login_throttle")
    op.drop_table("login_throttle")
