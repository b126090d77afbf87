"""Subprocess entry point of a job: ``python -m internlocal.jobs.worker JOB_ID``.

SIGTERM asks the job to stop at its next ``check_cancelled()``; the runner sends it on cancel.
"""

from __future__ import annotations

import signal
import sys

from internlocal.catalog import open_catalog
from internlocal.config import load_settings
from internlocal.i18n import resolve_language, set_language
from internlocal.jobs.context import JobContext
from internlocal.jobs.runner import JobRunner, execute
from internlocal.logs import configure


def main(argv: list[str]) -> int:
    job_id = int(argv[1])
    configure()  # INTERNLOCAL_LOG, inherited from the front end that started the job, decides the level
    set_language(resolve_language())  # INTERNLOCAL_LANG, inherited too: progress and errors in the UI's language
    settings = load_settings()
    catalog = open_catalog(settings)
    runner = JobRunner(catalog, settings)

    def on_context(ctx: JobContext) -> None:
        signal.signal(signal.SIGTERM, lambda *_: ctx.request_cancel())

    job = execute(catalog, runner, job_id, on_context)
    return 0 if job.status in ("succeeded", "cancelled") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
