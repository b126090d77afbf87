"""Errors a user can cause and fix, and the exit codes the CLI gives them.

Front ends print ``str(error)`` (one sentence that says what to do) and never a traceback.
Anything that is not a ``UserError`` is a bug and is shown with its traceback.

Exit codes (``internlocal …``; the README lists them): 0 done; 1 a user error (bad input, missing
model, not enough memory …); 2 a usage error (unknown command or option); 3 a job failed (the
command started one and followed it); 4 a network failure (a server could not be reached or broke
off: the Hub, ModelScope, a download, a remote endpoint); 70 a bug (with its traceback); 130
interrupted (Ctrl+C).
"""

from internlocal.i18n import _

EXIT_USAGE = 2  # click's own code for usage errors
EXIT_BUG = 70  # sysexits' EX_SOFTWARE
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A problem the user can fix; the message says how."""

    exit_code = 1


class NetworkError(UserError):
    """A server could not be reached, or broke off: check the connection (or the endpoint) and try again."""

    exit_code = 4


class JobFailed(UserError):
    """A job the command started ended without its result (its error says why)."""

    exit_code = 3


class DataDirError(UserError):
    """The data directory cannot be created or written."""


class CatalogError(UserError):
    """The catalog file is locked, corrupt or from a newer version."""


class ModelFileError(UserError):
    """A model file is missing, corrupt, truncated or not the format it claims."""


class NotEnoughMemory(UserError):
    """Loading a model would not fit in the memory that is free."""


class NotFound(UserError):
    """A named catalog entry (model, chat, job) does not exist."""


class ContextOverflow(UserError):
    """A prompt is longer than the model's context (evaluation skips such an item and counts it)."""


class Unsupported(UserError):
    """An engine was asked for a capability it does not declare; ``field`` names the request field, when one."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


class TrainingError(UserError):
    """A training run cannot go on for a reason the user can fix (data, recipe, disk); the loop writes it to
    metrics.jsonl and stderr."""


class DiskFull(UserError):
    """A write failed because the disk is full; what was stored before stays as it was."""


def disk_full(exc: BaseException) -> DiskFull | None:
    """The sentence for an error that is a full disk (errno ENOSPC, SQLite's "database or disk is full", the same
    from chromadb's Rust core), or None for any other error."""
    import errno

    text = str(exc)
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or any(
        sign in text for sign in ("database or disk is full", "No space left on device", "disk is full")
    ):
        reason = text.strip().splitlines()[-1] if text.strip() else type(exc).__name__
        return DiskFull(
            _("The disk is full ({reason}); free some space and try again. What was stored before is intact.").format(
                reason=reason
            )
        )
    return None
