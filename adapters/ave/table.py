"""Table 2 of the paper (AVE localization accuracy, AVGA and PSP) on a synthetic AVE, through the
upstreams' own scripts.

Eight cells: four methods × two networks, each run for ``seeds`` seeds on
:mod:`..machinery.grid` (resume, mean ± std, paired differences to the baseline, per-modality
accuracy, outputs). Each cell-seed runs the upstream's script in its own folder (checkpoints,
``records.jsonl``). ζ as in the paper (Table 1's footnote, applied to Table 2 alike): learnable only
in the decoupling-free row.

=============================  ======  ===========  ======================================
method                         SimAM²  ζ            modulation
=============================  ======  ===========  ======================================
Baseline                       off     —            none
+SimAM²                        on      fixed 0.5    none
+OGM-GE                        off     —            OGM-GE, decoupled ratio (SPEC §6)
+SimAM² +Decoupling-free       on      learnable    OGM-GE's rule on Eq. 11's ratio
=============================  ======  ===========  ======================================

Each network's accuracy follows its script's own protocol: AVGA trains (``val()`` every 5 epochs
keeps the best model in ``model/AV_att.pt``), then ``supervised_main.py`` without ``--train``
tests that model (its records are appended to the training run's: the table reads the last test);
PSP tests after every epoch (``--check_epoch 1``) and reports its best test accuracy
(``[best test accuracy]``: the table reads the best test). For the decoupling-free cells the table
also gives the Pearson r of the two ratios over the training steps.

The numbers of a synthetic set say whether every cell runs and records, not how the methods rank
on AVE.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

from ..machinery import RunConfig, run_script
from ..machinery.grid import CellSeed, Column, Result, Table, render_text, run_table as run_grid
from ..machinery.install import checkout_of
from ..machinery.stats import ratio_correlation as _ratio_correlation
from ..machinery.table import Method
from .avga import SPEC as AVGA
from .common import data_args
from .psp import SPEC as PSP

#: the paper's Table 2 (accuracy, %), shown beside the synthetic numbers
PAPER = {
    ("Baseline", "avga"): 72.0, ("+SimAM²", "avga"): 72.4, ("+OGM-GE", "avga"): 72.8,
    ("+SimAM² +Decoupling-free", "avga"): 73.0,
    ("Baseline", "psp"): 76.2, ("+SimAM²", "psp"): 76.7, ("+OGM-GE", "psp"): 76.9,
    ("+SimAM² +Decoupling-free", "psp"): 77.2,
}
NETWORKS = (("avga", "AVGA"), ("psp", "PSP"))
COLUMNS = tuple(Column(k, v) for k, v in NETWORKS)

METHODS = (
    Method("Baseline", False, "none"),
    Method("+SimAM²", True, "none", "fixed"),
    Method("+OGM-GE", False, "ogm-ge"),
    Method("+SimAM² +Decoupling-free", True, "df", "learnable"),
)


def ratio_correlation(records: list[dict]) -> float | None:
    """Pearson r of Eq. 11's ratio and OGM-GE's decoupled ratio over the training steps."""
    return _ratio_correlation(records)[0]


def run_cell(cs: CellSeed, data: Path, epochs: int, checkout_avga: Path, checkout_psp: Path, alpha: float,
             batch_size: int, threshold: float, u: str) -> None:
    """One cell-seed of Table 2: AVGA trains then tests its kept model, or PSP trains and tests.
    Module-level (its options bound with ``functools.partial``) so that it pickles for the local
    and Slurm executors."""
    method: Method = cs.row
    config = method.run_config(cs, u=u, alpha=alpha)
    if cs.column.key == "avga":
        argv = ["--model_name", "AV_att", "--nb_epoch", str(epochs), "--batch_size", str(batch_size),
                *data_args(data, "--dir_labels", "labels.h5")]
        run_script(AVGA, ["--train", *argv], config, checkout=checkout_avga, cwd=cs.folder)
        # the test of the kept model: its records follow the training run's in the same file
        test_config = RunConfig(simam2=method.simam2, zeta=config.zeta, u=config.u, seed=cs.seed, record=config.record,
                                append=True, tensorboard=None)
        run_script(AVGA, argv, test_config, checkout=checkout_avga, cwd=cs.folder)
    else:
        argv = ["--model_name", "PSP", f"--threshold={threshold}", "--train", "--nb_epoch", str(epochs),
                "--batch_size", str(batch_size), "--save_epoch", str(epochs + 1), "--check_epoch", "1",
                *data_args(data, "--dir_labels", "right_labels.h5")]
        run_script(PSP, argv, config, checkout=checkout_psp, cwd=cs.folder)


def table(data: Path, epochs: int, checkout_avga: Path, checkout_psp: Path, alpha: float = 0.5,
          batch_size: int = 8, threshold: float = 0.099, u: str = "eq4") -> Table:
    """Table 2's declaration: its cells run the two scripts on ``data`` (an AVE in their layout)."""
    cell = partial(run_cell, data=data, epochs=epochs, checkout_avga=checkout_avga, checkout_psp=checkout_psp,
                   alpha=alpha, batch_size=batch_size, threshold=threshold, u=u)

    # AVGA's one test is its last; PSP's protocol is its best test: per column, by the pick below
    return Table(f"Table 2 on a synthetic AVE ({epochs} epochs per cell), accuracy", METHODS,
                 (Column("avga", "AVGA (last test: the kept model)"), Column("psp", "PSP (best test)")),
                 cell, split="test", pick="best", metric_labels={"acc": "Acc"},
                 paper={k: {"acc": v} for k, v in PAPER.items()},
                 options={"epochs": epochs, "data": str(data), "alpha": alpha, "batch_size": batch_size,
                          "threshold": threshold, **({"u": u} if u != "eq4" else {})},
                 note="Synthetic data: the numbers say that every cell runs and records, not how the methods "
                      "rank on AVE. AVGA's test runs once (its kept model), so best and last coincide.")


