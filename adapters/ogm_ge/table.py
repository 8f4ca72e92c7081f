"""Table 1 of the paper (CREMA-D, Top-1 / mAP) on a CREMA-D in main.py's layout (synthetic, prepared
from the download, or your own), through OGM-GE's own main.py, with the quick or the paper's recipe.

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
import shutil
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable

from ..machinery import run_script
from ..machinery.provenance import describe, is_synthetic
from ..machinery.grid import CellSeed, Column, Result, Table, render_text, run_table as run_grid
from ..machinery.table import Method, run_under_torchrun
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


@dataclass(frozen=True)
class Recipe:
    """How every cell trains: main.py's own options (SGD with momentum 0.9 and weight decay 1e-4 are
    fixed in main.py), and the modulation window and α of our command line."""

    name: str
    batch_size: int
    learning_rate: float
    epochs: int
    alpha: float
    lr_decay_step: int = 70
    lr_decay_ratio: float = 0.1
    modulation_start: int = 0
    modulation_end: int = 50

    def describe(self) -> str:
        return (f"recipe {self.name}: batch {self.batch_size}, {self.epochs} epoch(s), SGD lr {self.learning_rate:g} "
                f"(momentum 0.9, weight decay 1e-4), StepLR every {self.lr_decay_step} epochs × {self.lr_decay_ratio:g}, "
                f"modulation epochs {self.modulation_start}–{self.modulation_end}, α {self.alpha:g}")

    def argv(self) -> list[str]:
        """main.py's options for this recipe (the modulation window goes through RunConfig)."""
        return ["--epochs", str(self.epochs), "--batch_size", str(self.batch_size),
                "--learning_rate", str(self.learning_rate), "--lr_decay_step", str(self.lr_decay_step),
                "--lr_decay_ratio", str(self.lr_decay_ratio)]


#: paper: main.py's own defaults (its argparse), α 0.8 as OGM-GE advises for CREMA-D (0.1 is its
#: VGGSound value); quick: a few epochs on a tiny set, with the learning rate raised so they move
#: the weights at all.
RECIPES = {
    "paper": Recipe("paper", batch_size=64, learning_rate=1e-3, epochs=100, alpha=0.8),
    "quick": Recipe("quick", batch_size=8, learning_rate=0.01, epochs=2, alpha=0.8),
}

#: bytes of one checkpoint main.py writes for CREMA-D (two ResNet-18s, SGD momentum, scheduler),
#: measured at the pin; main.py writes a new one each time a run's test accuracy improves
CHECKPOINT_BYTES = 179_079_667


def recipe(name: str = "quick", **overrides) -> Recipe:
    """The named recipe with the given fields replaced (None keeps the recipe's value)."""
    if name not in RECIPES:
        raise ValueError(f"--recipe must be one of {', '.join(RECIPES)}, got {name!r}")
    return replace(RECIPES[name], **{k: v for k, v in overrides.items() if v is not None})


