"""SimAM² inside BalanceMM's own fusion modules, a decoupling-free trainer beside its trainers, and the
replacements of ``balancemm.train``'s functions that the spec declares (:mod:`.spec` says what each
does and why).

Fusion (SPEC §4): subclasses of ``balancemm/models/fusion_arch.py``'s classes that keep the
upstream's ``__init__`` (its layers, their names and their initialisation draws) and add one core
fusion module as ``self.simam2``:

- concat (``ConcatFusion_N``, what ``fusion: concat`` builds): X1 = [a ; 0], X2 = [0 ; v] (the padded
  form), then the upstream's ``fc_out``;
- sum (``SumFusion``): X1, X2 = fc_x(a), fc_y(v), fused instead of added;
- FiLM (``FiLM``, Eq. 9–10): γ, β = split(fc(film)), X1 = γ ⊙ F, X2 = β, then ``fc_out``.

Gated fusion has no two summed terms and is left as it is.

Trainer (SPEC §5): :func:`decoupling_free_trainer` subclasses their ``OGMTrainer``; its training
step is theirs up to ``loss.backward()``; then, at the optimizer's step, Eq. 11's ratio from the
fusion's ζ drives OGM-GE's coefficient rule through :class:`~simam2.core.GradientModulator` (the
run's probe attaches it), on the parameter groups their OGM trainer modulates (every non-1-D
parameter whose name contains the modality).
"""

from __future__ import annotations

import contextlib
import shutil
import types
from pathlib import Path

import torch
import torch.nn as nn

from simam2.core import ConcatFusion as CoreConcat
from simam2.core import FiLMFusion as CoreFiLM
from simam2.core import Summation

from ..machinery.config import Modulation
from .seam import Overrides

#: ``trainer --name`` of the decoupling-free trainer. BalanceMM reads a trainer's settings from the
#: ``trainer_config.yaml`` block named by what precedes "Trainer" in its name: this one runs with
#: OGM's block (alpha, method, modulation_starts, modulation_ends), so no upstream file is edited.
DF_TRAINER = "OGMTrainerDF"


