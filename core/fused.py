"""Two-modality SimAM² attention (Eq. 4, 7, 8) as a single autograd node with a derived backward.

:func:`~simam2.core.fusion.superpose`, :func:`~simam2.core.fusion.fused_energy` and
:func:`~simam2.core.energy.importance` are the reference (SPEC §1–§2): written op by op, they make
autograd record some sixty nodes forward and a hundred backward, and each node costs a full pass
over the tensors plus framework overhead. :func:`fused_pair_attention` computes the same K = 2 output
in one :class:`torch.autograd.Function` whose backward is derived by hand (below), so that a forward
and backward take some forty raw passes and no per-node bookkeeping. Tests hold it equal to the
reference, forward and every gradient.

Each input is seen as a matrix of rows: one row per channel (and per index of the dims that are not
neuron dims), ``M`` neurons along it. Per-row sums are matrix-vector products with a vector of ones,
which BLAS runs several times faster than a reduction over a short trailing dim (M = 49 for a 7 × 7
map). The weights are one number per row when the neuron dims are spatial (ζ is per sample and
channel), or one per element otherwise (the 2-D case, whose neurons are the C channels).

The algebra, per row, for an input ``y``: a constant ``s``, the power of two nearest ``mean |y|``
(SPEC §1's statistics are invariant under ``y → y / s`` with λ and the floor scaled by ``1/s²``;
the squares of ``y / s`` cannot overflow, where float32 ``(y − μ)²`` is inf from |y| ≈ 2e19 on; a
power of two scales without rounding), ``z = (y − μ) / s``,
``v = Σz² / (M − 1) + λ/s²`` and ``q = 1 / (4 max(v, EPS/s²))``:

    imp(y) = z² q + 0.5                                           # SPEC §1
    ∂/∂y of Σ H ⊙ imp(y) = (1/s) [2q (H z − mean(H z)) − β z],   β = 8 q² / (M − 1) · Σ(H z²)

(β vanishes where the floor holds, as the clamp's own gradient does.) With ``U = a x1 + b x2``
(a = ζ and b = 1 − ζ in SimAM2, any two weights in general),
``E = k imp_λ(U) − a² imp(x1) − b² imp(x2)`` with ``k = 2 − r``, ``σ = sigmoid(E)``, ``out = σ ⊙ U``:

    ∂E   = G ⊙ U ⊙ σ (1 − σ)
    ∂U   = G ⊙ σ + importance gradient of U with H = k ∂E
    ∂x1  = a ∂U + importance gradient of x1 with H = −a² ∂E          (x2 alike, with b)
    ∂a   = Σ_row (∂U ⊙ x1 − 2 a imp(x1) ⊙ ∂E)                        (b alike, with x2)

where Σ_row sums over the row when a is one number per row. ``r`` is a statistic and takes no
gradient (SPEC §3). Saved for the backward: U, the three scaled centred inputs ``z``, the
importances of x1 and x2 times their weights, σ, and the per-row ``q``, ``1/s`` and floor mask.

A second derivative (``create_graph=True``) runs the backward through the op-by-op reference
(:func:`reference_pair_attention`) instead, so that higher derivatives are exact. Under
``torch.compile`` the reference itself is traced: inductor fuses its elementwise passes, which a
hand-written Function would hide from it.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .energy import EPS, importance, neuron_count, power_of_two_scale, resolve_neuron_dims


def pair_weights(zeta: torch.Tensor) -> torch.Tensor:
    """(B, C) ζ → (B, C, 2) weights (ζ, 1 − ζ), laid out as (2, B, C) so that each weight is a
    contiguous slice. ``torch.stack(..., dim=-1)`` interleaves the two: slow to build, to slice and
    to differentiate."""
    return torch.stack([zeta, 1 - zeta]).permute(1, 2, 0)


def _expand_weight(w: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, C) → (B, C, 1, …, 1), broadcasting against a (B, C, *S) tensor."""
    return w.reshape(w.shape + (1,) * (like.dim() - 2))


