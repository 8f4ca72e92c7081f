"""Table 1 of the paper (CREMA-D, Top-1 / mAP) on a synthetic CREMA-D, through OGM-GE's own main.py.

Fifteen cells: five methods × three fusions (concat, sum, FiLM). Each cell is one ``run_script``
call of main.py in its own output folder (checkpoints, ``records.jsonl``, main.py's printout in
``main.log``); its Top-1 and mAP are those of the evaluation with the best Top-1 (the first, as
main.py keeps its best checkpoint).

=============================  ======  ===========  ====================
method                         SimAM²  ζ            modulation (main.py)
=============================  ======  ===========  ====================
Baseline                       off     —            none (Normal)
+SimAM²                        on      learnable    none (Normal)
+OGM-GE                        off     —            OGM-GE (OGM_GE)
+OGM-GE +SimAM²                on      learnable    OGM-GE (OGM_GE)
+Decoupling-Free +SimAM²       on      learnable    Eq. 11 + GE (Normal)
=============================  ======  ===========  ====================

The numbers of a synthetic set say whether every cell runs and records, not how the methods rank
on CREMA-D.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Callable

from ..machinery import run_script
from ..machinery.table import Method, cell_name
from .layers import FUSIONS
from .spec import SPEC

FUSION_COLUMNS = (("concat", "Concatenation"), ("sum", "Summation"), ("film", "FiLM"))



METHODS = (
    Method("Baseline", False, "none"),
    Method("+SimAM²", True, "none"),
    Method("+OGM-GE", False, "ogm-ge"),
    Method("+OGM-GE +SimAM²", True, "ogm-ge"),
    Method("+Decoupling-Free +SimAM²", True, "df"),
)

def best_evaluation(records: list[dict]) -> dict | None:
    """The eval record with the best Top-1 (the first of equals), or None."""
    evals = [r for r in records if r.get("event") == "eval" and r.get("top1") is not None]
    return max(evals, key=lambda r: r["top1"]) if evals else None  # max keeps the first of equals


def format_table(results: dict[tuple[str, str], dict | None], title: str) -> str:
    """Table 1's layout: one row per method, Top-1 and mAP (in %) under each fusion."""
    width = max(len(m.label) for m in METHODS) + 2
    head = " " * width + "".join(f"{name:^16}" for _, name in FUSION_COLUMNS)
    sub = f"{'Method':<{width}}" + "".join(f"{'Top-1':>8}{'mAP':>8}" for _ in FUSION_COLUMNS)
    lines = [title, head, sub, "-" * len(sub)]
    for m in METHODS:
        row = f"{m.label:<{width}}"
        for fusion, _ in FUSION_COLUMNS:
            r = results.get((m.label, fusion))
            row += f"{'—':>8}{'—':>8}" if r is None else f"{100 * r['top1']:>8.1f}{100 * r['mAP']:>8.1f}"
        lines.append(row)
    return "\n".join(lines)


def run_table(out_dir, data_dir=None, epochs: int = 2, progress: Callable[[str], object] = print,
              checkout=None, alpha: float = 0.8, batch_size: int = 8, learning_rate: float = 0.01,
              seed: int = 0, n_train: int = 24, n_test: int = 12) -> str:
    """Run the fifteen cells and return Table 1 as text (also written to ``out_dir/table.txt`` and,
    with every cell's numbers, ``out_dir/table.json``).

    ``data_dir``: an existing synthetic (or real) CREMA-D in main.py's layout; None writes a
    synthetic one of ``n_train`` / ``n_test`` clips to ``out_dir/data``. α = 0.8 is OGM-GE's advice
    for CREMA-D; the learning rate is raised from main.py's 0.001 so that a few epochs on a tiny
    set move the weights at all.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    if data_dir is None:
        data = SPEC.synth(out / "data", n_train=n_train, n_test=n_test, seed=seed)
        progress(f"wrote a synthetic CREMA-D to {data} ({n_train} train / {n_test} test clips)")
    else:
        data = Path(data_dir).absolute()
    assert {f for f, _ in FUSION_COLUMNS} == set(FUSIONS)
    results: dict[tuple[str, str], dict | None] = {}
    for fusion, _ in FUSION_COLUMNS:
        for method in METHODS:
            cell = out / cell_name(method, fusion)
            config = method.run_config(cell, seed=seed, alpha=alpha)
            argv = ["--dataset", "CREMAD", "--train", "--fusion_method", fusion, *SPEC.upstream_argv(config),
                    "--epochs", str(epochs), "--batch_size", str(batch_size),
                    "--learning_rate", str(learning_rate), "--random_seed", str(seed),
                    "--audio_path", str(data / "AudioWAV"), "--visual_path", str(data),
                    "--ckpt_path", str(cell / "ckpt")]
            start = time.perf_counter()
            with open(cell / "main.log", "w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
                ctx = run_script(SPEC, argv, config, checkout=checkout, cwd=data)
            best = best_evaluation(ctx.recorder.read())
            results[(method.label, fusion)] = best
            shown = "no evaluation" if best is None else f"Top-1 {best['top1']:.3f}, mAP {best['mAP']:.3f}"
            progress(f"{fusion:>6} {method.label:<26} {shown}  ({time.perf_counter() - start:.0f} s)")
    table = format_table(results, f"Table 1 on synthetic CREMA-D ({epochs} epoch(s) per cell, {data}), in %")
    (out / "table.txt").write_text(table + "\n", encoding="utf-8")
    (out / "table.json").write_text(json.dumps(
        [{"method": m, "fusion": f, **(r or {})} for (m, f), r in results.items()], indent=1), encoding="utf-8")
    return table
