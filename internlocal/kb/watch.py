"""``kb sync --watch``: sync once, then again whenever files under the knowledge base's folders change."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from internlocal.catalog.catalog import Catalog
from internlocal.kb.library import sync_kb


def watch_kb(
    catalog: Catalog,
    name: str,
    on_sync: Callable[[dict[str, Any]], None] | None = None,
    stop: threading.Event | None = None,
    debounce_ms: int = 500,
) -> None:
    """Runs until ``stop`` is set (or Ctrl+C). Changes arriving together are synced together; a
    sync only reads files whose size or time changed, so each round costs what changed."""
    from watchfiles import watch

    summary = sync_kb(catalog, name)
    if on_sync is not None:
        on_sync(summary)
    folders = catalog.get_kb(name).folders
    for _changes in watch(*folders, stop_event=stop, debounce=debounce_ms, raise_interrupt=True):
        summary = sync_kb(catalog, name)
        if on_sync is not None:
            on_sync(summary)