def reference_pair_attention(x1, x2, weights, r, lam, neuron_dims=None) -> torch.Tensor:
    """Eq. 4, 7, 8 for two inputs, op by op through :func:`~simam2.core.energy.importance`.

    The reference the fused node is held to, its path for second derivatives, and what
    ``torch.compile`` traces. Same arguments as :func:`fused_pair_attention`.
    """
    dims = resolve_neuron_dims(x1, neuron_dims)
    a, b = _expand_weight(weights[..., 0], x1), _expand_weight(weights[..., 1], x1)
    u = a * x1 + b * x2  # Eq. 4
    e = (2 - r) * importance(u, lam, dims)  # Eq. 7: e_U + (1 − r) e_U − a² e_1 − b² e_2
    e = e - a.square() * importance(x1, 0.0, dims) - b.square() * importance(x2, 0.0, dims)
    return torch.sigmoid(e) * u  # Eq. 8


def _row_reference(x1, x2, a, b, k, lam):
    """The reference on the Function's row layout: (N, M) inputs, (N, 1) or (N, M) weights."""
    u = a * x1 + b * x2
    e = k * importance(u, lam, 1) - a.square() * importance(x1, 0.0, 1) - b.square() * importance(x2, 0.0, 1)
    return torch.sigmoid(e) * u


class PairEnergyAttention(torch.autograd.Function):
    """``sigmoid(E*) ⊙ U`` for two (N, M) inputs (Eq. 4, 7, 8); see the module docstring.

    The three importances (of U, x1, x2) live in one tensor of three slots, so that most steps are
    one op, not three; temporaries are overwritten in place, since on CPU a fresh full-size
    allocation (page faults) can cost more than the arithmetic. ``a``, ``b``: (N, 1) or (N, M);
    ``k`` = 2 − r, a 0-dim tensor without gradient; all of one floating dtype of at least float32.
    """

    @staticmethod
    def forward(ctx, x1, x2, a, b, k, lam: float):
        n, m = x1.shape
        ones = x1.new_ones(m)
        u = x1 * a
        u.addcmul_(x2, b)  # Eq. 4
        ys = (u, x1, x2)
        buf = x1.new_empty((3, n, m))  # |y|, then z², then the importances
        for y, out in zip(ys, buf.unbind(0)):
            torch.abs(y, out=out)
        inv, inv2 = power_of_two_scale(torch.mv(buf.view(3 * n, m), ones).view(3, n, 1).div_(m))  # mean |y|
        shift = torch.stack([torch.mv(y, ones) for y in ys]).view(3, n, 1).mul_(inv).div_(-m)  # −μ/s
        z = torch.empty_like(buf)
        for y, zj, ij, sj in zip(ys, z.unbind(0), inv.unbind(0), shift.unbind(0)):
            torch.addcmul(sj, y, ij, out=zj)  # z = (y − μ) / s in one pass
        torch.mul(z, z, out=buf)
        # v4 = 4 (Σz² / (M − 1) + λ/s²); q = 1 / max(v4, 4 EPS/s²): the reference's 1 / (4 max(v, EPS))
        v4 = torch.mv(buf.view(3 * n, m), ones).view(3, n, 1).mul_(4 / (m - 1))
        if lam:
            v4[0].add_(inv2[0], alpha=4 * lam)  # λ on U only (SPEC §2)
        floor = inv2.mul_(4 * EPS)
        live = v4 >= floor  # clamp_min passes gradient here; the backward mirrors that mask
        q = torch.maximum(v4, floor).reciprocal_()
        # the slots' factors (k, a, b) folded into q and the 0.5: buf = (k imp_U, a imp_1, b imp_2)
        f = torch.stack([k.expand(a.shape), a, b])
        torch.addcmul(f * 0.5, buf, q * f, out=buf)
        e, wimp1, wimp2 = buf.unbind(0)
        e.addcmul_(wimp1, a, value=-1)  # Eq. 7: E = k imp_U − a² imp_1 − b² imp_2, in U's slot
        e.addcmul_(wimp2, b, value=-1)
        sig = e.sigmoid_()
        ctx.save_for_backward(x1, x2, a, b, k, u, z, buf, q, inv, live)
        ctx.lam = lam
        return sig * u  # Eq. 8

    @staticmethod
    def backward(ctx, grad_out):
        x1, x2, a, b, k, u, z, buf, q, inv, live = ctx.saved_tensors
        need = ctx.needs_input_grad[:4]
        if not any(need):
            return None, None, None, None, None, None
        if torch.is_grad_enabled():
            return _reference_backward(ctx, grad_out, (x1, x2, a, b), k, need)
        n, m = x1.shape
        ones = x1.new_ones(m)
        sig = buf[0]
        gu = grad_out * sig  # the direct path of out = σ ⊙ U
        ge = u * gu
        ge.addcmul_(ge, sig, value=-1)  # ∂E = G U σ (1 − σ)
        # slot j's importance takes H_j = h_j ∂E, h = (k, −a², −b²). With p = ∂E z (and h folded in
        # when the weights vary along the row) the gradient is (h/s) [2q (p − mean p) − β z].
        h = torch.stack([k.expand(a.shape), -a.square(), -b.square()])
        work = z.new_empty((2, 3, n, m))  # p, then the gradients; p z, then the weights' terms
        p, scratch = work.unbind(0)
        torch.mul(z, ge, out=p)
        if a.shape[1] != 1:
            p.mul_(h)
            h = torch.ones_like(q)
        torch.mul(p, z, out=scratch)
        sums = torch.mv(work.view(6 * n, m), ones).view(2, 3, n, 1)
        alpha = q.mul(h).mul_(inv).mul_(2)  # 2 q h / s
        beta = sums[1].mul_(q.square()).mul_(live).mul_(h).mul_(inv).mul_(8 / (m - 1))
        g = torch.addcmul(sums[0].mul_(alpha).div_(-m), p, alpha, out=p)
        g.addcmul_(z, beta, value=-1)
        g0, g1, g2 = g.unbind(0)
        gu.add_(g0)  # ∂U in full: the direct path plus U's importance
        g1.addcmul_(a, gu)  # ∂x_j = w_j ∂U + x_j's importance
        g2.addcmul_(b, gu)
        ga = gb = None
        if need[2] or need[3]:
            # ∂w_j = Σ_row (∂U ⊙ x_j − 2 w_j imp_j ∂E); buf[1:] holds w_j imp_j
            gw = scratch[1:]
            torch.mul(x1, gu, out=gw[0])
            torch.mul(x2, gu, out=gw[1])
            gw.addcmul_(buf[1:], ge, value=-2)
            if a.shape[1] == 1:
                gw = torch.mv(gw.reshape(2 * n, m), ones).view(2, n, 1)
            ga, gb = gw.unbind(0)
        return (g1 if need[0] else None, g2 if need[1] else None, ga if need[2] else None,
                gb if need[3] else None, None, None)


