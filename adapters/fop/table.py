"""Table 3 of the paper (face-voice association, EER / AUC) on a synthetic face–voice set, through
FOP's own main.py (training) and test.py (evaluation of main.py's best checkpoint).

Two rows × ``seeds`` seeds on :mod:`..machinery.grid` (resume, mean ± std, paired differences to
FOP, outputs): FOP's gated fusion, and SimAM² with **FOP's own gate as ζ** (``zeta="given"``: the
gate g of ``g·face + (1 − g)·voice`` is already a per-sample, per-channel weight of the face). Each
cell-seed trains with main.py, then evaluates main.py's best checkpoint with test.py on both
verification lists; the two evaluations are appended to the cell's records as a second run
(``script: test.py``, one ``eval`` record per list), from which the table's two column groups,
Seen-Heard and Unseen-Unheard, are read. EER is the primary metric (lower is better).

No per-modality columns: FOP's verification scores a pair by the distance between the face and the
voice embeddings that *enter* the fusion (the fused embedding only feeds main.py's identity loss),
so a branch alone has no verification score of its own.
"""

from __future__ import annotations

import contextlib
import io
import re
from functools import partial
from pathlib import Path
from typing import Callable

from ..machinery import RunConfig, run_script
from ..machinery.grid import CellSeed, Column, Result, Table, render_text, run_table as run_grid
from ..machinery.records import RecordWriter
from ..machinery.table import Method
from .checks import prepare_workdir
from .evaluate import best_checkpoint, evaluate_checkpoint
from .spec import EVAL_SCRIPT, SPEC
from .synth import write_fop

#: Table 3 of the paper (VoxCeleb1, %): EER and AUC on Seen-Heard, then on Unseen-Unheard
PAPER_TABLE3 = {"FOP": (19.3, 89.3, 24.9, 83.5), "FOP + SimAM²": (18.5, 89.8, 24.6, 83.7)}
METHODS = (Method("FOP", False, "none"), Method("FOP + SimAM²", True, "none", "given"))
#: the two verification lists: the columns; both read the same runs (trained once per cell-seed)
COLUMNS = (Column("seenheard", "Seen-Heard", split="seenheard"),
           Column("unseenunheard", "Unseen-Unheard", split="unseenunheard", shares="seenheard"))


def _paper() -> dict:
    out = {}
    for name, (eer_sh, auc_sh, eer_uu, auc_uu) in PAPER_TABLE3.items():
        out[(name, "seenheard")] = {"eer": eer_sh, "auc": auc_sh}
        out[(name, "unseenunheard")] = {"eer": eer_uu, "auc": auc_uu}
    return out


def run_cell(cs: CellSeed, data: Path, epochs: int, lr: float, batch_size: int, checkout=None) -> None:
    """One cell-seed of Table 3: main.py trains, test.py evaluates its best checkpoint on both lists.
    Module-level (its options bound with ``functools.partial``) so that it pickles for the local
    and Slurm executors."""
    method: Method = cs.row
    config = method.run_config(cs)
    work = prepare_workdir(data, cs.folder / "train")
    log = cs.folder / "log.txt"
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            run_script(SPEC, ["--batch_size", str(batch_size), "--max_num_epoch", str(epochs + 1),
                              "--lr", str(lr), "--seed", str(cs.seed), "--fusion", "gated"],
                       config, checkout=checkout, cwd=work)
    finally:
        log.write_text(buf.getvalue(), encoding="utf-8")
    ckpt = best_checkpoint(work)
    found = re.search(r"checkpoint_(\d+)", ckpt.name)
    epoch = int(found.group(1)) if found else None
    results = {split: evaluate_checkpoint(ckpt, data, cs.folder / f"test_{split}", split,
                                          config=RunConfig(simam2=method.simam2, zeta=method.zeta),
                                          checkout=checkout, log=log)
               for split in ("seenheard", "unseenunheard")}
    # test.py's numbers join the training run's records as a second run of the same file
    w = RecordWriter(cs.records, append=True)
    w.start(upstream=SPEC.name, script=EVAL_SCRIPT, modalities=SPEC.modalities, metrics=SPEC.metrics,
            primary=SPEC.primary, higher_is_better=SPEC.higher_is_better, config=config.plain(),
            upstream_options={"checkpoint": str(ckpt)})
    for i, (split, m) in enumerate(results.items()):
        w.write("eval", epoch=epoch, evaluation=i, split=split, n=None, eer=m["eer"], auc=m["auc"],
                accuracy=m["accuracy"])
    w.end()


def table(data: Path, epochs: int, lr: float = 1e-3, batch_size: int = 32, checkout=None) -> Table:
    """Table 3's declaration: its cells train and test FOP on ``data`` (a face–voice set in FOP's layout)."""
    cell = partial(run_cell, data=data, epochs=epochs, lr=lr, batch_size=batch_size, checkout=checkout)
    return Table(f"Table 3: face-voice association (FOP), synthetic VoxCeleb-format features, {epochs} epoch(s), "
                 "EER ↓ / AUC ↑", METHODS, COLUMNS, cell, pick="last", metric_labels={"eer": "EER", "auc": "AUC"},
                 paper=_paper(), options={"epochs": epochs, "data": str(data), "lr": lr, "batch_size": batch_size},
                 note="The paper's values are VoxCeleb1's; synthetic features say that every cell runs and records.")


def run_table(out_dir, data_dir=None, epochs: int = 6, seeds=3, lr: float = 1e-3, batch_size: int = 32,
              checkout=None, progress: Callable[[str], object] = print, fresh: bool = False, tensorboard=None,
              bar: bool = True, executor=None) -> str:
    """Table 3 on a synthetic face–voice set, mean ± std over ``seeds`` (a count, or the seeds),
    as text (also ``table.txt``, ``.md``, ``.csv``, ``.json`` in ``out_dir``)."""
    return render_text(run(out_dir, data_dir, epochs, seeds, lr, batch_size, checkout, progress, fresh,
                           tensorboard, bar, executor))


def run(out_dir, data_dir=None, epochs: int = 6, seeds=3, lr: float = 1e-3, batch_size: int = 32, checkout=None,
        progress: Callable[[str], object] = print, fresh: bool = False, tensorboard=None,
        bar: bool = True, executor=None) -> Result:
    """Table 3's :class:`~..machinery.grid.Result`; the synthetic set is written to ``out_dir/data``
    (once) unless ``data_dir`` is given."""
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    if data_dir is not None:
        data = Path(data_dir).absolute()
    else:
        data = out / "data"
        if not (data / "features").is_dir():
            data = write_fop(data, seed=0)
            progress(f"wrote a synthetic face–voice set to {data}")
    return run_grid(table(data, epochs, lr, batch_size, checkout), out, seeds=seeds, fresh=fresh,
                    tensorboard=tensorboard, progress=bar, say=None if bar else progress,
                    executor=executor)
