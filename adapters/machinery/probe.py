"""One RunProbe per run: the epoch, the modulator, the step log and every hook, for every upstream.

The probe is what the spec's layers talk to during a run:

- ``on_model(model)`` — the script built its model: the ``start`` record is written, the gradient
  modulator (if any) is attached, then the step recorder, in that order, so that the record of a step
  sees the coefficients applied at that step;
- ``on_mode(training)`` — the model's ``train()``/``eval()``: leaving training flushes the step log;
  with ``epoch_source = "train_calls"`` each ``train()`` starts the next epoch;
- ``on_fusion_inputs(x1, x2)`` — the two streams entering the fusion in a training forward (kept,
  detached, for OGM-GE's decoupled ratio at the loss);
- ``set_epoch(e)`` (specs whose epochs come from elsewhere), ``record_eval(split, n, **metrics)``.

At the criterion of a training step (a global module forward hook on ``spec.criterion``) the probe
keeps the loss and computes OGM-GE's decoupled ratio from the spec's per-modality logits; before
each optimizer step of the model's optimizer it stacks the step's values **on the device**; they are
read back once per epoch (at the flush), never per step.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch.nn.modules.module import register_module_forward_hook
from torch.optim.optimizer import register_optimizer_step_pre_hook

from simam2.core import GradientModulator, decoupled_scores, ogm_coefficients

from .install import AdapterError

if TYPE_CHECKING:
    from .install import RunContext

#: the per-step values, in the order they are stacked on the device (docs/records.md, ``step``)
STEP_FIELDS = ("loss", "rho_df", "rho_decoupled", "k1", "k2", "r", "zeta_mean")
ZETA_BINS = 20
EPOCH_SOURCES = ("train_calls", "evaluations", "explicit")


class RunProbe:
    """The per-run state the layers and hooks share (``run.probe``)."""

    def __init__(self, run: "RunContext"):
        self.run = run
        self.spec = run.spec
        if self.spec.epoch_source not in EPOCH_SOURCES:
            raise ValueError(f"{self.spec.name}: epoch_source must be one of {EPOCH_SOURCES}")
        self.model = None
        self.modulator: GradientModulator | None = None
        self.epoch = 0
        self.evaluations = 0
        self._train_calls = 0
        self._streams: tuple[torch.Tensor, torch.Tensor] | None = None
        self._loss: torch.Tensor | None = None
        self._rho_decoupled: torch.Tensor | None = None
        self._steps: list[torch.Tensor] = []
        self._steps_epoch = 0
        self._last_zeta: torch.Tensor | None = None
        self._bad_loss: torch.Tensor | None = None  # on the device: a step's loss was NaN or infinite
        self._optimizers: dict[int, bool] = {}  # id(optimizer) -> holds this model's parameters
        self._started = False
        self._ended = False

    # -- lifecycle -------------------------------------------------------------------------------

    def install(self) -> None:
        """Register the loss hook (the step hook waits for the model: see :meth:`on_model`)."""
        if self.spec.criterion is not None:
            self.run.add_cleanup(register_module_forward_hook(self._loss_hook).remove)

    def on_model(self, model) -> None:
        if self.model is not None:
            return  # the first model built is the run's (a later one is, e.g., a loaded checkpoint)
        self.model = model
        self._write_start(model)
        config = self.run.config
        runs_ours = config.modulation == "df" or (config.modulation == "ogm-ge" and not self.spec.own_ogm_ge)
        if runs_ours:
            fusion = self.spec.fusion(model)
            if config.modulation == "df" and fusion is None:
                raise AdapterError(f"{self.spec.name}: decoupling-free modulation reads ζ from a SimAM² fusion, "
                                   "and this model has none")
            self.modulator = GradientModulator(
                self.spec.groups(model), fusion=fusion if config.modulation == "df" else None,
                alpha=config.alpha, mode="ogm_ge" if config.ge else "ogm", start_epoch=config.modulation_start,
                end_epoch=config.modulation_end, epoch_fn=lambda: self.epoch,
                ratio="zeta" if config.modulation == "df" else "decoupled", seed=config.seed)
            self.run.add_cleanup(self.modulator.attach(None).remove)
        # after the modulator's hook, so that a step's record sees the coefficients applied at it
        self.run.add_cleanup(register_optimizer_step_pre_hook(self._step_hook).remove)

    def _write_start(self, model=None) -> None:
        if self._started:
            return
        self._started = True
        spec, run = self.spec, self.run
        self.run.recorder.start(
            upstream=spec.name, script=run.script, modalities=spec.modalities_of(model) if model is not None
            else spec.modalities, metrics=spec.metrics, primary=spec.primary, higher_is_better=spec.higher_is_better,
            config=run.config.plain(), upstream_options=spec.upstream_options(run, model) if model is not None else {})

    def finish(self) -> None:
        """Flush what is pending (the run is leaving its block)."""
        self.flush_steps()

    def end(self, status: str, error: str | None) -> None:
        """The ``end`` record (a run that failed before building its model gets a ``start`` first)."""
        if self._ended:
            return
        self._ended = True
        self._write_start(self.model)
        self.run.recorder.end(status, error)

    # -- epochs ----------------------------------------------------------------------------------

    def on_mode(self, training: bool) -> None:
        if not training:
            self.flush_steps()
        elif self.spec.epoch_source == "train_calls":
            self._train_calls += 1
            self.set_epoch(self._train_calls - 1)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.flush_steps()
        self.epoch = epoch

    # -- training steps --------------------------------------------------------------------------

    def on_fusion_inputs(self, x1: torch.Tensor, x2: torch.Tensor) -> None:
        """The two streams entering the fusion in a training forward, modality 1 first."""
        self._streams = (x1.detach(), x2.detach())

    @torch.no_grad()
    def _loss_hook(self, module, args, output) -> None:
        if not isinstance(module, self.spec.criterion) or self.model is None or not self.model.training:
            return
        labels = self.spec.labels(self, args)
        if labels is None:
            return
        if torch.is_tensor(output) and output.numel() == 1:
            self._loss = output.detach().reshape(()).float()
            bad = ~torch.isfinite(self._loss)
            self._bad_loss = bad if self._bad_loss is None else self._bad_loss | bad
        if self._streams is None:
            return
        split = self.spec.modality_logits(self.model, *self._streams)
        if split is None:
            return
        labels = labels.reshape(-1)
        l1, l2 = (t.reshape(labels.shape[0], -1) for t in split)
        if self.modulator is not None and self.modulator.ratio == "decoupled":
            self._rho_decoupled = self.modulator.observe_logits(l1, l2, labels)
        else:
            scores = decoupled_scores(l1, l2, labels)
            self._rho_decoupled = scores[0] / scores[1]

    def _holds_model(self, optimizer) -> bool:
        key = id(optimizer)
        if key not in self._optimizers:
            own = {id(p) for p in self.model.parameters()}
            self._optimizers[key] = any(id(p) in own for g in optimizer.param_groups for p in g["params"])
            if self._optimizers[key]:
                self._add_missing_params(optimizer)
        return self._optimizers[key]

    def _add_missing_params(self, optimizer) -> None:
        """Put the adapter's own parameters (a learnable ζ gate) into the upstream's optimizer, once:
        an upstream that builds its parameter groups by name would leave them untrained."""
        held = {id(p) for g in optimizer.param_groups for p in g["params"]}
        fusion = self.spec.fusion(self.model)
        missing = [p for p in (fusion.parameters() if fusion is not None else ()) if p.requires_grad and id(p) not in held]
        if missing:
            optimizer.add_param_group({"params": missing})
            self.run.recorder.write("note", what="param_group_added", params=sum(p.numel() for p in missing))

    @torch.no_grad()
    def _step_hook(self, optimizer, args, kwargs) -> None:
        if self.model is None or not self._holds_model(optimizer):
            return
        device = next(self.model.parameters()).device
        nan = torch.full((), math.nan, device=device)  # a fill on the device, not a host-to-device copy
        sums = self.spec.zeta_sums(self.model)
        rho_df = zeta_mean = nan
        if sums is not None:
            rho_df, zeta_mean = sums[0] / sums[1], sums[0] / (sums[0] + sums[1])
        fusion = self.spec.fusion(self.model)
        r = fusion.r if fusion is not None and getattr(fusion, "r", None) is not None else nan
        k1 = k2 = nan
        m = self.modulator
        config = self.run.config
        if m is not None and m.last.get("applied"):
            k1, k2 = m.last["k1"], m.last["k2"]
        elif (self.spec.own_ogm_ge and config.modulation == "ogm-ge" and self._rho_decoupled is not None
              and config.modulation_start <= self.epoch <= config.modulation_end):
            k1, k2 = ogm_coefficients(self._rho_decoupled, config.alpha)  # the upstream's own rule, for the record
        values = (self._loss if self._loss is not None else nan, rho_df,
                  self._rho_decoupled if self._rho_decoupled is not None else nan, k1, k2, r, zeta_mean)
        if not self._steps:
            self._steps_epoch = self.epoch
        self._steps.append(torch.stack([torch.as_tensor(v, device=device).to(torch.float32).reshape(()) for v in values]))
        zeta = self.spec.zeta(self.model)
        if zeta is not None:
            self._last_zeta = zeta.detach()
        self._streams = self._loss = self._rho_decoupled = None

    def flush_steps(self) -> None:
        """Write the buffered steps: the one read-back from the device per epoch."""
        if not self._steps:
            return
        rows = torch.stack(self._steps).cpu().tolist()
        self._steps = []
        if self._bad_loss is not None and bool(self._bad_loss):
            self.run.recorder.nonfinite = True
        for i, row in enumerate(rows):
            self.run.recorder.write("step", epoch=self._steps_epoch, step=i, **dict(zip(STEP_FIELDS, row)))
        if self._last_zeta is not None:
            counts = torch.histc(self._last_zeta.float(), bins=ZETA_BINS, min=0.0, max=1.0)
            edges = [i / ZETA_BINS for i in range(ZETA_BINS + 1)]
            self.run.recorder.write("zeta", epoch=self._steps_epoch, edges=edges, counts=[int(c) for c in counts.tolist()])
            self._last_zeta = None

    # -- evaluations -----------------------------------------------------------------------------

    def record_eval(self, split: str, n: int, **metrics) -> None:
        """One evaluation's metrics (the upstream's names; per-modality ones suffixed ``_m1``/``_m2``)."""
        self.flush_steps()
        self.run.recorder.write("eval", epoch=self.epoch, evaluation=self.evaluations, split=split, n=n, **metrics)
        self.evaluations += 1
        if self.spec.epoch_source == "evaluations":
            self.set_epoch(self.evaluations)