def simam2_fusion_classes(fusion_arch, zeta_mode: str = "fixed", lam: float = 1e-6, s: float = 2.5,
                          u: str = "eq4") -> dict[str, type]:
    """SimAM² subclasses of ``fusion_arch``'s ``ConcatFusion_N``, ``SumFusion`` and ``FiLM``, by the
    names ``BaseClassifierModel`` looks them up under."""
    if zeta_mode not in ("fixed", "learnable"):
        raise ValueError("BalanceMM has no gate of its own to give ζ: zeta_mode must be 'fixed' or 'learnable', "
                         f"got {zeta_mode!r}")
    opts = dict(zeta_mode=zeta_mode, lam=lam, s=s, u=u)

    class SimAM2ConcatFusion_N(fusion_arch.ConcatFusion_N):
        """Concatenation, padded: X1 = [a ; 0], X2 = [0 ; v]; fc_out reads the fused full-width vector."""

        def __init__(self, input_dim=3072, output_dim=100):
            super().__init__(input_dim, output_dim)
            self.simam2 = CoreConcat(input_dim // 2, input_dim - input_dim // 2, **opts)

        def forward(self, encoder_res):
            features = list(encoder_res.values())
            if len(features) != 2:
                raise ValueError(f"SimAM² fuses two modalities, got {list(encoder_res)}")
            return self.fc_out(self.simam2(*features))

    class SimAM2SumFusion(fusion_arch.SumFusion):
        """Summation: X1, X2 = fc_x(x), fc_y(y), fused by SimAM² instead of added."""

        def __init__(self, input_dim=512, output_dim=100):
            super().__init__(input_dim, output_dim)
            self.simam2 = Summation(output_dim, **opts)

        def forward(self, x, y):
            return x, y, self.simam2(self.fc_x(x), self.fc_y(y))

    class SimAM2FiLM(fusion_arch.FiLM):
        """FiLM (Eq. 9–10): X1 = γ ⊙ F, X2 = β, fused by SimAM² (ζ γF + (1 − ζ) β, then the attention); then fc_out."""

        def __init__(self, input_dim=512, dim=512, output_dim=100, x_film=True):
            super().__init__(input_dim, dim, output_dim, x_film)
            self.simam2 = CoreFiLM(dim, **opts)

        def forward(self, x, y):
            film, to_be_film = (x, y) if self.x_film else (y, x)
            gamma, beta = torch.split(self.fc(film), self.dim, 1)
            return x, y, self.fc_out(self.simam2(gamma, to_be_film, beta))

    return {"ConcatFusion_N": SimAM2ConcatFusion_N, "SumFusion": SimAM2SumFusion, "FiLM": SimAM2FiLM}


def x1_modality(fusion: nn.Module, modalities) -> str:
    """The modality whose weight is ζ (X1's): the first for concat and sum; for FiLM X1 = γ ⊙ F is
    the filmed stream, the second modality when γ comes from the first (``x_film``)."""
    first, second = list(modalities)
    if isinstance(getattr(fusion, "simam2", None), CoreFiLM) and getattr(fusion, "x_film", True):
        return second
    return first


def ogm_groups(model: nn.Module, modalities) -> dict[str, list[nn.Parameter]]:
    """The parameters their OGMTrainer modulates, per modality: every parameter whose name contains
    the modality and whose gradient is not 1-D (``len(parms.grad.size()) != 1``)."""
    groups = {m: [] for m in modalities}
    for name, param in model.named_parameters():
        for m in modalities:
            if m in name and param.dim() != 1:
                groups[m].append(param)
    return groups


def decoupling_free_trainer(ogm_trainer: type) -> type:
    """Their ``OGMTrainer`` with its own modulation taken out, named :data:`DF_TRAINER`.

    The training loop, loss and everything else are theirs; the modulation is core's
    :class:`~simam2.core.GradientModulator` with Eq. 11's ratio, which the run's probe attaches to the
    optimizer's step on the same parameter groups (:func:`ogm_groups`), with OGM-GE's rule, α and
    window (``simam2 run balancemm --simam2 --zeta learnable --modulation df``).
    """

    class OGMTrainerDF(ogm_trainer):
        def training_step(self, model, batch, batch_idx):
            # OGMTrainer.training_step up to loss.backward(); its score ratio and coefficients are gone
            label = batch["label"].to(model.device)
            model(batch)
            loss = nn.CrossEntropyLoss()(model.unimodal_result["output"], label)
            loss.backward()
            return loss

    OGMTrainerDF.__name__ = OGMTrainerDF.__qualname__ = DF_TRAINER
    return OGMTrainerDF


# -- the run's replacements in balancemm.train (the spec declares them) -----------------------------

def train_and_test_with_overrides(run, original, options: dict, ogm_methods: dict):
    """``train_and_test`` that applies the run's :class:`~.seam.Overrides` (the trainer block's α and
    window from the run's modulation), seeds with ``--seed`` and removes the checkpoint unless kept."""
    config = run.config

    def train_and_test(args: dict):
        block = dict(options.pop("trainer", None) or {})
        modulation = Modulation.of(config)
        if modulation.on:
            block.update(alpha=config.alpha, modulation_starts=config.modulation_start,
                         modulation_ends=config.modulation_end)
            if modulation.decoupled:
                block["method"] = ogm_methods[modulation.name]
        out_dir = Path(run.cwd or ".").absolute()
        overrides = Overrides(out_dir=out_dir, trainer=block or None, **options)
        overrides.apply(args)
        if config.seed is not None:
            # __main__ seeded with its config's seed (42) just before; nothing random ran since,
            # so seeding again here is the same as running with this seed in its config
            from balancemm.utils.train_utils import set_seed

            args["seed"] = config.seed
            set_seed(config.seed)
        try:
            return original(args)
        finally:
            if not overrides.keep_checkpoint:
                shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)

    return train_and_test

