"""The study's models: small encoders of our own and OGM-GE's four fusion heads, vanilla or SimAM².

Every model is ``encoder_1``, ``encoder_2`` (each to a ``D``-dim embedding) and a head that fuses the
two embeddings — the fusion input, where per-modality accuracy is measured by mean ablation
(SPEC §8). The heads follow OGM-GE's ``fusion_modules`` and the OGM-GE adapter (SPEC §4):

    fusion   vanilla                         SimAM² (core module)                       split logits (SPEC §6)
    sum      fc_x(a) + fc_y(b)               Summation(fc_x(a), fc_y(b))                fc_x(a), fc_y(b)
    concat   fc_out([a ; b])                 fc_out(ConcatFusion(a, b))                 halves of fc_out, bias / 2
    film     fc_out(γ ⊙ a + β), γ,β = fc(b)   fc_out(FiLMFusion(γ, a, β))                fc_out(γ ⊙ a), fc_out(β), bias / 2
    late     fc_out((a + b) / 2)             fc_out(LateFusion(a, b))                   fc_out(a / 2), fc_out(b / 2), bias / 2

``a`` is modality 1, ``b`` modality 2. In FiLM, modality 2 makes γ and β and modality 1 is the filmed
feature, so that X1 = γ ⊙ F carries modality 1 in every head and ζ is always modality 1's weight.

:class:`Ablated` (diagnosis only, never a default) swaps Eq. 7 for a reduced energy: ``nodeg``
drops the degradation term ((1 − r) e_U, i.e. r = 1), ``simam_u`` keeps e_U alone (plain SimAM on U),
``none`` drops the attention and keeps the superposition U of Eq. 4 (the ζ-weighted sum: with ζ = 0.5
half the vanilla sum, which tells the attention's effect from the halving's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from simam2.core import ConcatFusion, FiLMFusion, LateFusion, Summation, importance
from simam2.core.energy import resolve_neuron_dims
from simam2.core.fusion import U_READINGS, fused_energy, superpose

FUSIONS = ("sum", "concat", "film", "late")
ENERGIES = ("full", "nodeg", "simam_u", "none")
EMBED = 64


@dataclass(frozen=True)
class Attention:
    """How a head fuses: vanilla (``simam2=False``) or SimAM² with ζ, λ, s and Eq. 7's energy."""

    simam2: bool = False
    zeta: str = "fixed"
    lam: float = 1e-6
    s: float = 2.5
    energy: str = "full"
    u: str = "eq4"
    #: vanilla only: scale the fused output by the eq4 SimAM² row's mean gain (SPEC §9's
    #: temperature control: the scale change alone, without any attention)
    temperature: bool = False

    def __post_init__(self):
        if self.energy not in ENERGIES:
            raise ValueError(f"energy must be one of {ENERGIES}, got {self.energy!r}")
        if self.energy != "full" and not self.simam2:
            raise ValueError("an ablated energy needs SimAM²")
        if self.u not in U_READINGS:
            raise ValueError(f"u must be one of {U_READINGS}, got {self.u!r}")
        if self.temperature and self.simam2:
            raise ValueError("the temperature control is the vanilla fusion scaled: it has no SimAM²")


class Ablated:
    """Mixin over a core SimAM² form: Eq. 8 with a reduced Eq. 7 (diagnosis ablations).

    ``nodeg``: ``E = e_U − ζ² e_1 − (1 − ζ)² e_2`` (Eq. 7 with r = 1: no ``(1 − r) e_U``);
    ``simam_u``: ``E = e_U`` (SimAM on the superposition U alone); ``none``: ``U`` itself, no
    attention (Eq. 4 alone). Runs through the core's reference
    functions (:func:`superpose`, :func:`fused_energy`, :func:`importance`); ζ, r and the
    ``var_max`` / ``weight_sums`` statistics are the core's, so modulation reads them as usual.
    """

    energy = "full"

    def fuse(self, xs, weights=None):
        if self.energy == "full":
            return super().fuse(xs, weights)
        self._check(xs, weights)
        dims = resolve_neuron_dims(xs[0], self.neuron_dims)
        if weights is None:
            weights = self.compute_weights(xs)
        r = self._update(weights)
        u = superpose(xs, weights)
        self.weights, self.r = weights.detach(), r
        v = u * self.vanilla_gain if self.vanilla_gain != 1.0 else u  # the reading of U (SPEC §2)
        if self.energy == "none":
            return v
        if self.energy == "nodeg":
            e = fused_energy(xs, weights, u, torch.ones((), dtype=u.dtype), self.lam, dims)
        else:
            e = importance(u, self.lam, dims)
        return torch.sigmoid(e) * v


def _form(cls, att: Attention, *args):
    if att.energy == "full":
        return cls(*args, zeta_mode=att.zeta, lam=att.lam, s=att.s, u=att.u)
    ablated = type(f"Ablated{cls.__name__}", (Ablated, cls), {"energy": att.energy})
    return ablated(*args, zeta_mode=att.zeta, lam=att.lam, s=att.s, u=att.u)


_GAINS: dict = {}


