"""A DataTable that fits the terminal: essential columns stay, the others are dropped (least important first)
when the table is too narrow to show them all, and come back when it widens."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import DataTable

from internlocal.i18n import _


@dataclass(frozen=True)
class Column:
    key: str
    label: str | None = None  # N_("…"): translated when drawn (the key when not given, shown as it is)
    drop: int = 0  # 0: always shown; otherwise the higher, the sooner it is dropped when space runs out

    @property
    def title(self) -> str:
        return _(self.label) if self.label is not None else self.key


def _width(cell: Any) -> int:
    return cell.cell_len if isinstance(cell, Text) else cell_len(str(cell))


class FittedTable(DataTable):
    """Rows are given whole (``set_rows``); which of their cells are shown depends on the width."""

    def __init__(self, columns: Sequence[Column], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.specs = list(columns)
        self._all_rows: list[tuple[str, tuple[Any, ...]]] = []
        self._shown: tuple[str, ...] = ()
        self._built = False

    # -- data ----------------------------------------------------------------------------------------------

    def set_rows(self, rows: Iterable[tuple[str, Sequence[Any]]]) -> None:
        """Replace every row: (key, a cell for each column in the order they were declared). The highlighted
        row is kept where its key is still there."""
        self._all_rows = [(key, tuple(cells)) for key, cells in rows]
        for key, cells in self._all_rows:
            if len(cells) != len(self.specs):
                raise ValueError(f"row {key!r} has {len(cells)} cells for {len(self.specs)} columns")
        self._rebuild(self._fit())

    def put_row(self, key: str, cells: Sequence[Any]) -> None:
        """Add one row, or update the shown cells of the row with this key in place (the cursor stays put)."""
        cells = tuple(cells)
        for i, (row_key, __) in enumerate(self._all_rows):
            if row_key == key:
                self._all_rows[i] = (key, cells)
                break
        else:
            self._all_rows.append((key, cells))
        if not self._built:
            self._rebuild(self._fit())
        elif key in self.rows:
            for spec, cell in zip(self.specs, cells, strict=True):
                if spec.key in self._shown:
                    self.update_cell(key, spec.key, cell)
        else:
            self.add_row(*(c for s, c in zip(self.specs, cells, strict=True) if s.key in self._shown), key=key)

    def cells(self, key: str) -> dict[str, Any]:
        """Every cell of a row by column key, shown or not."""
        for row_key, cells in self._all_rows:
            if row_key == key:
                return {spec.key: cell for spec, cell in zip(self.specs, cells, strict=True)}
        raise KeyError(key)

    @property
    def shown_columns(self) -> tuple[str, ...]:
        return self._shown

    @property
    def highlighted_key(self) -> str | None:
        if self.row_count == 0:
            return None
        return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)

    # -- fitting -------------------------------------------------------------------------------------------

    def _fit(self) -> tuple[str, ...]:
        # room for a vertical scrollbar whether or not it shows yet: rows arrive after the first fit
        available = self.size.width - self.styles.gutter.width - self.styles.scrollbar_size_vertical
        shown = list(self.specs)
        if self.size.width <= 0:  # not laid out yet: everything, until the first resize says how much room there is
            return tuple(s.key for s in shown)
        pad = 2 * self.cell_padding
        widths = {
            spec.key: max([cell_len(spec.title)] + [_width(cells[i]) for __, cells in self._all_rows]) + pad
            for i, spec in enumerate(self.specs)
        }
        while sum(widths[s.key] for s in shown) > available:
            droppable = [s for s in shown if s.drop > 0]
            if not droppable:
                break
            # the highest drop number goes first; among equals, the rightmost
            shown.remove(max(reversed(droppable), key=lambda s: s.drop))
        return tuple(s.key for s in shown)

    def _rebuild(self, shown: tuple[str, ...]) -> None:
        highlighted = self.highlighted_key
        self.clear(columns=shown != self._shown or not self._built)
        if shown != self._shown or not self._built:
            for spec in self.specs:
                if spec.key in shown:
                    self.add_column(spec.title, key=spec.key)
            self._shown, self._built = shown, True
        index = [i for i, spec in enumerate(self.specs) if spec.key in shown]
        for key, cells in self._all_rows:
            self.add_row(*(cells[i] for i in index), key=key)
        if highlighted is not None and highlighted in self.rows:
            self.move_cursor(row=self.get_row_index(highlighted))

    def on_resize(self) -> None:
        shown = self._fit()
        if shown != self._shown:
            self._rebuild(shown)
