"""Signing keys are stored sealed: signing_keys.private_key_pem becomes private_key.

The column keeps its rows: identity seals the plain PEMs of an older database at its next start
(it needs the key-encryption key, which migrations are not given). A rename is native in both
SQLite (3.25+) and PostgreSQL, so the table is not copied.
"""

from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.execute("ALTER TABLE signing_keys RENAME COLUMN private_key_pem TO private_key")


def downgrade() -> None:
    # The older version reads plain PEMs only: sealed keys do not work under it.
    op.execute("ALTER TABLE signing_keys RENAME COLUMN private_key TO private_key_pem")
