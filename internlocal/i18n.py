"""The interface's language: English is the source, other languages are gettext catalogs managed with Babel.

Every user-facing string is written in English inside ``_()`` (or ``N_()`` where it is defined before the
language is known: class attributes, module constants; it is then passed through ``_()`` where it is shown).
``make i18n`` extracts them into ``locale/internlocal.pot`` and updates each ``locale/<lang>/LC_MESSAGES/
internlocal.po``; the compiled ``.mo`` beside it is what runs (``tests/test_i18n.py`` checks it is current, and
``tools/check_i18n.py``, run by ``make lint``, that no user-facing string was left unwrapped).

The language is, first to last: ``INTERNLOCAL_LANG``, ``language`` in ``config.toml``, the locale
(``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``, ``LANG``), English. The TUI switches it at run time
(``set_language``); click's and typer's own words (Usage, Options …) follow through gettext's global domain.
The OpenAI-compatible server answers in English whatever the language: its clients parse the messages.
"""

from __future__ import annotations

import gettext
import os
from collections.abc import Mapping
from pathlib import Path

DOMAIN = "internlocal"
LOCALE_DIR = Path(__file__).parent / "locale"
# the languages offered, by their BCP 47 tag, each named in itself
LANGUAGES: dict[str, str] = {"en": "English", "zh-CN": "简体中文"}
DEFAULT_LANGUAGE = "en"

_translation: gettext.NullTranslations = gettext.NullTranslations()
_language = DEFAULT_LANGUAGE


def _(message: str) -> str:
    """``message`` in the current language (itself where no translation exists)."""
    return _translation.gettext(message)


def N_(message: str) -> str:
    """Marks ``message`` for extraction without translating it: it is translated with ``_()`` where shown."""
    return message


def Np_(singular: str, plural: str) -> tuple[str, str]:
    """Marks a singular/plural pair for extraction (for ``ngettext`` calls made elsewhere, e.g. by click)."""
    return singular, plural


def ngettext(singular: str, plural: str, n: int) -> str:
    return _translation.ngettext(singular, plural, n)


def label(labels: Mapping[str, str], value: str) -> str:
    """A stored value (a status, a kind: identifiers in the catalog and in --json) as shown: its label from
    ``labels`` (``N_()``-marked) translated, or the value itself when it has none."""
    return _(labels[value]) if value in labels else value


def current_language() -> str:
    return _language


def normalize(tag: str | None) -> str | None:
    """A language tag or locale name (``zh-CN``, ``zh_CN.UTF-8``, ``zh``, ``en_US``) as one of ``LANGUAGES``,
    or None when it names none of them."""
    if not tag:
        return None
    base = tag.split(".")[0].split("@")[0].replace("_", "-").strip()
    if not base or base in ("C", "POSIX"):
        return None
    lowered = base.lower()
    for known in LANGUAGES:
        if lowered == known.lower():
            return known
    # Simplified Chinese is the only Chinese offered; Traditional Chinese locales keep English
    if lowered in ("zh", "zh-hans", "zh-sg", "zh-hans-cn", "zh-my"):
        return "zh-CN"
    primary = lowered.split("-")[0]
    return primary if primary in LANGUAGES else None


def _configured_language() -> str | None:
    """``language`` in ``config.toml``, read without the settings model (this runs before the first paint)."""
    import tomllib

    from internlocal.paths import config_path

    try:
        with config_path().open("rb") as file:
            value = tomllib.load(file).get("language")
    except (OSError, tomllib.TOMLDecodeError):
        return None  # the settings' own loading says what is wrong with the file
    return value if isinstance(value, str) else None


def resolve_language() -> str:
    """The language to start in (the module's docstring gives the order)."""
    for candidate in (
        os.environ.get("INTERNLOCAL_LANG"),
        os.environ.get("INTERNLOCAL_LANGUAGE"),  # the setting's own variable, as for every setting
        _configured_language(),
    ):
        language = normalize(candidate)
        if language is not None:
            return language
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name)
        if value:
            # LANGUAGE is a priority list ("zh_CN:en"); the first entry decides, as the C library would
            return normalize(value.split(":")[0]) or DEFAULT_LANGUAGE
    return DEFAULT_LANGUAGE


def gettext_code(language: str) -> str:
    """The catalog folder's name for a language tag: ``zh-CN`` → ``zh_CN``."""
    return language.replace("-", "_")


def set_language(language: str) -> None:
    """Translate from now on into ``language`` (one of ``LANGUAGES``); an unknown tag is refused."""
    global _translation, _language
    known = normalize(language)
    if known is None:
        from internlocal.errors import UserError

        names = ", ".join(LANGUAGES)
        raise UserError(
            _("Unknown language {language!r}; choose one of: {names}.").format(language=language, names=names)
        )
    if known == DEFAULT_LANGUAGE:
        _translation = gettext.NullTranslations()
    else:
        _translation = gettext.translation(DOMAIN, LOCALE_DIR, languages=[gettext_code(known)])
    _language = known
    # click and typer call gettext.gettext: its global domain is ours, its language LANGUAGE
    gettext.bindtextdomain(DOMAIN, str(LOCALE_DIR))
    gettext.textdomain(DOMAIN)
    os.environ["LANGUAGE"] = gettext_code(known)
    # the processes started from now on (jobs, `internlocal serve`, a browser's app) speak it too
    os.environ["INTERNLOCAL_LANG"] = known


def display_width(text: str) -> int:
    """Cells ``text`` takes in a terminal (a Chinese character takes two): for aligning plain-text tables."""
    from rich.cells import cell_len

    return cell_len(text)
