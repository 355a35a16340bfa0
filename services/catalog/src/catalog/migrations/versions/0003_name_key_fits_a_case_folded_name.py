"""Room in ``name_key`` for a name that grows when case-folded.

Case folding may turn one character into up to three ("ß" → "ss", "ﬃ" → "ffi", "ΐ" → three
code points), so a 200-character name can need 600 in its sort key. PostgreSQL refused such a
product with "value too long"; SQLite never enforced the length, but keeps the declared type, so
its table is rebuilt too (batch mode) and both stores declare what the code maps.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

NAME_KEY_MAX = 600


def _name_key(length: int) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("products") as batch:
        batch.alter_column("name_key", type_=_name_key(NAME_KEY_MAX), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("products") as batch:
        batch.alter_column("name_key", type_=_name_key(200), existing_nullable=False)
