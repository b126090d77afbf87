"""Services: one function per user action, shared by the CLI and the TUI (and anything else that drives the app).

A front end collects what the user asked for and calls the action here; the action checks what can
be checked at once (names, fit, GPUs), then starts the work, usually as a job. Front ends never
repeat that sequence themselves. The modules sit between the front ends and the capabilities:
``training`` (finetuning and pretraining runs), ``evaluation``, ``knowledge`` (knowledge-base syncs)
and ``models`` (pulls, conversions, quantization, verification). Each action takes the ``Services``
that ``bootstrap()`` built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from internlocal.catalog.catalog import Catalog
    from internlocal.chat.service import ChatService
    from internlocal.config import Settings
    from internlocal.jobs.runner import JobRunner


@dataclass
class Services:
    """What a front end holds once started: settings, the catalog, the job runner, chats."""

    settings: Settings
    catalog: Catalog
    jobs: JobRunner
    chats: ChatService

    def close(self) -> None:
        self.chats.close()
        self.catalog.close()