def run_cell(cs: CellSeed, data: Path, how: Recipe, checkout=None, keep_checkpoints: bool = False,
             u: str = "eq4", nproc_per_node: int = 1) -> None:
    """One cell-seed of Table 1: main.py with the recipe ``how``; with ``nproc_per_node`` > 1, as that
    many ranks under torchrun (:func:`run_under_torchrun`). Module-level (its options bound with
    ``functools.partial``) so that it pickles for the local and Slurm executors."""
    config = cs.row.run_config(cs, u=u, alpha=how.alpha, modulation_start=how.modulation_start,
                               modulation_end=how.modulation_end)
    argv = ["--dataset", "CREMAD", "--train", "--fusion_method", cs.column.key, *SPEC.upstream_argv(config),
            *how.argv(), "--random_seed", str(cs.seed),
            "--audio_path", str(data / "AudioWAV"), "--visual_path", str(data),
            "--ckpt_path", str(cs.folder / "ckpt")]
    try:
        if nproc_per_node > 1:
            run_under_torchrun(SPEC.name, argv, config, nproc_per_node, cwd=data, log=cs.folder / "main.log",
                               checkout=checkout)
            return
        with open(cs.folder / "main.log", "w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
            run_script(SPEC, argv, config, checkout=checkout, cwd=data)
    finally:
        if not keep_checkpoints:  # the records hold every evaluation; a checkpoint is ~180 MB
            shutil.rmtree(cs.folder / "ckpt", ignore_errors=True)


def table(data: Path, epochs: int, checkout=None, alpha: float = 0.8, batch_size: int = 8,
          learning_rate: float = 0.01, how: Recipe | None = None, keep_checkpoints: bool = False,
          u: str = "eq4", nproc_per_node: int = 1) -> Table:
    """Table 1's declaration: its cells run main.py on ``data`` (a CREMA-D in main.py's layout) with
    the recipe ``how`` (default: quick with the given epochs, α, batch size and learning rate)."""
    how = how or recipe("quick", epochs=epochs, alpha=alpha, batch_size=batch_size, learning_rate=learning_rate)
    if nproc_per_node < 1:
        raise ValueError(f"--nproc-per-node must be at least 1, got {nproc_per_node}")
    cell = partial(run_cell, data=data, how=how, checkout=checkout, keep_checkpoints=keep_checkpoints, u=u,
                   nproc_per_node=nproc_per_node)

    what = describe(data, "CREMA-D")
    options = {"epochs": how.epochs, "data": str(data), "alpha": how.alpha, "batch_size": how.batch_size,
               "learning_rate": how.learning_rate}
    if how.name != "quick" or (how.lr_decay_step, how.lr_decay_ratio, how.modulation_start, how.modulation_end) \
            != (70, 0.1, 0, 50):
        options.update(recipe=how.name, lr_decay_step=how.lr_decay_step, lr_decay_ratio=how.lr_decay_ratio,
                       modulation_start=how.modulation_start, modulation_end=how.modulation_end)
    if u != "eq4":
        options["u"] = u
    if nproc_per_node > 1:  # DDP's batches and reductions are not one process's: never averaged together
        options["nproc_per_node"] = nproc_per_node
    note = how.describe() + f"; SimAM² rows read U as {u} (SPEC §2)."
    if nproc_per_node > 1:
        note += (f" Each cell ran as {nproc_per_node} ranks under torchrun (batch {how.batch_size} per rank); the "
                 "+OGM-GE rows fail there (OGM-GE's own coefficients would differ per rank).")
    if is_synthetic(data):
        note += " Synthetic data: the numbers say that every cell runs and records, not how the methods rank on CREMA-D."
    return Table(f"Table 1 on {what} ({how.epochs} epoch(s) per cell)", METHODS, COLUMNS, cell,
                 split="test", pick="best", metric_labels={"top1": "Top-1", "mAP": "mAP"}, options=options, note=note)


def run_table(out_dir, data_dir=None, epochs: int | None = None, progress: Callable[[str], object] = print,
              checkout=None, alpha: float | None = None, batch_size: int | None = None,
              learning_rate: float | None = None, seeds=1, fresh: bool = False, tensorboard=None, bar: bool = True,
              n_train: int = 24, n_test: int = 12, recipe_name: str = "quick", keep_checkpoints: bool = False,
              u: str = "eq4", executor=None, nproc_per_node: int = 1) -> str:
    """Run the fifteen cells × ``seeds`` (resuming what is complete) and return Table 1 as text
    (also ``table.txt``, ``.md``, ``.csv``, ``.json`` in ``out_dir``).

    ``data_dir``: a CREMA-D in main.py's layout (``simam2 synth``, ``simam2 prepare`` or your own);
    None writes a synthetic one of ``n_train`` / ``n_test`` clips to ``out_dir/data`` (once).
    ``recipe_name``: ``quick`` (2 epochs, batch 8, lr 0.01) or ``paper`` (main.py's own: 100 epochs,
    batch 64, lr 1e-3); ``epochs``, ``alpha``, ``batch_size``, ``learning_rate`` override it.
    ``keep_checkpoints``: keep main.py's checkpoints (else each cell's are removed once evaluated).
    ``u``: SPEC §2's reading of U in the SimAM² rows with fixed ζ. ``executor``: where the cell-seeds
    run (``serial``, ``local``, ``slurm`` or one of machinery/tables/executors.py's; default serial).
    ``nproc_per_node``: each cell as that many ranks under torchrun.
    """
    return render_text(run(out_dir, data_dir, epochs, progress, checkout, alpha, batch_size, learning_rate,
                           seeds, fresh, tensorboard, bar, n_train, n_test, recipe_name, keep_checkpoints, u,
                           executor, nproc_per_node))


def run(out_dir, data_dir=None, epochs: int | None = None, progress: Callable[[str], object] = print, checkout=None,
        alpha: float | None = None, batch_size: int | None = None, learning_rate: float | None = None, seeds=1,
        fresh: bool = False, tensorboard=None, bar: bool = True, n_train: int = 24, n_test: int = 12,
        recipe_name: str = "quick", keep_checkpoints: bool = False, u: str = "eq4", executor=None,
        nproc_per_node: int = 1) -> Result:
    """:func:`run_table`, returning the grid's :class:`~..machinery.grid.Result`."""
    how = recipe(recipe_name, epochs=epochs, alpha=alpha, batch_size=batch_size, learning_rate=learning_rate)
    if how.epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {how.epochs}")
    assert {c.key for c in COLUMNS} == set(FUSIONS)
    out = Path(out_dir).absolute()
    if data_dir is None:
        data = out / "data"
        if not (data / "data" / "CREMAD" / "test.csv").is_file():
            out.mkdir(parents=True, exist_ok=True)
            data = SPEC.synth(data, n_train=n_train, n_test=n_test, seed=0)
            progress(f"wrote a synthetic CREMA-D to {data} ({n_train} train / {n_test} test clips)")
    else:
        data = Path(data_dir).absolute()
        if not (data / "data" / "CREMAD" / "test.csv").is_file():
            raise ValueError(f"--data {data} is not a CREMA-D in main.py's layout (no data/CREMAD/test.csv): "
                             "simam2 prepare ogm-ge RAW DIR makes one from the download")
    out.mkdir(parents=True, exist_ok=True)
    progress(f"Table 1 on {describe(data, 'CREMA-D')}; {how.describe()}")
    n_seeds = seeds if isinstance(seeds, int) else len(list(seeds))
    if keep_checkpoints:
        runs = len(METHODS) * len(COLUMNS) * n_seeds
        progress(f"keeping checkpoints: main.py writes one of {CHECKPOINT_BYTES / 1e6:.0f} MB each time a run's "
                 f"accuracy improves; {runs} runs need at least {runs * CHECKPOINT_BYTES / 1e9:.1f} GB "
                 f"(at most {how.epochs} × that)")
    t = table(data, how.epochs, checkout, how=how, keep_checkpoints=keep_checkpoints, u=u, nproc_per_node=nproc_per_node)
    return run_grid(t, out, seeds=seeds, fresh=fresh, tensorboard=tensorboard, progress=bar,
                    say=None if bar else progress, executor=executor)
