"""Errors a user can cause and fix.

Front ends print ``str(error)`` (one sentence that says what to do) and never a traceback.
Anything that is not a ``UserError`` is a bug and is shown with its traceback.
"""


class UserError(Exception):
    """A problem the user can fix; the message says how."""


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
    """An engine was asked for a capability it does not declare."""


class TrainingError(UserError):
    """A training run cannot go on for a reason the user can fix (data, recipe, disk); the loop writes it to
    metrics.jsonl and stderr."""
