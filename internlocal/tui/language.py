"""Switching the interface's language in a running TUI (the command palette's "Language: …" entries).

Every screen is composed again in the new language: the ones visited before are rebuilt, the current one in
place of itself. A screen carries across what the person was doing where it says how (``carry_over`` and
``take_over``: the open chat, a draft, attachments); the catalog and running jobs are untouched. The choice is
saved as ``language`` in ``config.toml`` so the next start (and the jobs started from now on) use it too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from textual.screen import Screen

from internlocal import i18n
from internlocal.i18n import _

if TYPE_CHECKING:
    from textual.app import App

# a mode with a blank screen to stand on while the current mode's screen is rebuilt
_ASIDE = "_language"


@runtime_checkable
class CarriesOver(Protocol):
    def carry_over(self) -> dict[str, Any]:
        """What the rebuilt screen should take over (called on the screen being replaced)."""
        ...

    def take_over(self, state: dict[str, Any]) -> None:
        """Take over ``state`` (called on the new screen before it is shown)."""
        ...


def busy_reason(app: App) -> str | None:
    """Why the language cannot change right now (a reply is being written), or None."""
    for stack in app._screen_stacks.values():
        for screen in stack:
            if getattr(screen, "generating", False):
                return _("A reply is still being written; stop it (Esc) or wait, then change the language.")
    return None


async def switch_language(app: App, language: str) -> None:
    """Translate the running app into ``language`` (one of ``i18n.LANGUAGES``) and remember the choice."""
    i18n.set_language(language)
    current = app.current_mode
    modes = app.MODES
    # the other modes' screens are dropped: each is composed again, in the new language, on its next visit
    for mode in [m for m in list(app._screen_stacks) if m not in (current, "_default")]:
        await app.remove_mode(mode)
        app.add_mode(mode, modes[mode])
    old = app.screen_stack[0] if app.screen_stack else None
    state = old.carry_over() if isinstance(old, CarriesOver) else None
    app.add_mode(_ASIDE, Screen)
    await app.switch_mode(_ASIDE)
    await app.remove_mode(current)
    app.add_mode(current, modes[current])
    if state is not None:
        # the mode's screen is made on the switch: make it here, so it takes the state over before it mounts
        screen = modes[current]()
        if isinstance(screen, CarriesOver):
            screen.take_over(state)
        app._modes[current] = lambda: screen
    await app.switch_mode(current)
    app._modes[current] = modes[current]
    await app.remove_mode(_ASIDE)
    app.title = app.title  # the header redraws with the screen; the title itself is a name
    save_language(language)


def save_language(language: str) -> None:
    """``language = "…"`` in ``config.toml``, the file's other lines kept as they are."""
    from internlocal.config import write_setting

    write_setting("language", language)
