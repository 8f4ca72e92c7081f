"""BalanceMM's trainers beside +SimAM² and +Decoupling-Free +SimAM², on a synthetic CREMA-D, through
``python -m balancemm`` itself.

One row per trainer of theirs that runs on CREMA-D on CPU at the pin (with ``patches/balancemm``),
then the two SimAM² rows; each cell is one run per seed in its own folder (``training.log``,
``records.jsonl``, the printout in ``stdout.log``), and its numbers are the final test evaluation's (BalanceMM tests the model with
the best validation accuracy): accuracy and macro-F1, fused and per modality head, mean ± std over
seeds.

===============================  =========================  ======  ==========  ==========
row                              --trainer                  SimAM²  ζ           modulation
===============================  =========================  ======  ==========  ==========
Baseline                         baselineTrainer            off     —           none
OGM (their OGM-GE)               OGMTrainer                 off     —           their own
AGM, AMCo, CML, GBlending, LFM,  <name>Trainer              off     —           their own
MBSD, MMPareto, OPM, PMR,
ReLearning, ReconBoost
+SimAM²                          baselineTrainer            on      learnable   none
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
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..machinery import RunConfig
from ..machinery.records import read_records
from ..machinery.stats import summarize
from .spec import SPEC, run


@dataclass(frozen=True)
class Row:
    """One row: its label, BalanceMM's --trainer (and --model), and our options."""

    label: str
    trainer: str
    model: str = "BaseClassifier"
    simam2: bool = False
    modulation: str = "none"
    batch_size: int | None = None  # None: the table's

    def config(self, record: Path, seed: int, alpha: float) -> RunConfig:
        return RunConfig(simam2=self.simam2, zeta="learnable" if self.simam2 else "fixed",
                         modulation=self.modulation, alpha=alpha, seed=seed, record=record)


ROWS = (
    Row("Baseline", "baselineTrainer"),
    Row("OGM", "OGMTrainer", modulation="ogm-ge"),
    Row("AGM", "AGMTrainer"),
    Row("AMCo", "AMCoTrainer", model="BaseClassifier_AMCo", batch_size=2),
    Row("CML", "CMLTrainer"),
    Row("GBlending", "GBlendingTrainer"),
    Row("LFM", "LFMTrainer"),
    Row("MBSD", "MBSDTrainer"),
    Row("MMPareto", "MMParetoTrainer"),
    Row("OPM", "OPMTrainer"),
    Row("PMR", "PMRTrainer"),
    Row("ReLearning", "ReLearningTrainer"),
    Row("ReconBoost", "ReconBoostTrainer", model="BaseClassifier_ReconBoost"),
    Row("+SimAM²", "baselineTrainer", simam2=True),
    Row("+Decoupling-Free +SimAM²", "OGMTrainerDF", simam2=True, modulation="df"),
)

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

COLUMNS = (("acc", "acc"), ("f1", "F1"), ("acc_audio", "acc a"), ("acc_visual", "acc v"),
           ("f1_audio", "F1 a"), ("f1_visual", "F1 v"))


def test_metrics(records: list[dict]) -> dict | None:
    """The final test evaluation's accuracy and macro-F1, fused and per modality (by name), with
    the Shapley values; None when the run has none."""
    start = next((r for r in records if r.get("event") == "start"), None)
    test = [r for r in records if r.get("event") == "eval" and r.get("split") == "test"]
    if start is None or not test:
        return None
    last, names = test[-1], start["modalities"]
    out = {"acc": last.get("acc"), "f1": last.get("f1")}
    for tag, name in zip(("m1", "m2"), names):
        out[f"acc_{name}"] = last.get(f"acc_head_{tag}")
        out[f"f1_{name}"] = last.get(f"f1_head_{tag}")
        out[f"shapley_{name}"] = last.get(f"shapley_{tag}")
    return out


