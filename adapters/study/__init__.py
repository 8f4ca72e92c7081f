"""``simam2 study``: the paper's claims on real data that can be had offline (docs/results.md).

    simam2 study {avdigits,mfeat} [--regime R ...] [--views A B] [--seeds N] [--quick] --out DIR

Runs Table 1's grid — fusion ∈ {sum, concat, FiLM, late} × Baseline, +SimAM², +OGM-GE,
+OGM-GE +SimAM², +Decoupling-Free +SimAM² — with small encoders of our own, ≥ 5 seeds, and writes
``DIR/results.json``, ``DIR/tables.md``, ``DIR/tables.csv`` and figures. Modules: :mod:`.data`
(loaders), :mod:`.models` (encoders, fusion heads), :mod:`.train` (one run), :mod:`.grid` (the grid,
resumable, in parallel), :mod:`.report` (tables, figures), :mod:`.demo` (``simam2 demo``).
"""

from .cli import add_study_parser, main, run_study

__all__ = ["add_study_parser", "run_study", "main"]
