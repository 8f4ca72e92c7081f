"""A table's :class:`~.aggregate.Result` as text, Markdown, CSV and JSON, each written atomically.

CSV and JSON hold raw values (the metric's own units, e.g. fractions); text and Markdown are scaled
by ``Table.scale``. Every file goes through :func:`..records.atomic_write_text` (never half a file).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Callable

from ..records import atomic_write_text, plain
from ..stats import Summary
from .aggregate import CellResult, Result
from .declare import MODALITY_SUFFIXES, cell_name


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



__all__ = ["render_text", "render_markdown", "to_csv", "to_json", "write_outputs"]
