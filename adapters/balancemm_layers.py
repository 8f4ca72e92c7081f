"""SimAM² inside BalanceMM's own fusion modules, and a decoupling-free trainer beside its trainers.

Fusion (SPEC §4): subclasses of ``balancemm/models/fusion_arch.py``'s classes that keep the
upstream's ``__init__`` (its layers, their names and their initialisation draws) and add one core
fusion module as ``self.simam2``:

- concat (``ConcatFusion_N``, what ``fusion: concat`` builds): X1 = [a ; 0], X2 = [0 ; v] (the padded
  form), then the upstream's ``fc_out``;
- sum (``SumFusion``): X1, X2 = fc_x(a), fc_y(v), fused instead of added;
- FiLM (``FiLM``, Eq. 9–10): γ, β = split(fc(film)), X1 = γ ⊙ F, X2 = β, then ``fc_out``.

Gated fusion has no two summed terms and is left as it is.

Trainer (SPEC §5): :func:`decoupling_free_trainer` subclasses their ``OGMTrainer``; its training
step is theirs up to ``loss.backward()``, then Eq. 11's ratio from the fusion's ζ drives OGM-GE's
coefficient rule through :class:`~simam2.core.GradientModulator`, on the parameter groups their OGM
trainer modulates (every non-1-D parameter whose name contains the modality).
"""

from __future__ import annotations

import contextlib
import types
from typing import Iterator

import torch
import torch.nn as nn

from simam2.core import ConcatFusion as CoreConcat
from simam2.core import FiLMFusion as CoreFiLM
from simam2.core import GradientModulator, Summation

#: ``trainer --name`` of the decoupling-free trainer. BalanceMM reads a trainer's settings from the
#: ``trainer_config.yaml`` block named by what precedes "Trainer" in its name: this one runs with
#: OGM's block (alpha, method, modulation_starts, modulation_ends), so no upstream file is edited.
DF_TRAINER = "OGMTrainerDF"


def simam2_fusion_classes(fusion_arch, zeta: str = "fixed", lam: float = 1e-6, s: float = 2.5) -> dict[str, type]:
    """SimAM² subclasses of ``fusion_arch``'s ``ConcatFusion_N``, ``SumFusion`` and ``FiLM``, by the
    names ``BaseClassifierModel`` looks them up under."""
    if zeta not in ("fixed", "learnable"):
        raise ValueError(f"BalanceMM has no gate of its own to give ζ: zeta must be 'fixed' or 'learnable', got {zeta!r}")
    opts = dict(zeta=zeta, lam=lam, s=s)

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
    """A subclass of their ``OGMTrainer`` named :data:`DF_TRAINER` that modulates by Eq. 11.

    ``method: OGM_GE`` adds OGM-GE's Gaussian noise (``mode="ogm_ge"``), ``OGM`` does not; α and
    the epoch window are their config's. The fusion must be SimAM² with a learnable ζ (with a
    fixed ζ, ρ = 1 at every step: GradientModulator refuses it with one line).
    """

    class OGMTrainerDF(ogm_trainer):
        modulator: GradientModulator | None = None
        #: one entry per training step: epoch, ρ1 (Eq. 11), k1, k2 and whether the window applied them
        history: list[dict] = []

        def _modulator(self, model) -> GradientModulator:
            if self.modulator is None:
                fusion = model.fusion_module
                if not hasattr(fusion, "simam2"):
                    raise ValueError(f"{DF_TRAINER} needs SimAM² fusion (simam2 run balancemm --simam2 --zeta learnable)")
                modalities = list(model.modalitys)
                first = x1_modality(fusion, modalities)
                order = [first] + [m for m in modalities if m != first]
                groups = ogm_groups(model, modalities)
                self.modulator = GradientModulator(
                    {m: groups[m] for m in order}, fusion=fusion.simam2, alpha=self.alpha,
                    mode="ogm_ge" if self.method == "OGM_GE" else "ogm",
                    start_epoch=self.modulation_starts, end_epoch=self.modulation_ends,
                    epoch_fn=lambda: self.current_epoch, ratio="zeta")
            return self.modulator

        def training_step(self, model, batch, batch_idx):
            label = batch["label"].to(model.device)
            model(batch)
            loss = nn.CrossEntropyLoss()(model.unimodal_result["output"], label)
            loss.backward()
            modulator = self._modulator(model)
            applied = modulator.apply()
            last = modulator.last
            self.history.append({"epoch": self.current_epoch, "applied": applied, **{
                k: float(last[k]) for k in ("rho_zeta", "k1", "k2") if k in last}})
            return loss

    OGMTrainerDF.__name__ = OGMTrainerDF.__qualname__ = DF_TRAINER
    return OGMTrainerDF


@contextlib.contextmanager
def installed(simam2: bool = False, zeta: str = "fixed", lam: float = 1e-6, s: float = 2.5) -> Iterator[dict]:
    """Within the block, an importable ``balancemm`` builds SimAM² fusion modules (when ``simam2``)
    and finds :data:`DF_TRAINER` among its trainers; everything is restored on exit.

    The fusion classes are swapped where ``BaseClassifierModel.__init__`` looks them up (the names
    in ``balancemm.models.avclassify_model``); the trainer is a module appended to
    ``balancemm.trainer._trainer_modules``, which ``create_trainer`` searches by name. Yields
    ``{"trainer": the DF trainer class}``.
    """
    import balancemm.models.avclassify_model as avclassify
    import balancemm.models.fusion_arch as fusion_arch
    import balancemm.trainer as trainers
    from balancemm.trainer.OGM_trainer import OGMTrainer

    saved = {}
    if simam2:
        for name, cls in simam2_fusion_classes(fusion_arch, zeta, lam, s).items():
            saved[name] = getattr(avclassify, name)
            setattr(avclassify, name, cls)
    df = decoupling_free_trainer(OGMTrainer)
    module = types.ModuleType("simam2_balancemm_trainers")
    setattr(module, DF_TRAINER, df)
    trainers._trainer_modules.append(module)
    try:
        yield {"trainer": df}
    finally:
        trainers._trainer_modules.remove(module)
        for name, cls in saved.items():
            setattr(avclassify, name, cls)
