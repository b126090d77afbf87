"""Long work in the background: one runner (``runner.py``), one progress mechanism (``events.py``)."""

from internlocal.i18n import N_, label

# a job's status as the catalog stores it (and --json prints it) → as a person reads it
JOB_STATUS_LABELS = {
    "queued": N_("queued"),
    "running": N_("running"),
    "succeeded": N_("succeeded"),
    "failed": N_("failed"),
    "cancelled": N_("cancelled"),
    "interrupted": N_("interrupted"),
}


def job_status_label(status: str) -> str:
    """A job's status in the interface's language (an unknown one as it is)."""
    return label(JOB_STATUS_LABELS, status)
