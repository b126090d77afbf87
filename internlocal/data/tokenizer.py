"""Loading a Hugging Face tokenizer the one way every part of training does (import, preview, corpus, loop, merge)."""

from __future__ import annotations

from pathlib import Path

from internlocal.errors import UserError
from internlocal.i18n import _


def hf_tokenizer(path: str | Path, *, trust_remote_code: bool = False, **kwargs):
    """``AutoTokenizer.from_pretrained`` with ``trust_remote_code`` always given (InternLM ships its tokenizer as
    code): left unset, transformers asks on stdin, which a job or the TUI cannot answer."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code, **kwargs)
    except ValueError as exc:
        if not trust_remote_code and "trust_remote_code" in str(exc):
            raise UserError(
                _(
                    "The tokenizer in {path} runs code shipped with the model; if you trust it, set "
                    "trust_remote_code: true in the recipe (or pass --trust-remote-code)."
                ).format(path=path)
            ) from None
        raise
