"""A table's declaration: rows (methods) × columns (networks, fusions) × seeds, and the cell × seed key.

A :class:`Table` declares its rows, its columns and one callable, ``run_cell(cell_seed)``, that runs
one cell with one seed and writes that run's records (docs/records.md) to
``out/<cell>/seed<k>/records.jsonl``; :func:`signature` is what the cell-seed's ``cell.json`` holds
(row, column, seed, the table's options), by which a resumed table knows what it may keep.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..records import plain

PICKS = ("best", "last")
#: per-modality fields of a metric, in the order the table shows them
MODALITY_SUFFIXES = ("_m1", "_m2", "_head_m1", "_head_m2")


class GridError(ValueError):
    """A table is declared or recorded inconsistently (unknown pick, mixed splits, …): one line."""


@dataclass(frozen=True)
class Row:
    """A row of the table: a method."""

    label: str

    @property
    def key(self) -> str:
        return slug(self.label)


@dataclass(frozen=True)
class Column:
    """A column of the table: a network or fusion; ``key`` names its folders.

    ``split`` overrides the table's evaluation split for this column; ``shares`` names another
    column whose runs this one reads (e.g. the same runs evaluated on a second split): it runs nothing.
    """

    key: str
    label: str
    split: str | None = None
    shares: str | None = None

    @property
    def folder_key(self) -> str:
        return self.shares or self.key


def slug(text: str) -> str:
    """A folder-safe name: ``+OGM-GE +SimAM²`` -> ``ogmge_simam2``."""
    text = text.lower().replace("²", "2").replace("+", "").replace("-", "")
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_") or "row"


@dataclass(frozen=True)
class CellSeed:
    """One run of a table: a cell (row × column) with one seed, in its own folder."""

    row: Row
    column: Column
    seed: int
    folder: Path
    #: where this run's TensorBoard curves go (None: none asked for)
    tensorboard: Path | None = None

    @property
    def cell(self) -> str:
        return cell_name(self.row, self.column)

    @property
    def records(self) -> Path:
        return self.folder / "records.jsonl"


def cell_name(row: Row, column: Column) -> str:
    return f"{column.folder_key}__{row.key}"


@dataclass
class Table:
    """A table's declaration.

    ``run_cell(cs)`` runs one cell-seed and writes ``cs.records``; it may raise (the cell-seed then
    counts as failed and is rerun next time). ``split``: the evaluation split the table reads
    (None: the only one recorded). ``pick``: ``best`` or ``last`` evaluation of that split.
    ``baseline``: the label of the row the differences are taken to (default the first row; None
    in ``rows`` order). ``metrics``: the metrics shown, primary first (default ``start.metrics``).
    ``paper``: ``{(row label, column key): {metric: value}}`` (a bare number means the primary
    metric), in display units. ``options``: what every cell depends on besides row, column and seed
    (epochs, data, …): a cell-seed run with other options is rerun.

    A grid that is not the full product of its rows and columns (the study's: an encoder alone has no
    fusion, a modulated row tries more settings) lists its ``cells`` as (row label, column key) pairs.
    ``folder_of(row, column, seed)``: a cell-seed's folder under the out folder, relative (default
    ``<column>__<row>/seed<k>``). ``cell_options(row, column)``: what one cell depends on beyond
    ``options`` (the study's chosen lr and α), part of its signature like ``options``.
    """

    title: str
    rows: Sequence[Row]
    columns: Sequence[Column]
    run_cell: Callable[[CellSeed], Any]
    split: str | None = None
    pick: str = "best"
    baseline: str | None = None
    metrics: Sequence[str] | None = None
    metric_labels: dict[str, str] = field(default_factory=dict)
    scale: float = 100.0
    digits: int = 1
    paper: dict[tuple[str, str], Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    cells: Sequence[tuple[str, str]] | None = None
    folder_of: Callable[[Row, Column, int], "Path | str"] | None = None
    cell_options: Callable[[Row, Column], dict] | None = None

    def __post_init__(self) -> None:
        if self.pick not in PICKS:
            raise GridError(f"pick must be one of {', '.join(PICKS)}, got {self.pick!r}")
        if not self.rows or not self.columns:
            raise GridError("a table needs at least one row and one column")
        labels = [r.label for r in self.rows]
        if len(set(labels)) != len(labels) or len({r.key for r in self.rows}) != len(labels):
            raise GridError(f"row labels must be distinct (also as folder names): {labels}")
        if len({c.key for c in self.columns}) != len(self.columns):
            raise GridError(f"column keys must be distinct: {[c.key for c in self.columns]}")
        owners = {c.key for c in self.columns if c.shares is None}
        for c in self.columns:
            if c.shares is not None and c.shares not in owners:
                raise GridError(f"column {c.key!r} shares the runs of {c.shares!r}, which is not a column that runs")
        if self.baseline is None:
            self.baseline = self.rows[0].label
        if self.baseline not in labels:
            raise GridError(f"baseline {self.baseline!r} is not a row: {labels}")
        if self.cells is not None:
            keys = {c.key for c in self.columns}
            bad = [c for c in self.cells if c[0] not in labels or c[1] not in keys]
            if bad:
                raise GridError(f"cells name rows or columns the table does not have: {bad[:3]}")
            if len(set(self.cells)) != len(self.cells):
                raise GridError("cells must be distinct")

    def pairs(self, running: bool = True) -> list[tuple[Row, Column]]:
        """Every (row, column) cell, column by column, then row by row (``running``: only the columns
        that run, not those that read another's runs)."""
        rows = {r.label: r for r in self.rows}
        cols = [c for c in self.columns if not (running and c.shares)]
        if self.cells is None:
            return [(row, col) for col in cols for row in self.rows]
        wanted = set(self.cells)
        return [(rows[r], col) for col in cols for r in rows if (r, col.key) in wanted]

    def label(self, metric: str) -> str:
        return self.metric_labels.get(metric, metric)


def seed_list(seeds: int | Sequence[int]) -> list[int]:
    """``N`` -> seeds 0 … N−1; a sequence as given (distinct)."""
    if isinstance(seeds, int):
        if seeds < 1:
            raise GridError(f"--seeds must be at least 1, got {seeds}")
        return list(range(seeds))
    out = [int(s) for s in seeds]
    if not out or len(set(out)) != len(out):
        raise GridError(f"seeds must be distinct and at least one, got {out}")
    return out


def cell_seeds(table: Table, out: Path, seeds: Sequence[int], tensorboard: Path | None = None,
               running: bool = True) -> list[CellSeed]:
    """Every cell-seed, seed by seed, then column by column, then row by row (``running``: only the
    columns that run, not those that read another's runs)."""
    def folder(row, col, seed) -> Path:
        if table.folder_of is None:
            return Path(cell_name(row, col)) / f"seed{seed}"
        rel = Path(table.folder_of(row, col, seed))
        if rel.is_absolute() or ".." in rel.parts:
            raise GridError(f"a cell-seed's folder must lie inside the out folder, got {rel}")
        return rel

    return [CellSeed(row, col, seed, out / folder(row, col, seed),
                     None if tensorboard is None else tensorboard / folder(row, col, seed))
            for seed in seeds for row, col in table.pairs(running)]


def signature(table: Table, cs: CellSeed) -> dict:
    """What a cell-seed's ``cell.json`` holds: its row, the column that runs it, its seed and the
    table's options (a folder made with another signature is rerun, never averaged in). A column that
    reads another's runs (``shares``) has that column's signature: the folder is the same."""
    options = dict(table.options)
    if table.cell_options is not None:
        options.update(table.cell_options(cs.row, cs.column))
    return json.loads(json.dumps(plain({"row": cs.row.label, "column": cs.column.folder_key, "seed": cs.seed,
                                        "options": options}), default=str))


def made_with(table: Table, cs: CellSeed, missing: bool) -> bool:
    """Whether ``cs``'s ``cell.json`` holds this table's :func:`signature`; ``missing``: the answer
    when there is no ``cell.json`` at all. An unreadable one never matches."""
    path = cs.folder / "cell.json"
    if not path.exists():
        return missing
    try:
        return json.loads(path.read_text(encoding="utf-8")) == signature(table, cs)
    except (OSError, ValueError):
        return False


__all__ = ["GridError", "Row", "Column", "CellSeed", "Table", "slug", "cell_name", "seed_list", "cell_seeds",
           "signature", "made_with", "PICKS", "MODALITY_SUFFIXES"]
