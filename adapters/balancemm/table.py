"""BalanceMM's trainers beside +SimAM² and +Decoupling-Free +SimAM², on a synthetic CREMA-D, through
``python -m balancemm`` itself.

One row per trainer of theirs that runs on CREMA-D on CPU at the pin (with ``patches/balancemm``),
then the two SimAM² rows. It is a table of the engine every table uses (``machinery/tables``): each
cell-seed runs in its own folder ``OUT/cremad__<row>/seed<k>/`` (``records.jsonl``, ``cell.json``,
BalanceMM's ``training.log``, the printout in ``stdout.log``), resumes, runs on any executor, and the
table (text, Markdown, CSV, JSON) shows the final test evaluation's numbers (BalanceMM tests the model
with the best validation accuracy): accuracy and macro-F1, fused and per modality head, mean ± std
over seeds, with each row's paired difference to the Baseline.

===============================  =========================  ======  ==========  ==========
row                              --trainer                  SimAM²  ζ           modulation
===============================  =========================  ======  ==========  ==========
Baseline                         baselineTrainer            off     —           none
OGM (their OGM-GE)               OGMTrainer                 off     —           their own
AGM, AMCo, CML, GBlending, LFM,  <name>Trainer              off     —           their own
MBSD, MMPareto, OPM, PMR,
ReLearning, ReconBoost
+SimAM²                          baselineTrainer            on      fixed 0.5   none
+Decoupling-Free +SimAM²         OGMTrainerDF               on      learnable   Eq. 11 + GE
===============================  =========================  ======  ==========  ==========

AMCo runs with a batch of 2 (its mask is built for 2 rows, ``mask_t.expand(2, -1)``); ReconBoost and
AMCo with their own models (``BaseClassifier_ReconBoost``, ``BaseClassifier_AMCo``). A run whose
validation accuracy never rises above 0 has no checkpoint for ``train_and_test`` to reload and fails
(seen with OPM after one epoch): such a cell shows "—" and the table goes on. Trainers left out
(they do not run on CREMA-D on CPU at the pin, with the patches): see :data:`NOT_RUNNING`. The numbers of a synthetic set say whether every cell runs and records, not
how the methods rank on CREMA-D.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from ..machinery.grid import CellSeed, Column, Result, Table, render_text, run_table as run_grid
from ..machinery.table import Method
from .spec import SPEC, run


@dataclass(frozen=True)
class Trainer(Method):
    """One row: its label, BalanceMM's ``--trainer`` (and ``--model``, and a batch size of its own
    where the trainer needs one), SimAM² on or off, our modulation and ζ."""

    trainer: str = "baselineTrainer"
    model: str = "BaseClassifier"
    batch_size: int | None = None  # None: the table's


ROWS = (
    Trainer("Baseline", trainer="baselineTrainer"),
    Trainer("OGM", trainer="OGMTrainer", modulation="ogm-ge"),
    Trainer("AGM", trainer="AGMTrainer"),
    Trainer("AMCo", trainer="AMCoTrainer", model="BaseClassifier_AMCo", batch_size=2),
    Trainer("CML", trainer="CMLTrainer"),
    Trainer("GBlending", trainer="GBlendingTrainer"),
    Trainer("LFM", trainer="LFMTrainer"),
    Trainer("MBSD", trainer="MBSDTrainer"),
    Trainer("MMPareto", trainer="MMParetoTrainer"),
    Trainer("OPM", trainer="OPMTrainer"),
    Trainer("PMR", trainer="PMRTrainer"),
    Trainer("ReLearning", trainer="ReLearningTrainer"),
    Trainer("ReconBoost", trainer="ReconBoostTrainer", model="BaseClassifier_ReconBoost"),
    # the paper's convention (SPEC §7), as in Tables 1 and 2: learnable ζ only where Eq. 11 reads it
    Trainer("+SimAM²", trainer="baselineTrainer", simam2=True, zeta="fixed"),
    Trainer("+Decoupling-Free +SimAM²", trainer="OGMTrainerDF", simam2=True, modulation="df", zeta="learnable"),
)
#: one column: CREMA-D (the metrics, fused and per modality head, are the table's sub-columns)
COLUMNS = (Column("cremad", "CREMA-D"),)

#: Their trainers that do not run on CREMA-D on CPU at the pin (with the patches), and why.
NOT_RUNNING = {
    "Greedy": "calls model(batch, curation_mode, caring_modality) positionally, which MultiModalParallel.forward "
              "does not take (any device)",
    "MLA": "reads self.alpha, which MLATrainer never sets (any device)",
    "MMCosine": "compares a float with the dict best_acc that BaseTrainer keeps (any device)",
    "UMT": "loads two unimodal checkpoints from earlier unimodalTrainer runs found by path, on two GPUs "
           "(device_ids=[0, 1])",
    "unimodal": "its config block is baseline's, which has no alpha (KeyError); a one-modality model",
    "LinearProbe": "mode linear_probe: probes a model trained by an earlier run",
    "Sample": "from its second epoch it rebuilds the train loader with batch 64, drop_last and spawn hard-coded: "
              "no batch from a set under 64 clips (ZeroDivisionError), and spawn needs --workers >= 1; it runs "
              "1 epoch here",
}



def run_cell(cs: CellSeed, data: Path, epochs: int, batch_size: int, alpha: float, checkout=None,
             u: str = "eq4") -> None:
    """One cell-seed: ``python -m balancemm`` with the row's trainer, through the spec. Module-level
    (its options bound with ``functools.partial``) so that it pickles for the local and Slurm
    executors. BalanceMM prints its config and tqdm bars (stderr): they go to the cell's
    ``stdout.log``."""
    row: Trainer = cs.row
    config = row.run_config(cs, u=u if row.zeta == "fixed" else "eq4", alpha=alpha)
    argv = [*SPEC.upstream_argv(config), "--trainer", row.trainer, "--model", row.model]
    with open(cs.folder / "stdout.log", "w", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        run(argv, config, workdir=cs.folder, checkout=checkout, data=data, epochs=epochs,
            batch_size=row.batch_size or batch_size, workers=0)


def table(data: Path, epochs: int = 2, batch_size: int = 4, alpha: float = 0.5, checkout=None,
          rows: tuple[str, ...] | None = None, synthetic: dict | None = None, u: str = "eq4") -> Table:
    """The BalanceMM table's declaration: ``rows`` (labels of :data:`ROWS`; default all) on ``data``
    (a CREMA-D in BalanceMM's layout; ``synthetic``: the sizes it was written with, if ours)."""
    chosen = [r for r in ROWS if rows is None or r.label in rows]
    if rows is not None and len(chosen) != len(set(rows)):
        unknown = set(rows) - {r.label for r in ROWS}
        raise ValueError(f"unknown rows {sorted(unknown)}; known: {[r.label for r in ROWS]}")
    if "Baseline" not in [r.label for r in chosen]:
        chosen.insert(0, ROWS[0])  # every difference is paired with the Baseline's seeds
    cell = partial(run_cell, data=Path(data), epochs=epochs, batch_size=batch_size, alpha=alpha, checkout=checkout,
                   u=u)
    note = (f"{epochs} epoch(s), batch {batch_size}, α {alpha:g}, modulation every epoch; +SimAM² fuses with ζ = 0.5 "
            f"and reads U as {u} (SPEC §2, §7); the final test evaluation "
            "(BalanceMM's best-validation model). Not run: " + "; ".join(f"{k}: {v}" for k, v in NOT_RUNNING.items()))
    return Table(f"BalanceMM on {data} ({epochs} epoch(s) per cell)", chosen, COLUMNS, cell, split="test",
                 pick="last", metrics=("acc", "f1"), metric_labels={"acc": "acc", "f1": "F1"},
                 options={"epochs": epochs, "data": str(data), "batch_size": batch_size, "alpha": alpha,
                          **({"synthetic": synthetic} if synthetic else {}), **({"u": u} if u != "eq4" else {})},
                 note=note)


def run_table(out_dir, data_dir=None, epochs: int = 2, seeds=2, progress: Callable[[str], object] = print,
              checkout=None, alpha: float = 0.5, batch_size: int = 4, n_train: int = 12, n_test: int = 12,
              rows: tuple[str, ...] | None = None, fresh: bool = False, tensorboard=None, bar: bool = True,
              executor=None, u: str = "eq4") -> str:
    """Run every row for ``seeds`` (resuming what is complete) and return the table as text (also
    ``table.txt``, ``.md``, ``.csv``, ``.json`` in ``out_dir``).

    ``data_dir``: an existing CREMA-D in BalanceMM's layout; None writes a synthetic one of
    ``n_train`` / ``n_test`` clips to ``out_dir/data`` (each time, the same bytes for the same sizes). ``rows``: labels of :data:`ROWS` to run (default: all; the Baseline
    always). The modulation window is every epoch, α = 0.5 (their README's example). ``executor``:
    where the cell-seeds run (``serial``, ``local``, ``slurm``; default serial). ``u``: SPEC §2's
    reading of U in the +SimAM² row (ζ fixed).
    """
    return render_text(run_result(out_dir, data_dir, epochs, seeds, progress, checkout, alpha, batch_size, n_train,
                                  n_test, rows, fresh, tensorboard, bar, executor, u))


def run_result(out_dir, data_dir=None, epochs: int = 2, seeds=2, progress: Callable[[str], object] = print,
               checkout=None, alpha: float = 0.5, batch_size: int = 4, n_train: int = 12, n_test: int = 12,
               rows: tuple[str, ...] | None = None, fresh: bool = False, tensorboard=None, bar: bool = True,
               executor=None, u: str = "eq4") -> Result:
    """:func:`run_table`, returning the engine's :class:`~..machinery.grid.Result`."""
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    synthetic = None
    if data_dir is None:  # written anew each time, the same bytes for the same sizes (seed 0)
        data = SPEC.synth(out / "data", n_train=n_train, n_test=n_test)
        synthetic = {"n_train": n_train, "n_test": n_test}
        progress(f"wrote a synthetic CREMA-D to {data} ({n_train} train / {n_test} test clips)")
    else:
        data = Path(data_dir).absolute()
    t = table(data, epochs, batch_size, alpha, checkout, rows, synthetic, u)
    return run_grid(t, out, seeds=seeds, fresh=fresh, tensorboard=tensorboard, progress=bar,
                    say=None if bar else progress, executor=executor)