def eq4_gain(fusion: str, classes: int, dim: int = EMBED) -> float:
    """The mean factor by which the ``u="eq4"`` SimAM² form scales the vanilla fusion output,
    measured once on a fixed standard-normal batch (SPEC §2: sigmoid(E*) has a mean near 0.63 whatever
    the data, times ½ where the vanilla adds its two terms): the temperature control's constant."""
    key = (fusion, classes, dim)
    if key not in _GAINS:
        gen = torch.Generator().manual_seed(0)
        width = classes if fusion == "sum" else dim
        a, b = torch.randn(2, 256, width, generator=gen, dtype=torch.float64)
        if fusion == "concat":
            out, vanilla = ConcatFusion(width, width).double()(a, b), torch.cat([a, b], 1)
        elif fusion == "late":
            out, vanilla = LateFusion(width).double()(a, b), (a + b) / 2
        else:  # sum, and FiLM whose X1 = γ ⊙ F and X2 = β add the same way
            out, vanilla = Summation(width).double()(a, b), a + b
        _GAINS[key] = float((out / vanilla).mean())
    return _GAINS[key]


def mlp(dim: int) -> nn.Module:
    """Encoder for a feature vector (an mfeat view): two hidden layers to ``EMBED``."""
    return nn.Sequential(nn.Linear(dim, 128), nn.ReLU(), nn.Linear(128, EMBED), nn.ReLU())


def cnn() -> nn.Module:
    """Encoder for a (1, H, W) image or log-mel spectrogram: three 3×3 conv blocks, global pooling."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, EMBED, 3, padding=1), nn.BatchNorm2d(EMBED), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten())


def encoder_for(sample: torch.Tensor) -> nn.Module:
    """An MLP for a (B, d) input, a CNN for a (B, 1, H, W) one."""
    return mlp(sample.shape[1]) if sample.dim() == 2 else cnn()


class Head(nn.Module):
    """One of OGM-GE's fusion heads (table above), vanilla or SimAM²; ``.attention`` is the core
    module (None for vanilla)."""

    def __init__(self, fusion: str, classes: int, att: Attention, dim: int = EMBED):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.fusion, self.att = fusion, att
        self.attention = None
        self.tau = eq4_gain(fusion, classes, dim) if att.temperature else None
        if fusion == "sum":
            self.fc_x, self.fc_y = nn.Linear(dim, classes), nn.Linear(dim, classes)
            if att.simam2:
                self.attention = _form(Summation, att, classes)
        elif fusion == "concat":
            self.fc_out = nn.Linear(2 * dim, classes)
            if att.simam2:
                self.attention = _form(ConcatFusion, att, dim, dim)
        elif fusion == "film":
            self.fc = nn.Linear(dim, 2 * dim)
            self.fc_out = nn.Linear(dim, classes)
            if att.simam2:
                self.attention = _form(FiLMFusion, att, dim)
        else:
            self.fc_out = nn.Linear(dim, classes)
            if att.simam2:
                self.attention = _form(LateFusion, att, dim)

    def film_terms(self, a, b):
        gamma, beta = self.fc(b).chunk(2, dim=1)
        return gamma, a, beta

    def _vanilla(self, fused: torch.Tensor) -> torch.Tensor:
        return fused * self.tau if self.tau is not None else fused

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        f, att = self.fusion, self.attention
        if f == "sum":
            x1, x2 = self.fc_x(a), self.fc_y(b)
            return att(x1, x2) if att is not None else self._vanilla(x1 + x2)
        if f == "concat":
            return self.fc_out(att(a, b) if att is not None else self._vanilla(torch.cat([a, b], 1)))
        if f == "film":
            gamma, feat, beta = self.film_terms(a, b)
            return self.fc_out(att(gamma, feat, beta) if att is not None else self._vanilla(gamma * feat + beta))
        return self.fc_out(att(a, b) if att is not None else self._vanilla((a + b) / 2))

    def split_logits(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-modality logits of OGM-GE's decoupled ratio (SPEC §6), as the OGM-GE adapter splits."""
        f = self.fusion
        if f == "sum":
            return self.fc_x(a), self.fc_y(b)
        w, bias = self.fc_out.weight, self.fc_out.bias / 2
        if f == "concat":
            half = w.shape[1] // 2
            return nn.functional.linear(a, w[:, :half], bias), nn.functional.linear(b, w[:, half:], bias)
        if f == "film":
            gamma, feat, beta = self.film_terms(a, b)
            return nn.functional.linear(gamma * feat, w, bias), nn.functional.linear(beta, w, bias)
        return nn.functional.linear(a / 2, w, bias), nn.functional.linear(b / 2, w, bias)


class Model(nn.Module):
    """Two encoders and a fusion head: ``forward(x1, x2) -> (emb1, emb2, logits)``."""

    def __init__(self, enc1: nn.Module, enc2: nn.Module, head: Head):
        super().__init__()
        self.enc1, self.enc2, self.head = enc1, enc2, head

    def forward(self, x1, x2):
        a, b = self.enc1(x1), self.enc2(x2)
        return a, b, self.head(a, b)


class Alone(nn.Module):
    """One encoder and a linear classifier: the encoder trained alone, the probes' reference."""

    def __init__(self, enc: nn.Module, classes: int, dim: int = EMBED):
        super().__init__()
        self.enc, self.fc = enc, nn.Linear(dim, classes)

    def forward(self, x):
        return self.fc(self.enc(x))
