"""One RunProbe per run: the epoch, the modulator, the step log and every hook, for every upstream.

The probe is what the spec's layers talk to during a run:

- ``on_model(model)`` — the script built its model: the ``start`` record is written, the gradient
  modulator (if any) is attached, then the step recorder, in that order, so that the record of a step
  sees the coefficients applied at that step;
- ``on_mode(training)`` — the model's ``train()``/``eval()``: leaving training flushes the step log;
  with ``epoch_source = "train_calls"`` each ``train()`` starts the next epoch;
- ``on_fusion_inputs(x1, x2)`` — the two streams entering the fusion in a training forward (kept,
  detached, for OGM-GE's decoupled ratio at the loss);
- ``set_epoch(e)`` (specs whose epochs come from elsewhere), ``record_eval(split, n, **metrics)``;
- ``on_eval_fusion_inputs(x1, x2)`` — the two streams entering the fusion in an evaluation forward,
  after its output: with ``per_modality`` on, the spec's ``head`` is run on them again with each
  stream in turn replaced by its mean over the last training epoch (mean ablation, SPEC §8), and the
  spec's split heads (``modality_logits``) are kept; :meth:`modality_metrics` scores both with the
  scorer of the fused output, for the ``eval`` record's ``<metric>_m1``, ``_m2``, ``_head_m1``, ``_head_m2``.

At the criterion of a training step (a global module forward hook on ``spec.criterion``) the probe
keeps the loss and computes OGM-GE's decoupled ratio from the spec's per-modality logits; before
each optimizer step of the model's optimizer it stacks the step's values **on the device**; they are
read back once per epoch (at the flush), never per step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.nn.modules.module import register_module_forward_hook
from torch.optim.optimizer import register_optimizer_step_pre_hook

from simam2.core import GradientModulator, decoupled_scores, ogm_coefficients

from simam2.core.distributed import is_distributed

from .ablation import MeanAblation
from .config import Modulation
from .context import AdapterError
from .spec import Spec
from .steps import StepBuffer, modulator_for, zeta_record

if TYPE_CHECKING:
    from .context import RunContext

EPOCH_SOURCES = ("train_calls", "evaluations", "explicit")


def _mean_over_ranks(loss: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """The step's loss as the mean over ranks: under DDP each rank holds the mean over its own batch,
    and with equal per-rank batches (DistributedSampler) their mean is the mean over the union, whose
    gradient DDP's averaged gradients are. One all-reduce of a scalar, on the device, no host read."""
    import torch.distributed as dist

    total = loss.detach().clone() if loss is not None else torch.full((), float("nan"), device=device)
    dist.all_reduce(total)
    return total / dist.get_world_size()


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
        self._steps: StepBuffer | None = None  # made with the model, on its device
        self._last_zeta: torch.Tensor | None = None
        self._bad_loss: torch.Tensor | None = None  # on the device: a step's loss was NaN or infinite
        self._optimizers: dict[int, bool] = {}  # id(optimizer) -> holds this model's parameters
        self._started = False
        self._ended = False
        #: mean ablation at the fusion input (None: per-modality evaluation off, or no head declared)
        self.ablation: MeanAblation | None = None
        self._training = False
        self._head_logits: tuple[list, list] = ([], [])
        self._ablation_said: set[str] = set()
        self._has_head = type(self.spec).head is not Spec.head
        self._in_head = False
        self._eval_model = None

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
        if config.per_modality:
            self.ablation = MeanAblation(preserve=[model])
            self._eval_model = model
        decoupling_free = Modulation.of(config).decoupling_free
        fusion = self.spec.fusion(model) if decoupling_free else None
        if decoupling_free and fusion is None:
            raise AdapterError(f"{self.spec.name}: decoupling-free modulation reads ζ from a SimAM² fusion, "
                               "and this model has none")
        self.modulator = modulator_for(config, lambda: self.spec.groups(model), fusion, lambda: self.epoch,
                                       upstream_modulates=self.spec.own_ogm_ge)
        if self.modulator is not None:
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
            config=run.config.plain(), upstream_options=spec.upstream_options(run, model) if model is not None else {},
            **run.start_extra)

    def finish(self) -> None:
        """Flush what is pending (the run is leaving its block)."""
        self.flush_steps()

    def refuse(self) -> None:
        """The run was refused before its script started: it writes no records at all."""
        if not self._started:
            self._ended = True

    def end(self, status: str, error: str | None) -> None:
        """The ``end`` record (a run that failed before building its model gets a ``start`` first)."""
        if self._ended:
            return
        self._ended = True
        self._write_start(self.model)
        self.run.recorder.end(status, error)

    # -- epochs ----------------------------------------------------------------------------------

    def on_mode(self, training: bool) -> None:
        if self.ablation is not None and training != self._training:
            # the mean of the training between two evaluations: an upstream that calls train()
            # before every batch (FOP) still starts one accumulation per epoch
            self.ablation.start_training() if training else self.ablation.end_training()
        self._training = training
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
        if self.ablation is not None:
            self.ablation.observe_training(x1, x2)

    # -- evaluation forwards: each modality alone ------------------------------------------------

    def _head(self, x1: torch.Tensor, x2: torch.Tensor):
        self._in_head = True  # the head may run the layer that reports its inputs: no re-entry
        try:
            return self.spec.head(self._eval_model, x1, x2)
        finally:
            self._in_head = False

    @torch.no_grad()
    def on_eval_fusion_inputs(self, x1: torch.Tensor, x2: torch.Tensor, model=None) -> None:
        """The two streams entering the fusion in an evaluation forward, modality 1 first, called
        after the fused output was computed (which nothing here changes). ``model``: the model
        that evaluates, where it is not the run's (a script that tests a checkpoint it unpickles)."""
        if self.ablation is None or self._in_head:
            return
        if model is not None:
            self.set_eval_model(model)
        model = self._eval_model
        if model is None:
            return
        if self._has_head:
            self.ablation.evaluate(self._head, x1, x2)
        split = self.spec.modality_logits(model, x1, x2)
        if split is not None:
            self._head_logits[0].append(split[0].detach())
            self._head_logits[1].append(split[1].detach())

    def set_eval_model(self, model) -> None:
        """The model whose evaluation forwards follow, where it is not the run's (a script that tests
        a checkpoint it unpickles): the per-modality head runs on it."""
        if self.ablation is not None and model is not self._eval_model:
            self._eval_model = model
            self.ablation.preserve = [model]

    def modality_metrics(self, score) -> dict:
        """The pass's per-modality metrics: ``score(outputs)`` (the scorer of the fused outputs,
        returning ``{metric: value}``) of each modality alone (``<metric>_m1``, ``_m2``, and
        ``ablation_mean``) and of the spec's split heads (``_head_m1``, ``_head_m2``); empty when
        per-modality evaluation is off. Resets for the next pass."""
        if self.ablation is None:
            return {}
        fields: dict = {}
        if self._has_head:
            alone = self.ablation.take(self._head)
            if alone.why is None:
                for k, out in (("_m1", alone.m1), ("_m2", alone.m2)):
                    fields.update({f"{m}{k}": v for m, v in score(out).items()})
                fields["ablation_mean"] = alone.source
            elif alone.why not in self._ablation_said:
                self._ablation_said.add(alone.why)
                self.run.recorder.write("note", what="per_modality_skipped", why=alone.why)
        heads, self._head_logits = self._head_logits, ([], [])
        if heads[0]:
            for k, outs in (("_head_m1", heads[0]), ("_head_m2", heads[1])):
                fields.update({f"{m}{k}": v for m, v in score(torch.cat(outs)).items()})
        return fields

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
        if self._streams is None or labels.shape != self._streams[0].shape[:-1]:
            return  # no fusion inputs this step, or a criterion call on other samples than they hold
        split = self.spec.modality_logits(self.model, *self._streams)
        if split is None:
            return
        labels = labels.reshape(-1)
        l1, l2 = (t.reshape(labels.shape[0], -1) for t in split)
        if self.modulator is not None and self.modulator.ratio == "decoupled":
            self._rho_decoupled = self.modulator.observe_logits(l1, l2, labels)
        else:
            scores = decoupled_scores(l1, l2, labels)
            if is_distributed():  # over the union of the ranks' batches, as the modulator's own
                import torch.distributed as dist

                dist.all_reduce(scores)
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
        if self._steps is None:
            self._steps = StepBuffer(next(self.model.parameters()).device)
        sums = self.spec.zeta_sums(self.model)
        rho_df = zeta_mean = None
        if sums is not None:
            rho_df, zeta_mean = sums[0] / sums[1], sums[0] / (sums[0] + sums[1])
        fusion = self.spec.fusion(self.model)
        r = fusion.r if fusion is not None and getattr(fusion, "r", None) is not None else None
        k1 = k2 = None
        m = self.modulator
        config = self.run.config
        if m is not None and m.last.get("applied"):
            k1, k2 = m.last["k1"], m.last["k2"]
        elif (self.spec.own_ogm_ge and Modulation.of(config).decoupled and self._rho_decoupled is not None
              and config.modulation_start <= self.epoch <= config.modulation_end):
            k1, k2 = ogm_coefficients(self._rho_decoupled, config.alpha)  # the upstream's own rule, for the record
        loss = self._loss
        if is_distributed():
            loss = _mean_over_ranks(loss, self._steps.device)
        self._steps.add(self.epoch, loss=loss, rho_df=rho_df, rho_decoupled=self._rho_decoupled, k1=k1, k2=k2,
                        r=r, zeta_mean=zeta_mean)
        zeta = self.spec.zeta(self.model)
        if zeta is not None:
            self._last_zeta = zeta.detach()
        self._streams = self._loss = self._rho_decoupled = None

    def flush_steps(self) -> None:
        """Write the buffered steps: the one read-back from the device per epoch."""
        if not self._steps:
            return
        if self._bad_loss is not None and bool(self._bad_loss):
            self.run.recorder.nonfinite = True
        epoch = self._steps.flush(self.run.recorder.write)
        if self._last_zeta is not None:
            zeta_record(self.run.recorder.write, epoch, self._last_zeta)
            self._last_zeta = None

    # -- evaluations -----------------------------------------------------------------------------

    def record_eval(self, split: str, n: int, **metrics) -> None:
        """One evaluation's metrics (the upstream's names; per-modality ones suffixed ``_m1``/``_m2``)."""
        self.flush_steps()
        why = self.spec.no_mean_ablation
        if self.ablation is not None and not self._has_head and why and why not in self._ablation_said:
            self._ablation_said.add(why)  # asked for (per-modality on) and impossible: say so, once
            self.run.recorder.write("note", what="per_modality_skipped", why=why)
        self.run.recorder.write("eval", epoch=self.epoch, evaluation=self.evaluations, split=split, n=n, **metrics)
        self.evaluations += 1
        if self.spec.epoch_source == "evaluations":
            self.set_epoch(self.evaluations)
