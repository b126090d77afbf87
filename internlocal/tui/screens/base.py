"""What every internlocal screen shares: the app's services through a typed accessor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, cast

from textual.screen import Screen

if TYPE_CHECKING:
    from internlocal.services import Services


class InternLocalAppState(Protocol):
    """The part of ``InternLocalApp`` screens read (a protocol: screens do not import the app module)."""

    services: Services | None  # None until start-up has opened the catalog (after the first paint)
    startup_error: str | None


# Below 100 columns a screen has the class -narrow (side panels hide or narrow, tables drop their least important
# columns), above it -wide; below 32 rows the Train screen is -short (its loss curve shrinks).
WIDTH_BREAKPOINTS: list[tuple[int, str]] = [(0, "-narrow"), (100, "-wide")]
HEIGHT_BREAKPOINTS: list[tuple[int, str]] = [(0, "-short"), (32, "-tall")]


class AppScreen(Screen):
    HORIZONTAL_BREAKPOINTS = WIDTH_BREAKPOINTS
    # a heading is one line on every terminal: what does not fit ends in "…" instead of wrapping over the content
    DEFAULT_CSS = """
    AppScreen .heading {
        text-style: bold; padding: 0 1; background: $panel; height: 1; text-wrap: nowrap; text-overflow: ellipsis;
    }
    """

    @property
    def state(self) -> InternLocalAppState:
        return cast("InternLocalAppState", self.app)

    @property
    def services(self) -> Services | None:
        return self.state.services

    @property
    def ready_services(self) -> Services:
        """The services, in handlers that run only once start-up has finished (the screen's own guards, or the
        widgets they act on, appear only then)."""
        services = self.state.services
        assert services is not None, "the screen acted before start-up finished"
        return services
