"""Start-up shared by the front ends: settings, catalog (migrated), embedded models, services."""

from __future__ import annotations

from dataclasses import dataclass

from internlocal.catalog import open_catalog
from internlocal.catalog.catalog import Catalog
from internlocal.chat.service import ChatService
from internlocal.config import Settings, load_settings
from internlocal.hub.embedded import register_embedded
from internlocal.jobs.runner import JobRunner


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    jobs: JobRunner
    chats: ChatService

    def close(self) -> None:
        self.chats.close()
        self.catalog.close()


def bootstrap(settings: Settings | None = None) -> Services:
    settings = settings or load_settings()
    catalog = open_catalog(settings)
    register_embedded(catalog)
    return Services(
        settings=settings, catalog=catalog, jobs=JobRunner(catalog, settings), chats=ChatService(catalog, settings)
    )
