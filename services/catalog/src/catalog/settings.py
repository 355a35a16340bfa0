"""The catalog's settings: its own read ``AGORA_CATALOG_*``, the shared ones ``AGORA_*``."""

from __future__ import annotations

from typing import ClassVar

from agora.settings import ServiceSettings


class CatalogSettings(ServiceSettings):
    service_name: ClassVar[str] = "catalog"
    model_config = ServiceSettings.prefixed("AGORA_CATALOG_")

    # Load the starting catalogue (seed.json) at first start; later starts find it recorded.
    seed: bool = True
