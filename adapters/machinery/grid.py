"""The table runner every ``simam2 table`` uses: rows (methods) × columns (networks, fusions) × seeds.

A :class:`Table` declares its rows, its columns and one callable, ``run_cell(cell_seed)``, that runs
one cell with one seed and writes that run's records (docs/records.md) to
``out/<cell>/seed<k>/records.jsonl``. :func:`run_table` runs every cell-seed, seed by seed (so an
interrupted table already holds whole seeds), under a progress bar with the time left, and then
:func:`aggregate` builds the table from the records files alone:

* each cell-seed's value is the table's primary metric (``start.primary``; ``higher_is_better``
  says which way is better) from one evaluation of the table's split: the best one by the primary
  metric (the first of equals) or the last one, as the table declares; the other metrics and the
  per-modality values (``<metric>_m1`` / ``_m2``, the upstream's ``_head_m1`` / ``_head_m2``) are
  taken from that same evaluation;
* each cell shows mean ± std over its seeds; beside each non-baseline cell, the paired difference
  to the baseline row of the same column over the seeds both have, with the two-sided p-value of
  the paired t-test (:func:`stats.paired_difference`);
* each decoupling-free cell (``start.config.modulation == "df"``) shows the Pearson r of Eq. 11's
  ratio and the decoupled ratio over its steps, the mean over seeds;
* the paper's value is shown beside ours where the table gives one (in the table's display units).

**Resume.** A cell-seed whose records file is complete (an ``end`` record with status
``completed``) and whose ``cell.json`` says it was run with the same row, column, seed and table
options is not run again. One that crashed, was interrupted, or ended mid-epoch (no ``end`` record)
is run again from scratch: its folder is cleared first. ``fresh=True`` reruns every cell-seed.

The table is written as text (``table.txt``, also returned), Markdown, CSV and JSON beside it
(``table.md``, ``table.csv``, ``table.json``), each atomically. CSV and JSON hold raw values (the
metric's own units, e.g. fractions); text and Markdown are scaled by ``Table.scale``.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .records import atomic_write_text, is_complete, plain, read_records, runs
from .stats import Paired, Summary, adjust_family, paired_difference, ratio_correlation, summarize

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
    return [CellSeed(row, col, seed, out / cell_name(row, col) / f"seed{seed}",
                     None if tensorboard is None else tensorboard / cell_name(row, col) / f"seed{seed}")
            for seed in seeds for col in table.columns if not (running and col.shares)
            for row in table.rows]


def _signature(table: Table, cs: CellSeed) -> dict:
    return json.loads(json.dumps(plain({"row": cs.row.label, "column": cs.column.key, "seed": cs.seed,
                                        "options": table.options}), default=str))


def _last_run(path: Path) -> list[dict] | None:
    """The last run's records of ``path``, or None when there is no readable records file."""
    if not path.is_file():
        return None
    try:
        split = runs(read_records(path))
    except (ValueError, UnicodeDecodeError):
        return None
    return split[-1] if split else None


def _all_runs(path: Path) -> list[dict] | None:
    """Every record of ``path`` (a cell may append an evaluation run to its training run), or None."""
    if not path.is_file():
        return None
    try:
        found = read_records(path)
    except (ValueError, UnicodeDecodeError):
        return None
    return found or None


def is_done(table: Table, cs: CellSeed) -> bool:
    """Whether ``cs`` completed with this table's options (so a resumed table need not run it)."""
    records = _last_run(cs.records)
    if records is None or not is_complete(records):
        return False
    try:
        return json.loads((cs.folder / "cell.json").read_text(encoding="utf-8")) == _signature(table, cs)
    except (OSError, ValueError):
        return False


