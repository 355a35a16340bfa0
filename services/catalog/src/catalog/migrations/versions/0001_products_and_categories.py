"""Products, categories, and the record of the loaded seed.

The sort and search columns are derived from name and description on every write, so listing
by name and searching stay index- and case-independent of the store. ``name_key`` compares in
code point order ("C" collation) on PostgreSQL, as it does on SQLite.
"""

import sqlalchemy as sa
from alembic import op

from agora.columns import key_text, timestamp

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "categories",
        sa.Column("slug", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
    )
    op.create_table(
        "products",
        sa.Column("sku", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("price", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column(
            "category",
            sa.String(64),
            sa.ForeignKey("categories.slug", name="fk_products_category"),
            nullable=False,
        ),
        sa.Column("image_url", sa.String(2048), nullable=True),
        sa.Column("active", sa.Boolean, nullable=False),
        timestamp("created_at"),
        timestamp("updated_at"),
        sa.Column("name_key", key_text(200), nullable=False),
        sa.Column("search_text", sa.Text, nullable=False),
        sa.CheckConstraint("price > 0", name="ck_products_price_positive"),
    )
    op.create_index("ix_products_name_key", "products", ["name_key", "sku"])
    op.create_index("ix_products_price", "products", ["price", "sku"])
    op.create_index("ix_products_category_name_key", "products", ["category", "name_key", "sku"])
    op.create_index("ix_products_category_price", "products", ["category", "price", "sku"])
    op.create_table(
        "seeds",
        sa.Column("name", sa.String(100), primary_key=True),
        timestamp("applied_at"),
    )


def downgrade() -> None:
    op.drop_table("seeds")
    op.drop_table("products")
    op.drop_table("categories")
