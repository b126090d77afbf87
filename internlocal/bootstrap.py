"""Start-up shared by the front ends: settings → catalog (migrated) → embedded models → ``Services``."""

from __future__ import annotations

from internlocal.catalog import open_catalog
from internlocal.chat.service import ChatService
from internlocal.config import Settings, load_settings
from internlocal.hub.embedded import register_embedded
from internlocal.jobs.runner import JobRunner
from internlocal.services import Services

__all__ = ["Services", "bootstrap"]


def bootstrap(settings: Settings | None = None) -> Services:
    settings = settings or load_settings()
    catalog = open_catalog(settings)
    register_embedded(catalog)
    return Services(
        settings=settings, catalog=catalog, jobs=JobRunner(catalog, settings), chats=ChatService(catalog, settings)
    )