def _clear(path: Path | None) -> None:
    if path is not None and path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _bar(total: int, title: str, enabled: bool):
    """tqdm's bar over the cell-seeds to run (its estimate of the time left counts only those)."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=title, unit="run", file=sys.stderr, dynamic_ncols=True)


@contextlib.contextmanager
def folder_lock(out: Path, what: str = "table"):
    """An exclusive lock on ``out`` for one run of a table or study: a second one on the same folder
    is refused in one line (GridError) instead of deleting the first one's cells in flight. The lock
    is the kernel's (flock), so a killed run releases it."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise GridError(f"{out} is in use by another {what} run (pid {holder}); wait for it to end, "
                            "or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def run_table(table: Table, out: Path | str, seeds: int | Sequence[int] = 1, fresh: bool = False,
              tensorboard: Path | str | None = None, progress: bool = True, say=None) -> "Result":
    """Run every cell-seed not already complete (all with ``fresh``), then aggregate and write the
    table (text, Markdown, CSV, JSON) into ``out``; returns the :class:`Result`.

    A failing cell-seed does not stop the table: it is said, shown as missing, and run again next
    time. Ctrl-C stops it; the table of what completed is still written. The folder is locked for
    the run (:func:`folder_lock`); a cell-seed made with other options is never averaged in.
    """
    out = Path(out).absolute()
    with folder_lock(out):
        return _run_table(table, out, seeds, fresh, tensorboard, progress, say)


def _run_table(table, out, seeds, fresh, tensorboard, progress, say) -> "Result":
    seeds = seed_list(seeds)
    tb = None if tensorboard is None else Path(tensorboard).absolute()
    all_runs = cell_seeds(table, out, seeds, tb)
    todo = [cs for cs in all_runs if fresh or not is_done(table, cs)]
    bar = _bar(len(todo), table.title.split("(")[0].strip()[:40], progress)
    say = say or (bar.write if bar is not None else (lambda s: print(s, file=sys.stderr)))
    if len(todo) < len(all_runs):
        say(f"{len(all_runs) - len(todo)} of {len(all_runs)} runs already complete in {out}, not run again "
            "(--fresh reruns them)")
    failed: list[str] = []
    try:
        for cs in todo:
            name = f"{cs.cell} seed {cs.seed}"
            if bar is not None:
                bar.set_postfix_str(name)
            _clear(cs.folder)
            _clear(cs.tensorboard)
            cs.folder.mkdir(parents=True)
            (cs.folder / "cell.json").write_text(json.dumps(_signature(table, cs), indent=1), encoding="utf-8")
            started = time.perf_counter()
            try:
                table.run_cell(cs)
            except Exception as e:  # noqa: BLE001 — one failing cell must not lose the others
                lines = str(e).strip().splitlines()
                failed.append(name)
                say(f"{name} failed: {type(e).__name__}: {lines[0] if lines else ''}")
            else:
                records = _last_run(cs.records)
                if records is None or not is_complete(records):
                    failed.append(name)
                    say(f"{name} left no completed records in {cs.records}")
                elif bar is None:
                    say(f"{name} done ({time.perf_counter() - started:.0f} s)")
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        say("interrupted: writing the table of the runs that completed; run the table again to resume")
        write_outputs(aggregate(table, out, seeds), out)
        raise
    if bar is not None:
        bar.close()
    result = aggregate(table, out, seeds)
    result.failed = failed
    write_outputs(result, out)
    return result


# -- aggregation (from records alone) --------------------------------------------------------------

def pick_evaluation(records: list[dict], split: str | None, pick: str, primary: str,
                    higher_is_better: bool) -> dict | None:
    """The evaluation a table reads from one run: of ``split``, the best by ``primary`` (first of
    equals) or the last; None when there is none."""
    evals = [r for r in records if r.get("event") == "eval"]
    if split is None:
        splits = sorted({str(r.get("split")) for r in evals})
        if len(splits) > 1:
            raise GridError(f"the records hold evaluations of several splits ({', '.join(splits)}): "
                            "the table must say which one it reads")
    else:
        evals = [r for r in evals if r.get("split") == split]
    if pick == "last":
        return evals[-1] if evals else None
    scored = [r for r in evals if isinstance(r.get(primary), (int, float)) and math.isfinite(r[primary])]
    if not scored:
        return None
    best = scored[0]
    for r in scored[1:]:  # strictly better only: the first of equals stays
        if (r[primary] > best[primary]) if higher_is_better else (r[primary] < best[primary]):
            best = r
    return best


