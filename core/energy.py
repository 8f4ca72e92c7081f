"""Neuron importance: the inverse of SimAM's minimal energy (paper Eq. 1–3, SPEC §1).

For one channel with ``M`` neurons, Eq. 1 asks how well a linear map ``w·x + b`` can tell a target
neuron ``t`` (mapped to +1) from the other ``M − 1`` neurons (mapped to −1). Its minimum, Eq. 3, is
small for a neuron that stands out from its neighbours; the importance used throughout SimAM² is the
inverse ``1 / e*_t``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .checks import check_floating, check_nonnegative

#: Floor for every denominator, so that a constant input (zero variance, λ = 0) stays finite.
EPS = 1e-12


def default_neuron_dims(ndim: int) -> tuple[int, ...]:
    """SPEC §1: the dims that hold one channel's neurons, for an input of ``ndim`` dims.

    (B, C, *S) with S non-empty: the dims of S (SimAM's convention). (B, C): the C dim.
    """
    if ndim < 2:
        raise ValueError(f"expected an input of shape (B, C, ...), got {ndim} dim(s)")
    return tuple(range(2, ndim)) if ndim > 2 else (1,)


def resolve_neuron_dims(x: torch.Tensor, neuron_dims: Sequence[int] | int | None) -> tuple[int, ...]:
    """Normalise ``neuron_dims`` for ``x`` (None: the SPEC §1 default; negatives allowed)."""
    if neuron_dims is None:
        return default_neuron_dims(x.dim())
    if isinstance(neuron_dims, int):
        neuron_dims = (neuron_dims,)
    dims = []
    for d in neuron_dims:
        if not -x.dim() <= d < x.dim():
            raise ValueError(f"neuron dim {d} is out of range for an input of shape {tuple(x.shape)}")
        dims.append(d % x.dim())
    if len(set(dims)) != len(dims) or not dims:
        raise ValueError(f"neuron_dims must be distinct and non-empty, got {tuple(neuron_dims)}")
    return tuple(sorted(dims))


def neuron_count(x: torch.Tensor, dims: Sequence[int]) -> int:
    """M: how many neurons one channel holds; SPEC §1 makes M < 2 an error."""
    m = 1
    for d in dims:
        m *= x.shape[d]
    if m < 2:
        raise ValueError(
            f"importance needs at least 2 neurons per channel, got M={m} over dims {tuple(dims)} "
            f"of an input of shape {tuple(x.shape)}; pass neuron_dims that hold several neurons"
        )
    return m


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Statistics run in at least float32 (SPEC §1): bf16/fp16 variances underflow or overflow."""
    return torch.promote_types(dtype, torch.float32)


def power_of_two_scale(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1/s', 1/s'²)`` for a power of two ``s'`` within a factor 2 of each ``s`` (> 0, else 1).

    Importance is invariant under ``x → x / s`` once λ and the EPS floor are scaled by ``1/s²`` too.
    A power of two makes ``x / s'`` exact (no rounding), so that centring after scaling rounds as
    ``x − μ`` does. The exponent is kept within ±125, so that ``1/s'`` and ``1/s'²`` stay finite
    in float32 (the square is capped at the dtype's largest value: ``λ/s²`` with λ = 0 is then 0,
    never ``0 · inf``).
    """
    # floor(log2) and exp2 rather than frexp/ldexp: inductor vectorises them (frexp would make the
    # loop it is fused into scalar); exp2 of an integer is exact
    e = torch.where(s > 0, s, torch.ones_like(s)).log2().floor_().clamp_(-125, 125)
    inv = e.neg_().exp2_()
    return inv, inv.square().clamp_max(torch.finfo(inv.dtype).max)


def channel_scale(x: torch.Tensor, dims: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1/s, 1/s²)`` per channel, ``s`` a power of two near ``mean |x|`` over the neuron dims.

    (:class:`~simam2.core.fused.PairEnergyAttention` takes ``s`` from the centred input instead;
    either is exact, the choice only moves rounding.)

    The statistics then run on ``x / s``, whose squares neither overflow (float32 ``(x − μ)²`` is
    inf from ``|x − μ|`` ≈ 2e19 on) nor underflow. ``s`` is a constant of the computation (the
    function does not depend on it), hence without gradient. See :func:`power_of_two_scale`.
    """
    return power_of_two_scale(x.detach().abs().mean(dims, keepdim=True))


def importance(
    x: torch.Tensor, lam=0.0, neuron_dims: Sequence[int] | int | None = None
) -> torch.Tensor:
    """``1 / e*_t`` for every neuron of ``x``, SimAM's fast form (Eq. 3 with statistics over all M).

    ``d = (x − μ)²``, ``var = Σ d / (M − 1)``, ``imp = d / (4 max(var + λ, EPS)) + 0.5``. Returns a
    tensor of ``x``'s shape and dtype; a neuron far from its channel's mean gets a high value.
    ``lam`` is a number, or a tensor that broadcasts against the per-channel statistics (one λ per
    slice). Computed on ``x / s`` with λ and EPS scaled alike (:func:`channel_scale`): the same
    numbers, and finite for any input whose per-channel sum is finite (|x| up to about 3e38 / M in
    float32) where ``(x − μ)²`` itself would overflow.
    """
    check_floating(x, "importance's input")  # an integer x came back as zeros, truncated
    if not torch.is_tensor(lam):
        check_nonnegative("lam (λ)", lam)
    dims = resolve_neuron_dims(x, neuron_dims)
    m = neuron_count(x, dims)
    xf = x.to(compute_dtype(x.dtype))
    inv, inv2 = channel_scale(xf, dims)
    # (x − μ) / s with μ taken before scaling: the same numbers (s is a power of two), and both
    # statistics come from one pass over x (inductor fuses the two reductions under torch.compile)
    d = ((xf - xf.mean(dim=dims, keepdim=True)) * inv).square()
    v = d.sum(dim=dims, keepdim=True) / (m - 1)
    if not (isinstance(lam, (int, float)) and lam == 0):
        v = v + lam * inv2
    # the reciprocal runs on the small per-channel tensor, so the full-size work is one multiply
    scale = torch.maximum(v, EPS * inv2).reciprocal().mul(0.25)
    return (d * scale + 0.5).to(x.dtype)


def exact_minimal_energy(x: torch.Tensor, lam: float = 0.0, neuron_dims=None) -> torch.Tensor:
    """Eq. 3 exactly: ``e*_t = 4 (σ̂² + λ) / ((t − μ̂)² + 2σ̂² + 2λ)``.

    μ̂ and σ̂² are the mean and population variance of the *other* M − 1 neurons of t's channel. This
    is the true minimum of Eq. 1 over (w_t, b_t) (a test checks it against numerical optimisation);
    :func:`importance` is SimAM's cheaper form, which takes both statistics over all M neurons.
    """
    dims = resolve_neuron_dims(x, neuron_dims)
    m = neuron_count(x, dims)
    xf = x.to(compute_dtype(x.dtype))
    total = xf.sum(dim=dims, keepdim=True)
    total_sq = xf.square().sum(dim=dims, keepdim=True)
    mu = (total - xf) / (m - 1)
    var = ((total_sq - xf.square()) / (m - 1) - mu.square()).clamp_min(0)
    return 4 * (var + lam) / ((xf - mu).square() + 2 * var + 2 * lam).clamp_min(EPS)


def energy_eq1(w: float, b: float, t: float, others: Sequence[float], lam: float) -> float:
    """Eq. 1 for one target neuron: ``(1/(M−1)) Σ (−1 − (w x_i + b))² + (1 − (w t + b))² + λ w²``."""
    others = list(others)
    inner = sum((-1.0 - (w * xi + b)) ** 2 for xi in others) / len(others)
    return inner + (1.0 - (w * t + b)) ** 2 + lam * w * w