def run_table(out_dir, data_dir=None, epochs: int | None = None, progress: Callable[[str], object] = print,
              checkout_avga=None, checkout_psp=None, seeds=1, fresh: bool = False, tensorboard=None,
              bar: bool = True, **kwargs) -> str:
    """Run the eight cells × ``seeds`` (resuming what is complete) and return Table 2 as text (also
    ``table.txt``, ``.md``, ``.csv``, ``.json`` in ``out_dir``); see :func:`run` for the options."""
    return render_text(run(out_dir, data_dir, epochs, progress, checkout_avga, checkout_psp, seeds, fresh,
                           tensorboard, bar, **kwargs))


def run(out_dir, data_dir=None, epochs: int | None = None, progress: Callable[[str], object] = print,
        checkout_avga=None, checkout_psp=None, seeds=1, fresh: bool = False, tensorboard=None, bar: bool = True,
        alpha: float = 0.5, batch_size: int = 8, n_train: int = 48, n_val: int = 16, n_test: int = 16,
        n_classes: int = 4, threshold: float = 0.099, audio_signal: float = 0.5,
        visual_signal: float = 0.5, u: str = "eq4", executor=None) -> Result:
    """Table 2's :class:`~..machinery.grid.Result`; ``u``: SPEC §2's reading of U in its SimAM² rows.

    ``data_dir``: an existing AVE folder in the scripts' layout (its val/test orders must hold 402
    entries); None writes a synthetic one of ``n_train`` / ``n_val`` / ``n_test`` videos of
    ``n_classes`` classes to ``out_dir/data`` (once), with class prototypes scaled by
    ``audio_signal`` / ``visual_signal`` (at full strength, 1.0, PSP reaches 100 % within 8 epochs
    and the cells cannot differ). ``epochs`` (default 8) per cell; ``batch_size`` must be at least
    ``n_train / batch_size`` (PSP's epoch summary).
    """
    epochs = 8 if epochs is None else epochs
    if epochs < 2:
        raise ValueError(f"epochs must be at least 2 (PSP tests from its second epoch on), got {epochs}")
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    checkout_avga = Path(checkout_avga) if checkout_avga is not None else checkout_of(AVGA)
    checkout_psp = Path(checkout_psp) if checkout_psp is not None else checkout_of(PSP)
    if data_dir is None:
        marker = out / "data.txt"  # where the synthetic set of this folder was written (once)
        if marker.is_file() and Path(marker.read_text(encoding="utf-8").strip()).is_dir():
            data = Path(marker.read_text(encoding="utf-8").strip())
        else:
            data = AVGA.synth(out / "data", n_train=n_train, n_val=n_val, n_test=n_test, n_classes=n_classes,
                              seed=0, checkout=checkout_avga, audio_signal=audio_signal,
                              visual_signal=visual_signal)
            marker.write_text(str(data), encoding="utf-8")
            progress(f"wrote a synthetic AVE to {data} ({n_train} train / {n_val} val / {n_test} test videos, "
                     f"{n_classes} classes, signal audio {audio_signal} / visual {visual_signal})")
    else:
        data = Path(data_dir).absolute()
    t = table(data, epochs, checkout_avga, checkout_psp, alpha, batch_size, threshold, u)
    return run_grid(t, out, seeds=seeds, fresh=fresh, tensorboard=tensorboard, progress=bar,
                    say=None if bar else progress, executor=executor)
