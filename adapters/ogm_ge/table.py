"""Table 1 of the paper (CREMA-D, Top-1 / mAP) on a synthetic CREMA-D, through OGM-GE's own main.py.

Fifteen cells: five methods × three fusions (concat, sum, FiLM), each run for ``seeds`` seeds on
:mod:`..machinery.grid` (resume, mean ± std, paired differences to the baseline, outputs). Each
cell-seed is one ``run_script`` call of main.py in its own folder (checkpoints, ``records.jsonl``,
main.py's printout in ``main.log``); its Top-1 and mAP are those of the evaluation with the best
Top-1 (the first of equals, as main.py keeps its best checkpoint), with each modality alone (mean
ablation) and main.py's split heads from the same evaluation.

ζ as in the paper (Table 1's footnote: learnable ζ only in the decoupling-free row):

=============================  ======  ===========  ====================
method                         SimAM²  ζ            modulation (main.py)
=============================  ======  ===========  ====================
Baseline                       off     —            none (Normal)
+SimAM²                        on      fixed 0.5    none (Normal)
+OGM-GE                        off     —            OGM-GE (OGM_GE)
+OGM-GE +SimAM²                on      fixed 0.5    OGM-GE (OGM_GE)
+Decoupling-Free +SimAM²       on      learnable    Eq. 11 + GE (Normal)
=============================  ======  ===========  ====================

The numbers of a synthetic set say whether every cell runs and records, not how the methods rank
on CREMA-D.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

from ..machinery import run_script
from ..machinery.grid import CellSeed, Column, Result, Table, render_text, run_table as run_grid
from ..machinery.table import Method
from .layers import FUSIONS
from .spec import SPEC

COLUMNS = (Column("concat", "Concatenation"), Column("sum", "Summation"), Column("film", "FiLM"))
FUSION_COLUMNS = tuple((c.key, c.label) for c in COLUMNS)

METHODS = (
    Method("Baseline", False, "none"),
    Method("+SimAM²", True, "none", "fixed"),
    Method("+OGM-GE", False, "ogm-ge"),
    Method("+OGM-GE +SimAM²", True, "ogm-ge", "fixed"),
    Method("+Decoupling-Free +SimAM²", True, "df", "learnable"),
)


def table(data: Path, epochs: int, checkout=None, alpha: float = 0.8, batch_size: int = 8,
          learning_rate: float = 0.01) -> Table:
    """Table 1's declaration: its cells run main.py on ``data`` (a CREMA-D in main.py's layout)."""

    def run_cell(cs: CellSeed) -> None:
        config = cs.row.run_config(cs, alpha=alpha)
        argv = ["--dataset", "CREMAD", "--train", "--fusion_method", cs.column.key, *SPEC.upstream_argv(config),
                "--epochs", str(epochs), "--batch_size", str(batch_size),
                "--learning_rate", str(learning_rate), "--random_seed", str(cs.seed),
                "--audio_path", str(data / "AudioWAV"), "--visual_path", str(data),
                "--ckpt_path", str(cs.folder / "ckpt")]
        with open(cs.folder / "main.log", "w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
            run_script(SPEC, argv, config, checkout=checkout, cwd=data)

    return Table(f"Table 1 on synthetic CREMA-D ({epochs} epoch(s) per cell)", METHODS, COLUMNS, run_cell,
                 split="test", pick="best", metric_labels={"top1": "Top-1", "mAP": "mAP"},
                 options={"epochs": epochs, "data": str(data), "alpha": alpha, "batch_size": batch_size,
                          "learning_rate": learning_rate},
                 note="Synthetic data: the numbers say that every cell runs and records, not how the methods "
                      "rank on CREMA-D.")


def run_table(out_dir, data_dir=None, epochs: int = 2, progress: Callable[[str], object] = print,
              checkout=None, alpha: float = 0.8, batch_size: int = 8, learning_rate: float = 0.01,
              seeds=1, fresh: bool = False, tensorboard=None, bar: bool = True,
              n_train: int = 24, n_test: int = 12) -> str:
    """Run the fifteen cells × ``seeds`` (resuming what is complete) and return Table 1 as text
    (also ``table.txt``, ``.md``, ``.csv``, ``.json`` in ``out_dir``).

    ``data_dir``: an existing synthetic (or real) CREMA-D in main.py's layout; None writes a
    synthetic one of ``n_train`` / ``n_test`` clips to ``out_dir/data`` (once). α = 0.8 is OGM-GE's
    advice for CREMA-D; the learning rate is raised from main.py's 0.001 so that a few epochs on a
    tiny set move the weights at all.
    """
    return render_text(run(out_dir, data_dir, epochs, progress, checkout, alpha, batch_size, learning_rate,
                           seeds, fresh, tensorboard, bar, n_train, n_test))


def run(out_dir, data_dir=None, epochs: int = 2, progress: Callable[[str], object] = print, checkout=None,
        alpha: float = 0.8, batch_size: int = 8, learning_rate: float = 0.01, seeds=1, fresh: bool = False,
        tensorboard=None, bar: bool = True, n_train: int = 24, n_test: int = 12) -> Result:
    """:func:`run_table`, returning the grid's :class:`~..machinery.grid.Result`."""
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    assert {c.key for c in COLUMNS} == set(FUSIONS)
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    if data_dir is None:
        data = out / "data"
        if not (data / "data" / "CREMAD" / "test.csv").is_file():
            data = SPEC.synth(data, n_train=n_train, n_test=n_test, seed=0)
            progress(f"wrote a synthetic CREMA-D to {data} ({n_train} train / {n_test} test clips)")
    else:
        data = Path(data_dir).absolute()
    t = table(data, epochs, checkout, alpha, batch_size, learning_rate)
    return run_grid(t, out, seeds=seeds, fresh=fresh, tensorboard=tensorboard, progress=bar,
                    say=None if bar else progress)