def registering_create_model(run, original, state, modalities_of):
    """``create_model`` that registers the first model built with the run and hands the two modality
    features of each training forward to the probe."""
    def create_model(model_opt):
        model = original(model_opt)
        if state.model is None and hasattr(model, "fusion_module"):
            state.model = model
            run.register_model(model)
            first, second = modalities_of(model)

            def hand_features(module, args, output):
                if module.training and first in module.encoder_result and second in module.encoder_result:
                    run.probe.on_fusion_inputs(module.encoder_result[first], module.encoder_result[second])

            model.register_forward_hook(hand_features)
        return model

    return create_model

def following_create_trainer(run, original, state, modalities_of):
    """``create_trainer`` whose trainer tells the probe its epoch and records every full evaluation."""

    def create_trainer(*args, **kwargs):
        trainer = original(*args, **kwargs)
        train_loop, val_loop, fit = trainer.train_loop, trainer.val_loop, trainer.fit

        def train_loop_(*a, **k):
            run.probe.set_epoch(trainer.current_epoch)
            return train_loop(*a, **k)

        def val_loop_(model, val_loader, *a, **k):
            result = val_loop(model, val_loader, *a, **k)
            if not state.in_shapley and isinstance(result, tuple) and len(result) == 2:
                record_eval(run, state, val_loader, *result, modalities_of)
            return result

        def fit_(*a, **k):
            try:
                return fit(*a, **k)
            finally:
                state.split = "test"

        trainer.train_loop, trainer.val_loop, trainer.fit = train_loop_, val_loop_, fit_
        return trainer

    return create_trainer

def record_eval(run, state, loader, loss, metrics, modalities_of) -> None:
    """One full evaluation of theirs as an eval record: accuracy and macro-F1, fused and per head;
    the Shapley values with the test's."""
    model = state.model
    if model is None:
        return
    m1, m2 = modalities_of(model)
    values = {"acc": metrics["acc"]["output"], "f1": metrics["f1"]["output"]}
    for tag, m in (("m1", m1), ("m2", m2)):
        if m in metrics["acc"]:
            values[f"acc_head_{tag}"] = metrics["acc"][m]
            values[f"f1_head_{tag}"] = metrics["f1"][m]
    if state.split == "test" and state.shapley is not None:
        values["shapley_m1"] = state.shapley.get(m1)
        values["shapley_m2"] = state.shapley.get(m2)
    values["loss"] = loss
    run.probe.record_eval(state.split, _scored(loader), **{k: _scalar(v) for k, v in values.items() if v is not None})

def keeping_shapley(original, state):
    """``Calculate_Shapley`` that keeps its values and keeps its partial evaluations out of the records."""
    def calculate_shapley(*args, **kwargs):
        state.in_shapley = True
        try:
            result = original(*args, **kwargs)
        finally:
            state.in_shapley = False
        state.shapley = dict(result) if result is not None else None
        return result

    return calculate_shapley

def _scalar(value) -> float:
    return float(value)

def _scored(loader) -> int | None:
    """Samples a pass over ``loader`` scores (drop_last drops the partial batch)."""
    with contextlib.suppress(Exception):
        n, batch = len(loader.dataset), loader.batch_size
        return (n // batch) * batch if getattr(loader, "drop_last", False) else n
    return None

def closure_first(create_optimizer):
    """``create_optimizer`` whose optimizers evaluate a step's closure before ``step`` (and its hooks)."""
    import torch

    def create(*args, **kwargs):
        optimizer = create_optimizer(*args, **kwargs)
        step = optimizer.step

        def step_after_closure(self, closure=None):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            step()
            return loss

        # a bound method: the LR scheduler re-wraps optimizer.step through its __func__
        optimizer.step = types.MethodType(step_after_closure, optimizer)
        return optimizer

    return create