@dataclass
class CellResult:
    row: Row
    column: Column
    #: seed -> the picked evaluation's values (metric, metric_m1, …) and the run's ``status``
    per_seed: dict[int, dict]
    summary: dict[str, Summary]
    diff: Paired | None = None
    ratio_r: float | None = None
    ratio_r_per_seed: dict[int, float | None] = field(default_factory=dict)
    decoupling_free: bool = False
    paper: dict[str, float] = field(default_factory=dict)

    def values(self, name: str) -> dict[int, float | None]:
        return {s: v.get(name) for s, v in self.per_seed.items()}


@dataclass
class Result:
    table: Table
    seeds: list[int]
    cells: dict[tuple[str, str], CellResult]
    primary: str | None
    higher_is_better: bool
    metrics: list[str]
    modalities: tuple[str, str]
    failed: list[str] = field(default_factory=list)
    #: values that are no number (a string metric in an eval record), left out and named
    skipped: list[str] = field(default_factory=list)
    #: cell-seeds whose folder holds a run made with other options, not averaged in
    stale: list[str] = field(default_factory=list)

    def cell(self, row: str, column: str) -> CellResult:
        return self.cells[(row, column)]


def aggregate(table: Table, out: Path | str, seeds: int | Sequence[int]) -> Result:
    """The table of the records under ``out`` (see the module's docstring for what each value is)."""
    out = Path(out)
    seeds = seed_list(seeds)
    starts: list[dict] = []
    loaded: dict[tuple[str, str, int], list[dict] | None] = {}
    stale = []
    for cs in cell_seeds(table, out, seeds, running=False):
        records = _all_runs(cs.records)
        last = _last_run(cs.records)
        if records is not None and not _made_with_options(table, cs):
            stale.append(f"{cs.cell} seed {cs.seed}")  # another run's options: never averaged in
            records, last = None, None
        # a file whose last run did not complete counts as not run (it is run again next time)
        loaded[(cs.row.label, cs.column.key, cs.seed)] = (records, last)
        starts += [r for r in records or () if r.get("event") == "start"]
    primary, higher, metrics, modalities = _declared(table, starts)
    wanted = [m + s for m in metrics for s in ("", *MODALITY_SUFFIXES)]
    skipped: list[str] = []
    cells: dict[tuple[str, str], CellResult] = {}
    for col in table.columns:
        for row in table.rows:
            per_seed: dict[int, dict] = {}
            rs: dict[int, float | None] = {}
            df = False
            for seed in seeds:
                records, last = loaded[(row.label, col.key, seed)]
                if records is None:
                    per_seed[seed] = {"status": "missing"}
                    continue
                status = last[-1].get("status") if last and last[-1].get("event") == "end" else "incomplete"
                split = col.split or table.split
                picked = (pick_evaluation(records, split, table.pick, primary, higher)
                          if status == "completed" and primary else None)
                values = {k: picked.get(k) for k in wanted if k in picked} if picked else {}
                for k, v in list(values.items()):
                    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                        skipped.append(f"{row.label} / {col.key} seed {seed}: {k} = {v!r} is no number")
                        values[k] = None
                run_mods = next((r.get("modalities") for r in records if r.get("event") == "start"), None)
                if run_mods and list(run_mods) == [modalities[1], modalities[0]]:
                    values = _swap_modalities(values)  # this run's ζ weighs the table's modality 2
                per_seed[seed] = {"status": status if picked or status != "completed" else "no evaluation",
                                  **values}
                if status == "completed" and any((r.get("config") or {}).get("modulation") == "df"
                                                 for r in records if r.get("event") == "start"):
                    df = True
                    rs[seed] = ratio_correlation(records)[0]
            summary = {k: summarize([per_seed[s].get(k) for s in seeds]) for k in wanted}
            paper = table.paper.get((row.label, col.key), {})
            if not isinstance(paper, dict):
                paper = {primary: paper}
            found = [r for r in rs.values() if r is not None]
            cells[(row.label, col.key)] = CellResult(
                row, col, per_seed, summary, ratio_r=sum(found) / len(found) if found else None,
                ratio_r_per_seed=rs, decoupling_free=df, paper=dict(paper))
    compared = []
    for col in table.columns:
        base = cells[(table.baseline, col.key)]
        for row in table.rows:
            if row.label != table.baseline and primary:
                c = cells[(row.label, col.key)]
                c.diff = paired_difference(base.values(primary), c.values(primary))
                compared.append(c)
    # SPEC §9: one family per table, Holm-adjusted, each difference with its verdict
    for c, d in zip(compared, adjust_family([c.diff for c in compared])):
        c.diff = d
    return Result(table, seeds, cells, primary, higher, metrics, modalities, skipped=skipped, stale=stale)


