"""SQLite catalog (SQLModel): models, lineage, chats, jobs. Import lazily: sqlmodel costs ~0.6 s."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from internlocal.catalog.catalog import Catalog
    from internlocal.config import Settings


def open_catalog(settings: Settings) -> Catalog:
    """Create the data directories if needed and open (migrating) the catalog."""
    from internlocal.catalog.catalog import Catalog

    settings.ensure_dirs()
    return Catalog(settings.catalog_path)
