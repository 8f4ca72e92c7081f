"""A table's results from the records files alone (docs/records.md), with the statistics of ../stats.py.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..records import read_records, runs
from ..stats import Paired, Summary, adjust_family, paired_difference, ratio_correlation, summarize
from .declare import MODALITY_SUFFIXES, Column, GridError, Row, Table, cell_seeds, made_with, seed_list


def last_run(path: Path) -> list[dict] | None:
    """The last run's records of ``path``, or None when there is no readable records file."""
    if not path.is_file():
        return None
    try:
        split = runs(read_records(path))
    except (ValueError, UnicodeDecodeError):
        return None
    return split[-1] if split else None


def all_runs(path: Path) -> list[dict] | None:
    """Every record of ``path`` (a cell may append an evaluation run to its training run), or None."""
    if not path.is_file():
        return None
    try:
        found = read_records(path)
    except (ValueError, UnicodeDecodeError):
        return None
    return found or None


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
        records = all_runs(cs.records)
        last = last_run(cs.records)
        if records is not None and not made_with(table, cs, missing=True):  # no cell.json: records by hand
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



__all__ = ["CellResult", "Result", "aggregate", "pick_evaluation", "last_run", "all_runs"]
