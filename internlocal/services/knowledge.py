"""Knowledge-base actions: sync a knowledge base's folders into its index."""

from __future__ import annotations

from typing import TYPE_CHECKING

from internlocal.i18n import _
from internlocal.services import Services

if TYPE_CHECKING:
    from internlocal.catalog.schema import Job


def start_sync(svc: Services, name: str) -> Job:
    """Index what changed in the knowledge base's folders, as a job (progress per file, cancellable)."""
    from internlocal.kb.library import sync_job

    svc.catalog.get_kb(name)  # an unknown name fails now, not in the job
    return svc.jobs.submit(sync_job, {"name": name}, kind="kb.sync", title=_("Sync {name}").format(name=name))
