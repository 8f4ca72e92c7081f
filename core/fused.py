"""Two-modality SimAM² attention (Eq. 4, 7, 8) as a single autograd node with a derived backward.

:func:`~simam2.core.fusion.superpose`, :func:`~simam2.core.fusion.fused_energy` and
:func:`~simam2.core.energy.importance` are the reference (SPEC §1–§2): written op by op, they make
autograd record some sixty nodes forward and a hundred backward, and each node costs a full pass
over the tensors plus framework overhead. :func:`fused_pair_attention` computes the same K = 2 output
in one :class:`torch.autograd.Function` whose backward is derived by hand (below), so that a forward
and backward take a few dozen raw passes and no per-node bookkeeping. Tests hold it equal to the
reference, forward and every gradient.

The algebra, per channel of ``M`` neurons (sums and means over the neuron dims), for an input ``y``
with ``c = y − mean(y)``, ``d = c²``, ``v = Σd / (M − 1) + λ`` and ``q = 1 / (4 max(v, EPS))``:

    imp(y) = d q + 0.5                                            # SPEC §1
    ∂/∂y of Σ H ⊙ imp(y) = c ⊙ (2 q H − β) − 2 q mean(H c),  β = 8 q² / (M − 1) · Σ(H d)

(β vanishes where the clamp at EPS holds, as the clamp's own gradient does.) With
``U = a x1 + b x2`` (a = ζ and b = 1 − ζ in SimAM2, any two weights in general, each broadcast
over the neuron dims),
``E = (2 − r) imp_λ(U) − a² imp(x1) − b² imp(x2)``, ``s = sigmoid(E)`` and ``out = s ⊙ U``:

    ∂E   = G ⊙ U ⊙ s (1 − s)
    ∂U   = G ⊙ s + (2 − r)-weighted importance gradient of U with H = ∂E
    ∂x1  = a ∂U + importance gradient of x1 with H = −a² ∂E          (x2 alike, with b)
    ∂a   = Σ_bcast (∂U ⊙ x1 − 2 a imp(x1) ⊙ ∂E)                      (b alike, with x2)

where Σ_bcast sums over the dims along which ``a`` is broadcast. ``r`` is a statistic and takes no
gradient (SPEC §3). Saved for the backward: U, the three centred inputs ``c``, the importances of
x1 and x2 times their weights, s, and the per-channel ``q`` and clamp mask; nothing is recomputed.
The backward is not itself differentiable (``once_differentiable``: a second derivative raises).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.autograd.function import once_differentiable

from .energy import EPS, neuron_count, resolve_neuron_dims


def pair_weights(zeta: torch.Tensor) -> torch.Tensor:
    """(B, C) ζ → (B, C, 2) weights (ζ, 1 − ζ), laid out as (2, B, C) so that each weight is a
    contiguous slice. ``torch.stack(..., dim=-1)`` interleaves the two: slow to build, to slice and
    to differentiate."""
    return torch.stack([zeta, 1 - zeta]).permute(1, 2, 0)


def _as_slots(weights: torch.Tensor, ndim: int) -> torch.Tensor:
    """(B, C, 2) weights → (2, B, C, 1, …, 1), contiguous, broadcasting against (2, B, C, *S)."""
    w = weights.movedim(-1, 0)
    # a strided weight makes every full-size multiply it enters several times slower than one copy
    return w.contiguous().view(w.shape + (1,) * (ndim - 2))


class PairEnergyAttention(torch.autograd.Function):
    """``sigmoid(E*) ⊙ U`` for two inputs (Eq. 4, 7, 8); see the module docstring for the backward.

    The three importances (of U, x1, x2) live in one tensor of three slots, so that most steps are
    one op, not three; temporaries are overwritten in place, since on CPU a fresh full-size
    allocation (page faults) can cost more than the arithmetic. Inputs must already share one
    floating dtype of at least float32 (the caller casts, as :meth:`~simam2.core.MultiSimAM2.fuse`
    does); ``r`` is a 0-dim tensor without gradient.
    """

    @staticmethod
    def forward(ctx, x1, x2, weights, r, lam: float, dims: tuple[int, ...]):
        m = neuron_count(x1, dims)
        w = _as_slots(weights, x1.dim())
        w1, w2 = w.unbind(0)
        u = x1 * w1
        u.addcmul_(x2, w2)  # Eq. 4
        c = x1.new_empty((3,) + x1.shape)  # slots: U, x1, x2
        for y, cy in zip((u, x1, x2), c.unbind(0)):
            torch.sub(y, y.mean(dims, keepdim=True), out=cy)
        cdims = tuple(d + 1 for d in dims)
        imp = c * c
        # v4 = 4 (Σd / (M − 1) + λ) and q = 1 / max(v4, 4 EPS): the reference's 1 / (4 max(v, EPS))
        v4 = imp.sum(cdims, keepdim=True).mul_(4 / (m - 1))
        if lam:
            v4[0].add_(4 * lam)  # λ on U only (SPEC §2)
        live = v4 >= 4 * EPS  # clamp_min passes gradient here; the backward mirrors that mask
        q = v4.clamp_min_(4 * EPS).reciprocal_()
        imp.mul_(q).add_(0.5)  # SPEC §1, all three at once
        # Eq. 7, E = (2 − r) imp_U − a² imp_1 − b² imp_2, built in U's slot, which then holds s;
        # the other two slots keep a imp_1 and b imp_2, what the weights' gradient needs
        e, wimp1, wimp2 = imp.unbind(0)
        imp[1:].mul_(w)
        k = 2 - r
        e.mul_(k)
        e.addcmul_(w1, wimp1, value=-1)
        e.addcmul_(w2, wimp2, value=-1)
        s = e.sigmoid_()
        ctx.save_for_backward(x1, x2, w, u, c, imp, q, live, k)
        ctx.m, ctx.cdims = m, cdims
        return s * u  # Eq. 8

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x1, x2, w, u, c, imp, q, live, k = ctx.saved_tensors
        m, cdims = ctx.m, ctx.cdims
        need_x1, need_x2, need_w = ctx.needs_input_grad[:3]
        if not (need_x1 or need_x2 or need_w):
            return None, None, None, None, None, None
        s = imp[0]

        gu = grad_out * s  # the direct path of out = s ⊙ U
        ge = u * gu
        ge.addcmul_(ge, s, value=-1)  # ∂E = G U s (1 − s)
        # slot j's importance has upstream grad −f_j ∂E, f = (−k, a², b²). With p = f ∂E c its
        # gradient is −2q (p − mean(p)) + β c, β = 8 q² / (M − 1) Σ(p c) where the clamp is live.
        # Slot 0 takes k ∂E c, the opposite sign, and so gives the opposite gradient (all linear).
        p = torch.empty_like(c)
        torch.mul(ge, k, out=p[0])
        torch.mul(w, ge, out=p[1:]).mul_(w)
        p.mul_(c)
        scratch = torch.mul(p, c)
        beta = scratch.sum(cdims, keepdim=True).mul_(q.square().mul_(live)).mul_(8 / (m - 1))
        g = p.sub_(p.sum(cdims, keepdim=True), alpha=1 / m).mul_(q.mul(-2))
        g.addcmul_(c, beta)
        g0, g1, g2 = g.unbind(0)
        gu.sub_(g0)  # ∂U in full: the direct path plus U's importance
        g[1:].addcmul_(w, gu)  # ∂x_j = w_j ∂U + x_j's importance
        g_weights = None
        if need_w:
            # ∂w_j = Σ_bcast (∂U ⊙ x_j − 2 w_j imp_j ∂E)
            gw = scratch[1:]
            gw1, gw2 = gw.unbind(0)
            torch.mul(x1, gu, out=gw1)
            torch.mul(x2, gu, out=gw2)
            gw.addcmul_(imp[1:], ge, value=-2)
            if gw.dim() > 3:
                gw = gw.sum(tuple(range(3, gw.dim())))
            g_weights = gw.permute(1, 2, 0)  # (2, B, C) seen as (B, C, 2): pair_weights' layout
        return g1 if need_x1 else None, g2 if need_x2 else None, g_weights, None, None, None


def fused_pair_attention(
    x1: torch.Tensor,
    x2: torch.Tensor,
    weights: torch.Tensor,
    r: torch.Tensor,
    lam: float,
    neuron_dims: Sequence[int] | int | None = None,
) -> torch.Tensor:
    """Eq. 4, 7, 8 for two inputs, ``sigmoid(E*) ⊙ U``, in one autograd node (SPEC §2).

    ``x1``, ``x2``: (B, C, *S) of one floating dtype, at least float32 (statistics need it; cast
    first, as :meth:`~simam2.core.MultiSimAM2.fuse` does). ``weights``: (B, C, 2), the weights of
    x1 and x2 (ζ and 1 − ζ), in the same dtype. ``r``: Eq. 6's degradation factor, a number or
    0-dim tensor; it takes no gradient. ``lam``: λ of U's importance. Equal to
    ``sigmoid(fused_energy(xs, w, superpose(xs, w), r, lam, dims)) * superpose(xs, w)``.
    Differentiable once: a second derivative is an error.
    """
    if x1.shape != x2.shape:
        raise ValueError(f"both inputs must have one shape, got {tuple(x1.shape)} and {tuple(x2.shape)}")
    if x1.dim() < 2 or tuple(weights.shape) != (x1.shape[0], x1.shape[1], 2):
        raise ValueError(
            f"weights must have shape (B, C, 2) for inputs (B, C, ...); got weights {tuple(weights.shape)} "
            f"and inputs {tuple(x1.shape)}"
        )
    dtypes = {x1.dtype, x2.dtype, weights.dtype}
    if len(dtypes) != 1 or not x1.is_floating_point() or torch.finfo(x1.dtype).bits < 32:
        raise ValueError(
            f"inputs and weights must share one floating dtype of at least float32, got "
            f"{sorted(str(d) for d in dtypes)}; cast them first"
        )
    dims = resolve_neuron_dims(x1, neuron_dims)
    r = torch.as_tensor(r, dtype=x1.dtype, device=x1.device)
    if r.requires_grad:
        r = r.detach()
    return PairEnergyAttention.apply(x1, x2, weights, r, float(lam), dims)
