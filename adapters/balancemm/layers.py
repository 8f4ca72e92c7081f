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
step is theirs up to ``loss.backward()``; then, at the optimizer's step, Eq. 11's ratio from the
fusion's ζ drives OGM-GE's coefficient rule through :class:`~simam2.core.GradientModulator` (the
run's probe attaches it), on the parameter groups their OGM trainer modulates (every non-1-D
parameter whose name contains the modality).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from simam2.core import ConcatFusion as CoreConcat
from simam2.core import FiLMFusion as CoreFiLM
from simam2.core import Summation

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