def _reference_backward(ctx, grad_out, inputs, k, need):
    """The vector-Jacobian product through the reference, with a graph: for second derivatives."""
    wanted = [t for t, n in zip(inputs, need) if n]
    out = _row_reference(*inputs, k, ctx.lam)
    got = iter(torch.autograd.grad(out, wanted, grad_out, create_graph=True, allow_unused=True))
    grads = [next(got) if n else None for n in need]
    grads = [torch.zeros_like(t) if n and g is None else g for t, n, g in zip(inputs, need, grads)]
    return (*grads, None, None)


def _as_rows(x: torch.Tensor, perm: list[int], m: int) -> torch.Tensor:
    """(B, C, *S) → (N, M): the neuron dims last, flattened; a view when they already are."""
    return x.permute(perm).reshape(-1, m).contiguous()


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
    :func:`reference_pair_attention`; a second derivative runs through the reference. Under
    ``torch.compile`` the reference is what is traced (inductor fuses it).
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
    m = neuron_count(x1, dims)
    r = torch.as_tensor(r, dtype=x1.dtype, device=x1.device).detach()
    if torch.compiler.is_compiling():
        return reference_pair_attention(x1, x2, weights, r, lam, dims)
    others = [d for d in range(x1.dim()) if d not in dims]
    perm = others + list(dims)
    permuted_shape = [x1.shape[d] for d in perm]
    if min(dims) >= 2:  # ζ is constant along each row: one weight per row
        pick = (slice(None),) * len(others) + (0,) * len(dims)
        a, b = (_expand_weight(weights[..., j], x1).expand(x1.shape).permute(perm)[pick].reshape(-1, 1)
                for j in (0, 1))
    else:  # the neurons run along B or C: one weight per element
        a, b = (_as_rows(_expand_weight(weights[..., j], x1).expand(x1.shape), perm, m) for j in (0, 1))
    out = PairEnergyAttention.apply(_as_rows(x1, perm, m), _as_rows(x2, perm, m), a.contiguous(),
                                    b.contiguous(), 2 - r, float(lam))
    if perm == sorted(perm):
        return out.view(x1.shape)
    return out.view(permuted_shape).permute([perm.index(d) for d in range(x1.dim())])