def format_table(results: dict[str, list[dict | None]], title: str) -> str:
    """One row per method: mean ± std over seeds of each column, in %."""
    width = max(len(r.label) for r in ROWS) + 2
    head = f"{'Method':<{width}}" + "".join(f"{name:>15}" for _, name in COLUMNS)
    lines = [title, head, "-" * len(head)]
    for row in ROWS:
        if row.label not in results:
            continue
        cells = []
        for key, _ in COLUMNS:
            s = summarize([r.get(key) if r else None for r in results[row.label]])
            cells.append(f"{s.format(scale=100):>15}")
        lines.append(f"{row.label:<{width}}" + "".join(cells))
    lines.append("")
    lines.append("Not run: " + "; ".join(f"{k}: {v}" for k, v in NOT_RUNNING.items()))
    return "\n".join(lines)


def run_table(out_dir, data_dir=None, epochs: int = 2, seeds: int = 2, progress: Callable[[str], object] = print,
              checkout=None, alpha: float = 0.5, batch_size: int = 4, n_train: int = 12, n_test: int = 12,
              rows: tuple[str, ...] | None = None) -> str:
    """Run every row for seeds 0 .. seeds-1 and return the table (also ``out_dir/table.txt``, and every
    run's numbers in ``out_dir/table.json``).

    ``data_dir``: an existing CREMA-D in BalanceMM's layout; None writes a synthetic one to
    ``out_dir/data``. ``rows``: labels of :data:`ROWS` to run (default: all). The modulation window
    is every epoch, α = 0.5 (their README's example).
    """
    if epochs < 1 or seeds < 1:
        raise ValueError(f"epochs and seeds must be at least 1, got epochs={epochs}, seeds={seeds}")
    chosen = [r for r in ROWS if rows is None or r.label in rows]
    if rows is not None and len(chosen) != len(set(rows)):
        unknown = set(rows) - {r.label for r in ROWS}
        raise ValueError(f"unknown rows {sorted(unknown)}; known: {[r.label for r in ROWS]}")
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    if data_dir is None:
        data = SPEC.synth(out / "data", n_train=n_train, n_test=n_test)
        progress(f"wrote a synthetic CREMA-D to {data} ({n_train} train / {n_test} test clips)")
    else:
        data = Path(data_dir).absolute()
    results: dict[str, list[dict | None]] = {}
    for row in chosen:
        for seed in range(seeds):
            cell = out / f"{row.label.lower().replace('²', '2').replace('+', '').replace(' ', '_').replace('-', '')}" \
                         f"__seed{seed}"
            cell.mkdir(parents=True, exist_ok=True)
            record = cell / "records.jsonl"
            record.unlink(missing_ok=True)
            config = row.config(record, seed, alpha)
            argv = [*SPEC.upstream_argv(config), "--trainer", row.trainer, "--model", row.model]
            start = time.perf_counter()
            failure = None
            # BalanceMM prints its config and tqdm bars (stderr): each cell's go to its own log
            with open(cell / "stdout.log", "w", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
                    contextlib.redirect_stderr(log):
                try:
                    run(argv, config, workdir=cell, checkout=checkout, data=data, epochs=epochs,
                        batch_size=row.batch_size or batch_size, workers=0)
                except Exception as e:  # one failing cell (see the module's notes) does not end the table
                    failure = f"{type(e).__name__}: {e}".splitlines()[0]
            metrics = test_metrics(read_records(record)) if failure is None else None
            results.setdefault(row.label, []).append(metrics)
            shown = (f"failed: {failure}" if failure else "no test" if metrics is None
                     else f"acc {metrics['acc']:.3f}, F1 {metrics['f1']:.3f}")
            progress(f"{row.label:<26} seed {seed}  {shown}  ({time.perf_counter() - start:.0f} s)")
    table = format_table(results, f"BalanceMM on synthetic CREMA-D ({epochs} epoch(s), {seeds} seed(s), {data}), "
                                  "test, in %, mean ± std over seeds")
    (out / "table.txt").write_text(table + "\n", encoding="utf-8")
    (out / "table.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    return table