def _made_with_options(table: Table, cs: CellSeed) -> bool:
    """Whether ``cs``'s folder was made with this table's options (its cell.json); a folder without
    one (records written by hand, or by an older version) counts as made with them."""
    sig = cs.folder / "cell.json"
    if not sig.exists():
        return True
    try:
        return json.loads(sig.read_text(encoding="utf-8")) == _signature(table, cs)
    except (OSError, ValueError):
        return False


def _swap_modalities(values: dict) -> dict:
    """``_m1`` ↔ ``_m2`` and ``_head_m1`` ↔ ``_head_m2``: a run's values in the table's modality order."""
    swap = {"_m1": "_m2", "_m2": "_m1", "_head_m1": "_head_m2", "_head_m2": "_head_m1"}
    out = {}
    for key, value in values.items():
        for old, new in swap.items():
            if key.endswith(old) and not (old == "_m1" and key.endswith("_head_m1")) \
                    and not (old == "_m2" and key.endswith("_head_m2")):
                key = key[: -len(old)] + new
                break
        out[key] = value
    return out


def _declared(table: Table, starts: list[dict]) -> tuple[str | None, bool, list[str], tuple[str, str]]:
    """(primary, higher_is_better, metrics shown, modality names) from the runs' start records.

    Runs may name their modalities in either order (modality 1 is ζ's: OGM-GE's FiLM weighs the
    visual term), but the same two; the table uses the first run's order."""
    if not starts:
        metrics = list(table.metrics or [])
        return (metrics[0] if metrics else None), True, metrics, ("m1", "m2")
    first = starts[0]
    for s in starts[1:]:
        for key in ("primary", "higher_is_better"):
            if s.get(key) != first.get(key):
                raise GridError(f"the table's runs disagree on {key}: {first.get(key)!r} and {s.get(key)!r}")
        if sorted(s.get("modalities") or []) != sorted(first.get("modalities") or []):
            raise GridError(f"the table's runs disagree on modalities: {first.get('modalities')!r} and "
                            f"{s.get('modalities')!r}")
    primary = first.get("primary")
    metrics = list(table.metrics) if table.metrics else list(first.get("metrics") or [primary])
    if primary in metrics:
        metrics.remove(primary)
    metrics.insert(0, primary)
    mods = first.get("modalities") or ["m1", "m2"]
    return primary, bool(first.get("higher_is_better", True)), metrics, (str(mods[0]), str(mods[1]))


# -- rendering ------------------------------------------------------------------------------------

