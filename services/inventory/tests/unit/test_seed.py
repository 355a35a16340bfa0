"""The opening stock shipped in the package covers the catalogue shipped with catalog.

Catalog's seed file is read by path, as shipped data, not imported: services never import each
other.
"""

from __future__ import annotations

import json
from pathlib import Path

from inventory.adapters import load_seed

CATALOG_SEED = Path(__file__).parents[3] / "catalog" / "src" / "catalog" / "seed.json"


def test_every_product_of_the_seed_catalogue_opens_with_at_least_twenty_units() -> None:
    catalogue = json.loads(CATALOG_SEED.read_text("utf-8"))
    skus = {product["sku"] for product in catalogue["products"]}

    opening = load_seed().quantities

    assert len(skus) == 64
    assert skus <= set(opening)
    assert all(opening[sku] >= 20 for sku in skus)


def test_the_opening_stock_names_no_sku_the_catalogue_lacks() -> None:
    catalogue = json.loads(CATALOG_SEED.read_text("utf-8"))

    assert set(load_seed().quantities) == {p["sku"] for p in catalogue["products"]}
    assert all(20 <= quantity <= 100 for quantity in load_seed().quantities.values())
