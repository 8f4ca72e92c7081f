"""Made-up but realistic records (docs/records.md) for tests of the readers: plots, TensorBoard, tables.

A run of ``epochs`` epochs × ``steps`` steps: audio (modality 1) dominates early, so both ratios
start high and fall towards 1 as modulation acts; Eq. 11's ratio and OGM-GE's decoupled ratio move
together (the paper's correlation claim) with some noise; k1 < 1 while audio dominates; the loss
falls; ζ's histogram drifts; each epoch ends with an evaluation whose fused metric rises and whose
audio-alone metric beats the visual-alone one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simam2.adapters.machinery.records import RecordWriter


def write_run(path: Path | str | None, *, epochs: int = 3, steps: int = 5, seed: int = 0,
              simam2: bool = True, decoupled: bool = True, modulation: str = "df",
              metrics=("top1", "mAP"), splits=("test",), end: str | None = "completed",
              stop_after_epoch: int | None = None, skill: float = 0.0, sinks=()) -> RecordWriter:
    """Write one run's records to ``path`` (None: in memory) and return the writer.

    ``end=None`` leaves the file without an ``end`` record (a killed run); ``stop_after_epoch``
    stops writing after that epoch's steps, before its evaluation (a run killed mid-epoch).
    ``skill`` shifts every metric up (a better method).
    """
    rng = np.random.default_rng(seed)
    w = RecordWriter(path, sinks=sinks)
    w.start(upstream="ogm-ge", script="main.py", modalities=["audio", "visual"], metrics=list(metrics),
            primary=metrics[0], higher_is_better=True,
            config={"simam2": simam2, "zeta": "learnable" if simam2 else "fixed", "modulation": modulation,
                    "seed": seed},
            upstream_options={"fusion_method": "concat", "epochs": epochs})
    edges = list(np.linspace(0, 1, 21))
    n = 0
    for epoch in range(epochs):
        for step in range(steps):
            t = n / max(1, epochs * steps - 1)
            rho = 1.0 + 1.5 * (1 - t) + 0.1 * rng.standard_normal()
            row = dict(epoch=epoch, step=step, loss=float(2.0 * np.exp(-2 * t) + 0.05 * rng.random()),
                       rho_df=rho if simam2 else None,
                       rho_decoupled=(0.5 + 0.8 * rho + 0.1 * rng.standard_normal()) if decoupled else None,
                       k1=float(1 - np.tanh(0.1 * max(rho - 1, 0))) if modulation != "none" else None,
                       k2=1.0 if modulation != "none" else None,
                       r=float(0.9 + 0.05 * rng.random()) if simam2 else None,
                       zeta_mean=float(0.5 + 0.1 * (1 - t)) if simam2 else None)
            w.write("step", **row)
            n += 1
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            w.close()
            return w
        if simam2:
            zeta = np.clip(rng.normal(0.6 - 0.05 * epoch, 0.1, 200), 0, 1)
            w.write("zeta", epoch=epoch, edges=edges, counts=np.histogram(zeta, bins=edges)[0].tolist())
        for split in splits:
            base = min(0.95, 0.3 + 0.5 * epoch / max(1, epochs - 1) + skill + 0.02 * rng.standard_normal())
            fields = {}
            for m in metrics:
                fields[m] = base
                fields[f"{m}_m1"] = base - 0.05
                fields[f"{m}_m2"] = base - 0.15 - 0.05 * skill
                fields[f"{m}_head_m1"] = base - 0.08
                fields[f"{m}_head_m2"] = base - 0.25
            w.write("eval", epoch=epoch, evaluation=w.counts["eval"], split=split, n=12, **fields)
    if end is not None:
        w.end(end, None if end == "completed" else "RuntimeError: made up")
    else:
        w.close()
    return w