def _columns(result: Result) -> list[tuple[str, Callable[[CellResult], str]]]:
    """The per-cell columns shown in text and Markdown, present only where some cell has data."""
    t = result.table
    sc, dg = t.scale, t.digits
    cells = list(result.cells.values())
    m1, m2 = result.modalities
    shown: list[tuple[str, Callable[[CellResult], str]]] = []

    def fmt(s: Summary) -> str:
        text = s.format(sc, dg)
        return text + (f" (n={s.n})" if 0 < s.n < len(result.seeds) else "")

    def has(name: str) -> bool:
        return any(c.summary[name].n for c in cells)

    for metric in result.metrics:
        shown.append((t.label(metric), lambda c, k=metric: fmt(c.summary[k])))
        if any(metric in c.paper for c in cells):
            shown.append((f"{t.label(metric)} paper", lambda c, k=metric: "—" if c.paper.get(k) is None else f"{c.paper[k]:.{dg}f}"))
        if metric == result.primary:
            shown.append((f"Δ {t.label(metric)} (p) verdict",
                          lambda c: "" if c.diff is None else c.diff.format(sc, dg, verdict=True)))
    primary = result.primary
    for suffix, text in (("_m1", f"{m1} alone"), ("_m2", f"{m2} alone"), ("_head_m1", f"{m1} head"),
                         ("_head_m2", f"{m2} head")):
        if primary and has(primary + suffix):
            shown.append((text, lambda c, k=primary + suffix: fmt(c.summary[k])))
    if any(c.decoupling_free for c in cells):
        shown.append(("r(ρ)", lambda c: "" if not c.decoupling_free else
                      ("n/a" if c.ratio_r is None else f"{c.ratio_r:.2f}")))
    return shown


def _status_note(c: CellResult) -> str:
    bad = {s: v["status"] for s, v in c.per_seed.items() if v.get("status") != "completed"}
    return ", ".join(f"seed {s} {st}" for s, st in bad.items())


def _caption(result: Result) -> str:
    t = result.table
    seeds = result.seeds
    which = "best" if t.pick == "best" else "last"
    by = f" by {t.label(result.primary)}" if t.pick == "best" and result.primary else ""
    unit = " (in %)" if t.scale == 100 else ""
    return (f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))}), mean ± std; the {which} "
            f"{t.split or ''} evaluation{by} of each run{unit}").replace("  ", " ")


def _legend(result: Result) -> list[str]:
    """What the shown columns mean (only those shown)."""
    t = result.table
    shown = {name for name, _ in _columns(result)}
    primary = t.label(result.primary) if result.primary else "the primary metric"
    better = "" if result.higher_is_better else f" ({primary}: lower is better)"
    lines = [f"Δ: paired difference to {t.baseline} over the same seeds, two-sided paired t-test p-value{better}, "
             "then SPEC §9's verdict (Holm over the table's comparisons; TOST at ±1 point)."]
    if any(n.endswith(" alone") for n in shown):
        lines.append(f"alone: {primary} with the other modality's fusion input replaced by its mean (SPEC §8).")
    if any(n.endswith(" head") for n in shown):
        lines.append(f"head: {primary} of the upstream's own per-modality classifier.")
    if "r(ρ)" in shown:
        lines.append("r(ρ): Pearson r of Eq. 11's ratio and OGM-GE's decoupled ratio over the steps, mean over "
                     "seeds (decoupling-free cells).")
    lines += [f"left out, made with other options (rerun to replace): {x}" for x in result.stale]
    lines += [f"left out, not a number: {x}" for x in result.skipped]
    return lines + ([t.note] if t.note else [])


def _blocks(result: Result) -> list[tuple[str, list[str], list[list[str]], list[str]]]:
    """Per column of the table: (title, header, rows, notes)."""
    cols = _columns(result)
    out = []
    for col in result.table.columns:
        header = ["Method"] + [name for name, _ in cols]
        rows, notes = [], []
        for row in result.table.rows:
            c = result.cells[(row.label, col.key)]
            rows.append([row.label] + [f(c) for _, f in cols])
            note = _status_note(c)
            if note:
                notes.append(f"{row.label}: {note}")
        out.append((col.label, header, rows, notes))
    return out


def render_text(result: Result) -> str:
    lines = [result.table.title, _caption(result), ""]
    for title, header, rows, notes in _blocks(result):
        widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
        fmt = lambda r: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
        lines += [title, fmt(header), "-" * (sum(widths) + 2 * (len(widths) - 1))]
        lines += [fmt(r) for r in rows] + [f"  ({n})" for n in notes] + [""]
    return "\n".join(lines + _legend(result)) + "\n"


