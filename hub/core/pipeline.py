"""What the core tells the embedding pipeline when images come, change or go."""

from __future__ import annotations

from typing import Protocol


class Pipeline(Protocol):
    """The embedding side of the hub, as the API sees it."""

    async def images_added(self, shop_id: int, image_ids: list[int]) -> None:
        """New ``pending`` images: embed them."""

    async def images_changed(self, shop_id: int, image_ids: list[int]) -> None:
        """Images whose metadata changed: refresh what the vector store keeps for filters."""

    async def images_removed(self, shop_id: int, image_ids: list[int]) -> None:
        """Deleted images: drop their vectors."""

    async def readiness(self) -> dict[str, str]:
        """Component name -> "ok" or what is wrong."""


class IntakeOnly:
    """The pipeline before the embedding workers are configured: images are accepted and stay ``pending``."""

    async def images_added(self, shop_id: int, image_ids: list[int]) -> None:
        return None

    async def images_changed(self, shop_id: int, image_ids: list[int]) -> None:
        return None

    async def images_removed(self, shop_id: int, image_ids: list[int]) -> None:
        return None

    async def readiness(self) -> dict[str, str]:
        return {}
