"""The run-time instruments, once, for the probe of every upstream and for the study's trainer alike.

- :data:`STEP_FIELDS`: the fields of a ``step`` record, in the order they are stacked (docs/records.md);
- :class:`StepBuffer`: a step's values stacked **on the device**, read back once per epoch;
- :func:`zeta_record`: the ``zeta`` record's histogram of ζ;
- :func:`modulator_for`: the only place that maps a :class:`RunConfig`'s modulation options onto the
  core's :class:`~simam2.core.GradientModulator`.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping

import torch

from simam2.core import GradientModulator

from .config import Modulation, RunConfig

#: the per-step values, in the order they are stacked on the device (docs/records.md, ``step``)
STEP_FIELDS = ("loss", "rho_df", "rho_decoupled", "k1", "k2", "r", "zeta_mean")
ZETA_BINS = 20
#: the ``zeta`` record's 21 bin edges over [0, 1]
ZETA_EDGES = tuple(i / ZETA_BINS for i in range(ZETA_BINS + 1))

Write = Callable[..., object]  # RecordWriter.write's signature: write(event, **fields)


class StepBuffer:
    """One epoch's step values, stacked on ``device`` at each step and read back at :meth:`flush`.

    ``add(epoch, loss=…, rho_df=…, …)`` takes the :data:`STEP_FIELDS` by name (0-dim tensors or
    numbers); a field not given is NaN, which the record writes as ``null``. ``dtype``: the precision
    the values are kept in; float32 rounds ``r`` (computed in float64 by the core), float64 keeps it.
    """

    def __init__(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.device = torch.device(device)
        self.dtype = dtype
        self.rows: list[torch.Tensor] = []
        self.epoch = 0
        self._nan: torch.Tensor | None = None

    def __bool__(self) -> bool:
        return bool(self.rows)

    def add(self, epoch: int, **values) -> None:
        unknown = set(values) - set(STEP_FIELDS)
        if unknown:
            raise ValueError(f"unknown step fields {sorted(unknown)}; known: {', '.join(STEP_FIELDS)}")
        if not self.rows:
            self.epoch = epoch
        if self._nan is None:
            self._nan = torch.full((), math.nan, dtype=self.dtype, device=self.device)  # a fill, not a copy
        row = [values.get(name) for name in STEP_FIELDS]
        self.rows.append(torch.stack([
            self._nan if v is None else torch.as_tensor(v, device=self.device).detach().to(self.dtype).reshape(())
            for v in row]))

    def flush(self, write: Write) -> int:
        """Write the buffered steps as ``step`` records (the one read-back per epoch); returns the
        epoch they belong to."""
        epoch = self.epoch
        if not self.rows:
            return epoch
        table = torch.stack(self.rows).cpu().tolist()
        self.rows = []
        for step, row in enumerate(table):
            write("step", epoch=epoch, step=step, **dict(zip(STEP_FIELDS, row)))
        return epoch


def zeta_counts(zeta: torch.Tensor) -> torch.Tensor:
    """The counts of ζ's values in the :data:`ZETA_EDGES` bins, on ζ's device: bin ``i`` holds
    ``edges[i] <= ζ < edges[i + 1]``, the last bin also ζ = 1; values outside [0, 1] and NaN are
    left out (NumPy's ``histogram`` rule). Compared in float64, so that a float32 ζ just below an
    edge that float32 cannot hold exactly is not counted in the next bin."""
    z = zeta.detach().reshape(-1)
    if z.device.type == "mps":  # no float64 there
        z = z.cpu()
    z = z.double()
    edges = torch.tensor(ZETA_EDGES, dtype=torch.float64, device=z.device)
    idx = (torch.bucketize(z, edges, right=True) - 1).clamp(0, ZETA_BINS - 1)
    idx = torch.where((z >= 0) & (z <= 1), idx, torch.full_like(idx, ZETA_BINS))  # outside: a spare bin
    counts = torch.zeros(ZETA_BINS + 1, dtype=torch.int64, device=z.device).scatter_add_(0, idx, torch.ones_like(idx))
    return counts[:ZETA_BINS]


def zeta_record(write: Write, epoch: int, zeta: torch.Tensor) -> None:
    """The ``zeta`` record of ``epoch``: ζ's histogram over [0, 1] (docs/records.md)."""
    write("zeta", epoch=epoch, edges=list(ZETA_EDGES), counts=[int(c) for c in zeta_counts(zeta).tolist()])


def modulator_for(config: RunConfig, groups: Mapping[str, Iterable[torch.nn.Parameter]] | Callable[[], Mapping],
                  fusion, epoch_fn: Callable[[], int] | None = None, *,
                  upstream_modulates: bool = False) -> GradientModulator | None:
    """The core's gradient modulator that ``config`` asks for, or None: none when its modulation is
    off, or when it is OGM-GE's own and the upstream runs it itself (``upstream_modulates``).

    ``groups``: the two modalities' parameters, modality 1 first (or a function returning them, called
    only when a modulator is made). ``fusion``: the SimAM² fusion whose ζ drives Eq. 11 (read only
    for ``df``). The modulator is not attached: the caller attaches it where its optimizer is.
    """
    modulation = Modulation.of(config)
    if not modulation.on or (modulation.decoupled and upstream_modulates):
        return None
    groups = groups() if callable(groups) else groups
    return GradientModulator(
        groups, fusion=fusion if modulation.decoupling_free else None, alpha=config.alpha, ratio=modulation.ratio,
        noise=modulation.noise, start_epoch=config.modulation_start, end_epoch=config.modulation_end,
        epoch_fn=epoch_fn, seed=config.seed)


__all__ = ["STEP_FIELDS", "ZETA_BINS", "ZETA_EDGES", "StepBuffer", "zeta_counts", "zeta_record", "modulator_for"]
