"""TensorBoard curves of a run, written from its records (docs/records.md) as they are written.

:class:`TensorBoardSink` is a records sink (``RecordWriter(sinks=[...])``): it receives every row
the run writes and turns it into TensorBoard events through ``torch.utils.tensorboard``:

==========  ==========================================  =========================================
record      tags                                        x (TensorBoard's step)
==========  ==========================================  =========================================
``step``    ``step/rho_df``, ``step/rho_decoupled``,    the running step count of the run
            ``step/k1``, ``step/k2``, ``step/r``,       (0, 1, 2, … over all epochs)
            ``step/zeta_mean``, ``step/loss``
``zeta``    ``zeta`` (a histogram of ζ)                 the epoch
``eval``    ``<split>/<metric>`` (fused) and            the epoch
            ``<split>/<metric>_<modality>`` (alone:
            ``_m1`` / ``_m2`` renamed after ``start``'s
            modalities), ``…_head_<modality>``
==========  ==========================================  =========================================

A null field (no SimAM², no modulation at this step) writes nothing for that tag. The two ratios
and the two coefficients are also laid out as one chart each (TensorBoard's custom scalars), so
Eq. 11's ratio and OGM-GE's decoupled ratio can be read against each other.

TensorBoard itself is imported when a sink is made, not before: a run without ``--tensorboard``
never needs the package.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .records import RecordsError
from .steps import STEP_FIELDS  # the step fields written as curves

#: eval fields that are bookkeeping, not metrics
_EVAL_BOOKKEEPING = {"event", "epoch", "evaluation", "split", "n"}


class TensorBoardError(RecordsError):
    """TensorBoard curves were asked for and cannot be written (package missing, folder unusable)."""


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # torch raises ImportError when the tensorboard package is missing
        raise TensorBoardError("--tensorboard needs the tensorboard package: pip install tensorboard "
                               f"({e})") from None
    return SummaryWriter


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


class TensorBoardSink:
    """Writes one run's records as TensorBoard events into ``logdir`` (created if missing).

    Call it with each record row (a ``RecordWriter`` sink does); ``close()`` flushes and closes the
    event file. ``global_step`` counts the ``step`` records seen so far.
    """

    def __init__(self, logdir: Path | str):
        SummaryWriter = _summary_writer()
        self.logdir = Path(logdir)
        self.made = not self.logdir.exists()  # whether a refused run should take the folder back
        if self.logdir.exists() and not self.logdir.is_dir():
            raise TensorBoardError(f"--tensorboard {self.logdir} is a file: name a folder")
        try:
            self.writer = SummaryWriter(log_dir=str(self.logdir))
        except OSError as e:
            raise TensorBoardError(f"cannot write TensorBoard events to {self.logdir}: {e.strerror or e}") from None
        self.global_step = 0
        self.modalities = ("m1", "m2")
        self.closed = False
        self.writer.add_custom_scalars({"SimAM²": {
            "ratios (Eq. 11 vs decoupled)": ["Multiline", ["step/rho_df", "step/rho_decoupled"]],
            "coefficients k1, k2": ["Multiline", ["step/k1", "step/k2"]],
        }})

    # -- one handler per event -------------------------------------------------------------------

    def __call__(self, row: dict) -> None:
        if self.closed:
            return
        handler = getattr(self, f"_on_{row.get('event')}", None)
        if handler is not None:
            handler(row)

    def _on_start(self, row: dict) -> None:
        mods = row.get("modalities")
        if isinstance(mods, (list, tuple)) and len(mods) == 2:
            self.modalities = (str(mods[0]), str(mods[1]))
        shown = {k: row.get(k) for k in ("upstream", "script", "modalities", "metrics", "primary",
                                         "config", "upstream_options")}
        self.writer.add_text("run", "```\n" + json.dumps(shown, indent=1, default=str) + "\n```", 0)

    def _on_step(self, row: dict) -> None:
        for name in STEP_FIELDS:
            value = _number(row.get(name))
            if value is not None:
                self.writer.add_scalar(f"step/{name}", value, self.global_step)
        self.global_step += 1

    def _on_zeta(self, row: dict) -> None:
        edges, counts = row.get("edges"), row.get("counts")
        if not edges or not counts or len(edges) != len(counts) + 1 or sum(counts) == 0:
            return
        # the record keeps a histogram, not the values: moments from the bin centres
        centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
        total = float(sum(counts))
        used = [i for i, c in enumerate(counts) if c]
        self.writer.add_histogram_raw(
            "zeta", min=float(edges[used[0]]), max=float(edges[used[-1] + 1]), num=total,
            sum=float(sum(c * x for c, x in zip(counts, centres))),
            sum_squares=float(sum(c * x * x for c, x in zip(counts, centres))),
            bucket_limits=[float(e) for e in edges[1:]], bucket_counts=[float(c) for c in counts],
            global_step=int(row.get("epoch", 0)))

    def tag(self, split: str, name: str) -> str:
        """``<split>/<name>`` with a per-modality suffix (``_m1``, ``_head_m2``) named after the modality."""
        for i, mod in enumerate(self.modalities, start=1):
            if name.endswith(f"_m{i}"):
                name = f"{name[:-3]}_{mod}"
                break
        return f"{split}/{name}"

    def _on_eval(self, row: dict) -> None:
        split = str(row.get("split") or "eval")
        epoch = int(row.get("epoch", 0))
        for name, value in row.items():
            if name in _EVAL_BOOKKEEPING:
                continue
            value = _number(value)
            if value is not None:
                self.writer.add_scalar(self.tag(split, name), value, epoch)

    def _on_end(self, row: dict) -> None:
        self.writer.add_text("end", f"status: {row.get('status')}; steps: {row.get('steps')}; "
                                    f"evaluations: {row.get('evaluations')}; error: {row.get('error')}",
                             self.global_step)

    def discard(self) -> None:
        """Close, and remove the folder if this sink made it (a run refused before it began)."""
        self.close()
        if self.made:
            import shutil

            shutil.rmtree(self.logdir, ignore_errors=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()


def sinks_for(logdir: Path | str | None) -> list:
    """The record sinks ``--tensorboard logdir`` asks for: none without it."""
    return [] if logdir is None else [TensorBoardSink(logdir)]


__all__ = ["TensorBoardSink", "TensorBoardError", "STEP_FIELDS", "sinks_for"]