def render_markdown(result: Result) -> str:
    lines = [f"# {result.table.title}", "", _caption(result) + ".", ""]
    for title, header, rows, notes in _blocks(result):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|"]
        lines += ["| " + " | ".join(v.replace("|", "\\|") for v in r) + " |" for r in rows]
        lines += [""] + [f"*{n}*" for n in notes] + ([""] if notes else [])
    return "\n".join(lines + [f"- {x}" for x in _legend(result)]) + "\n"


def _nan_none(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def to_json(result: Result) -> dict:
    t = result.table
    cells = []
    for (row, col), c in result.cells.items():
        cells.append({
            "row": row, "column": col, "cell": cell_name(c.row, c.column),
            "per_seed": {str(s): v for s, v in c.per_seed.items()},
            "summary": {k: {"mean": _nan_none(s.mean), "std": _nan_none(s.std), "n": s.n}
                        for k, s in c.summary.items() if s.n},
            "diff_to_baseline": None if c.diff is None else {"metric": result.primary, **c.diff.plain()},
            "decoupling_free": c.decoupling_free, "ratio_r": c.ratio_r,
            "ratio_r_per_seed": {str(s): r for s, r in c.ratio_r_per_seed.items()},
            "paper": c.paper})
    return plain({"title": t.title, "seeds": result.seeds, "split": t.split, "pick": t.pick,
                  "baseline": t.baseline, "primary": result.primary, "higher_is_better": result.higher_is_better,
                  "metrics": result.metrics, "modalities": list(result.modalities), "options": t.options,
                  "display_scale": t.scale, "failed": result.failed, "skipped_values": result.skipped,
                  "stale": result.stale, "cells": cells})


def to_csv(result: Result) -> str:
    fields = [m + s for m in result.metrics for s in ("", *MODALITY_SUFFIXES)]
    fields = [f for f in fields if any(c.summary[f].n for c in result.cells.values())]
    papers = sorted({k for c in result.cells.values() for k in c.paper})
    header = (["row", "column", "seeds_completed"] + [f"{f}_{s}" for f in fields for s in ("mean", "std")]
              + ["diff_mean", "diff_std", "diff_p", "diff_p_holm", "diff_verdict", "ratio_r"]
              + [f"paper_{k}" for k in papers])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for (row, col), c in result.cells.items():
        n = sum(1 for v in c.per_seed.values() if v.get("status") == "completed")
        vals: list[Any] = [row, col, n]
        for f in fields:
            vals += [_nan_none(c.summary[f].mean), _nan_none(c.summary[f].std) if c.summary[f].n else None]
        d = c.diff
        vals += ([None] * 5 if d is None else [_nan_none(d.mean), _nan_none(d.std), _nan_none(d.p),
                                              None if d.p_holm is None else _nan_none(d.p_holm), d.verdict])
        vals += [c.ratio_r] + [c.paper.get(k) for k in papers]
        w.writerow(["" if v is None else (repr(v) if isinstance(v, float) else v) for v in vals])
    return buf.getvalue()


def write_outputs(result: Result, out: Path | str) -> dict[str, Path]:
    """``table.txt``, ``table.md``, ``table.csv``, ``table.json`` in ``out``, each written atomically."""
    out = Path(out)
    texts = {"txt": render_text(result), "md": render_markdown(result), "csv": to_csv(result),
             "json": json.dumps(to_json(result), indent=1) + "\n"}
    paths = {}
    for ext, text in texts.items():
        paths[ext] = out / f"table.{ext}"
        atomic_write_text(paths[ext], text)
    return paths


__all__ = ["Table", "Row", "Column", "CellSeed", "Result", "CellResult", "GridError", "run_table", "aggregate",
           "pick_evaluation", "render_text", "render_markdown", "to_csv", "to_json", "write_outputs",
           "cell_name", "slug", "seed_list", "is_done"]
