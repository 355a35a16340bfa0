"""Room in ``name_key`` for a name that grows when case-folded.

Case folding may turn one character into up to three ("ß" → "ss", "ﬃ" → "ffi", "ΐ" → three
code points), so a 200-character name can need 600 in its sort key. PostgreSQL refused such a
product with "value too long"; SQLite never enforced the length, but keeps the declared type, so
its table is rebuilt too (batch mode) and both stores declare what the code maps.
"""

from alembic import op

from agora.columns import key_text

revision = "0003"
down_revision = "0002"

NAME_KEY_MAX = 600


def upgrade() -> None:
    with op.batch_alter_table("products") as batch:
        batch.alter_column("name_key", type_=key_text(NAME_KEY_MAX), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("products") as batch:
        batch.alter_column("name_key", type_=key_text(200), existing_nullable=False)
