"""A NeedleBench heat map: depths as rows, lengths as columns, each cell coloured from red (0) to green (1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.color import Color
from textual.containers import Grid
from textual.widgets import Static

from internlocal.i18n import _

if TYPE_CHECKING:
    from internlocal.evals.needlebench import NeedleMap

RED, AMBER, GREEN = Color.parse("#c62828"), Color.parse("#f9a825"), Color.parse("#2e7d32")
MISSING = Color.parse("#616161")
CELL_WIDTH = 7
LABEL_WIDTH = 8


def score_colour(score: float | None) -> Color:
    """Red at 0, amber at 0.5, green at 1 (through amber: a straight red–green blend is a muddy brown midway)."""
    if score is None:
        return MISSING
    score = min(1.0, max(0.0, score))
    return RED.blend(AMBER, score * 2) if score <= 0.5 else AMBER.blend(GREEN, score * 2 - 1)


class HeatCell(Static):
    """One (length, depth) cell: its score printed on its colour."""

    DEFAULT_CSS = f"HeatCell {{ width: {CELL_WIDTH}; height: 1; content-align: center middle; text-style: bold; }}"

    def __init__(self, length: int, depth: int, score: float | None) -> None:
        super().__init__("-" if score is None else f"{score:.2f}", classes="cell")
        self.length, self.depth, self.score = length, depth, score

    def on_mount(self) -> None:
        background = score_colour(self.score)
        self.styles.background = background
        self.styles.color = background.get_contrast_text(1.0)
        score = _("no score") if self.score is None else f"{self.score:.2f}"
        self.tooltip = _("{length} tokens, needle at {depth} %: {score}").format(
            length=self.length, depth=self.depth, score=score
        )


class HeatMap(Grid):
    """The grid of a NeedleBench map, with length labels on top and depth labels on the left."""

    DEFAULT_CSS = f"""
    HeatMap {{ height: auto; width: auto; grid-gutter: 0 1; }}
    HeatMap .label {{ width: {CELL_WIDTH}; height: 1; content-align: right middle; color: $text-muted; }}
    HeatMap .depth {{ width: {LABEL_WIDTH}; content-align: left middle; }}
    """

    def __init__(self, heat_map: NeedleMap, **kwargs) -> None:
        super().__init__(**kwargs)
        self.heat_map = heat_map

    def compose(self) -> ComposeResult:
        yield Static(_("depth"), classes="label depth")
        for length in self.heat_map.lengths:
            yield Static(str(length), classes="label")
        for depth in self.heat_map.depths:
            yield Static(f"{depth} %", classes="label depth")
            for length in self.heat_map.lengths:
                yield HeatCell(length, depth, self.heat_map.score(length, depth))

    def on_mount(self) -> None:
        columns = len(self.heat_map.lengths)
        self.styles.grid_size_columns = columns + 1
        self.styles.grid_columns = f"{LABEL_WIDTH} " + " ".join([str(CELL_WIDTH)] * columns)
        self.styles.grid_rows = "1"
