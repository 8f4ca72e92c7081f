"""Two-modality SimAM² attention (Eq. 4, 7, 8) as a single autograd node with a derived backward.

:func:`~simam2.core.fusion.superpose`, :func:`~simam2.core.fusion.fused_energy` and
:func:`~simam2.core.energy.importance` are the reference (SPEC §1–§2): written op by op, they make
autograd record some sixty nodes forward and a hundred backward, and each node costs a full pass
over the tensors plus framework overhead. :func:`fused_pair_attention` computes the same K = 2 output
in one :class:`torch.autograd.Function` whose backward is derived by hand (below). Tests hold it
equal to the reference, forward and every gradient.

**Where it runs.** On the CPU, where the neuron dims are the trailing ones (SPEC §1's defaults
always are), the node is the kernel of :mod:`~simam2.core.pair_kernel`: every statistic comes from
five per-channel moments of the inputs, Σd1, Σd2, Σd1², Σd2², Σd1·d2 with ``d_j = x_j − p_j``
(``p_j`` the channel's first neuron, a pilot, so that a variance is never a difference of large
numbers), accumulated in float64 in one pass; U's mean and variance follow without a pass over U,
``mean(U) = a μ1 + b μ2`` and ``var(U) = a² v1 + b² v2 + 2ab c12`` (where ζ varies along the neurons,
as for (B, C) inputs, U's own two moments are gathered in the same pass instead). The output passes
(E, then sigmoid(E) U, over a block of the channel while it is in the cache) read x1 and x2 and
write the output; the backward is one per-channel reduction and one
element-wise pass. Full-size tensors: forward writes 2 (the output and σ = sigmoid(E*), kept so
that the backward needs no exponential); backward writes 2 (∂x1, ∂x2) and, where ζ varies along the
neurons, ∂ζ and ∂(1 − ζ); per channel, 15 float64 numbers are kept. The weights go in as they lie
(a strided (L, 2) view of the (B, C, 2) weights, one per channel, or per neuron) and ∂weights come
back in :func:`pair_weights`' layout: no expand, copy or stack around the node. (Tried and left
out: recomputing σ in the backward instead of keeping it made the backward 1.6–1.9× slower; its
sums in float32, 20–40 % faster at M ≥ 512, lose ζ's gradient where x is far from zero, as
``test_shifted_moments_keep_float32_exact_far_from_zero`` shows.) Elsewhere (an accelerator, other
neuron dims, no C++ compiler) the node takes the PyTorch path below, which computes the same
numbers op by op; under ``torch.compile`` see :func:`fused_pair_attention`.

**The algebra of the PyTorch path**, per channel of ``M`` neurons (sums and means over the neuron
dims), for an input ``y``: a constant ``s``, the power of two nearest ``mean |y|`` (SPEC §1's
statistics are invariant under ``y → y / s`` with λ and the floor scaled by ``1/s²``; the squares of
``y / s`` cannot overflow, where float32 ``(y − μ)²`` is inf from |y| ≈ 2e19 on; a power of two
scales without rounding), ``z = (y − μ) / s``, ``v = Σz² / (M − 1) + λ/s²`` and
``q = 1 / (4 max(v, EPS/s²))`` (the kernel takes the same with ``s`` near the standard deviation):

    imp(y) = z² q + 0.5                                           # SPEC §1
    ∂/∂y of Σ H ⊙ imp(y) = (1/s) [2q (H z − mean(H z)) − β z],   β = 8 q² / (M − 1) · Σ(H z²)

(β vanishes where the floor holds, as the clamp's own gradient does.) With ``U = a x1 + b x2``
(a = ζ and b = 1 − ζ in SimAM2, any two weights in general, each broadcast over the neuron dims),
``E = k imp_λ(U) − a² imp(x1) − b² imp(x2)`` with ``k = 2 − r``, ``σ = sigmoid(E)``, ``out = σ ⊙ U``:

    ∂E   = G ⊙ U ⊙ σ (1 − σ)
    ∂U   = G ⊙ σ + importance gradient of U with H = k ∂E
    ∂x1  = a ∂U + importance gradient of x1 with H = −a² ∂E          (x2 alike, with b)
    ∂a   = Σ_bcast (∂U ⊙ x1 − 2 a imp(x1) ⊙ ∂E)                      (b alike, with x2)

where Σ_bcast sums over the dims along which ``a`` is broadcast. The kernel's backward is these
formulas, the per-channel sums (Σ H z, Σ H z² per slot) gathered in its one reduction. ``r`` is a
statistic and takes no gradient (SPEC §3). The PyTorch path saves for the backward: U, the three
scaled centred inputs ``z``, the importances of x1 and x2 times their weights, σ, and the
per-channel ``q``, ``1/s`` and floor mask; nothing is recomputed.

A second derivative (``create_graph=True``) runs the backward through the op-by-op reference
(:func:`reference_pair_attention`) instead, so that higher derivatives are exact.

:func:`fused_zeta_attention` is the same node for weights (ζ, 1 − ζ) given as ζ (B, C), what
:class:`~simam2.core.SimAM2` calls: on the CPU, eager, with the kernel, one C++ autograd node;
elsewhere :func:`fused_pair_attention` of :func:`pair_weights`.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import torch

from . import pair_kernel
from .energy import EPS, importance, neuron_count, power_of_two_scale, resolve_neuron_dims


#: Scale every channel, as on an accelerator, even on the CPU where the node scales only channels
#: whose squares overflow (the numbers are the same; tests set this to run that path on the CPU).
SCALE_ALWAYS = False


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


def _expand_weight(w: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, C) → (B, C, 1, …, 1), broadcasting against a (B, C, *S) tensor."""
    return w.reshape(w.shape + (1,) * (like.dim() - 2))


def reference_pair_attention(x1, x2, weights, r, lam, neuron_dims=None) -> torch.Tensor:
    """Eq. 4, 7, 8 for two inputs, op by op through :func:`~simam2.core.energy.importance`.

    The reference the fused node is held to and its path for second derivatives. Same arguments
    as :func:`fused_pair_attention`.
    """
    dims = resolve_neuron_dims(x1, neuron_dims)
    a, b = _expand_weight(weights[..., 0], x1), _expand_weight(weights[..., 1], x1)
    u = a * x1 + b * x2  # Eq. 4
    e = (2 - r) * importance(u, lam, dims)  # Eq. 7: e_U + (1 − r) e_U − a² e_1 − b² e_2
    e = e - a.square() * importance(x1, 0.0, dims) - b.square() * importance(x2, 0.0, dims)
    return torch.sigmoid(e) * u  # Eq. 8


def _pow2_inverse(s: torch.Tensor, lim: int, root: int = 1) -> torch.Tensor:
    """``2^−e`` with ``2^e`` within a factor 2 of ``s^(1/root)`` (``s`` > 0 and finite, else 1),
    ``|e| ≤ lim``: a power of two, so that scaling by it rounds nothing."""
    ok = (s > 0) & torch.isfinite(s)
    e = torch.where(ok, s, torch.ones_like(s)).log2().floor().div(root).floor().clamp(-lim, lim)
    return (-e).exp2()


def _pilot(y: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """The first neuron of each channel, broadcasting against ``y``: the shift of the moments."""
    for d in dims:
        y = y.narrow(d, 0, 1)
    return y.detach()


def moment_pair_attention(x1, x2, weights, r, lam, neuron_dims=None) -> torch.Tensor:
    """Eq. 4, 7, 8 for two inputs from five per-channel moments, in differentiable ops.

    What ``torch.compile`` traces: the algebra of the CPU kernel (:mod:`~simam2.core.pair_kernel`),
    so that inductor makes one reduction over x1 and x2 (Σd1, Σd2, Σd1², Σd2², Σd1·d2 with
    d_j = x_j − p_j, p_j the channel's first neuron, accumulated in float64) and one element-wise
    pass that reads x1, x2 and writes the output, on ``(x − p) / s − (μ − p) / s``; U's mean and variance come from the moments
    (var(U) = a² v1 + b² v2 + 2ab c12) where the weights are constant over a channel's neurons, and
    from U's own two moments, gathered in the same reduction, where they are not. The element-wise
    pass works on ``z = (y − μ) / s`` with ``s`` a power of two near the standard deviation
    (exact), so that no square overflows in the input's dtype. Float64 inputs are first scaled by
    a power of two near their largest magnitude (an extra reduction), since their squares can
    overflow float64 itself. Same arguments as :func:`fused_pair_attention`; autograd derives the
    backward, which inductor fuses alike.
    """
    dims = resolve_neuron_dims(x1, neuron_dims)
    m = neuron_count(x1, dims)
    a, b = _expand_weight(weights[..., 0], x1), _expand_weight(weights[..., 1], x1)
    acc = torch.float64
    if x1.dtype == acc:  # a square of float64 overflows from about 1e154 on
        big = torch.maximum(x1.detach().abs().amax(dims, keepdim=True), x2.detach().abs().amax(dims, keepdim=True))
        s0 = _pow2_inverse(big, 500)  # |e| ≤ 500: s0² and λ s0² stay finite
    else:  # float32 squares in float64 cannot overflow
        s0 = torch.ones((), dtype=acc, device=x1.device)
    u = a * x1 + b * x2  # Eq. 4
    slots = [x1, x2] + ([u] if min(dims) < 2 else [])  # ζ varies along the neurons: U's own moments
    pilots = [_pilot(y, dims) for y in (x1, x2)]
    pilots.append(_pilot(u, dims) if len(slots) == 3 else a.to(acc) * pilots[0].to(acc) + b.to(acc) * pilots[1].to(acc))
    ds = [y.to(acc) * s0 - p.to(acc) * s0 for y, p in zip(slots, pilots)]
    sums = [d.sum(dims, keepdim=True) for d in ds]
    squares = [d.square().sum(dims, keepdim=True) for d in ds]
    mus = [p.to(acc) * s0 + s / m for p, s in zip(pilots, sums)]
    var = [(q - s.square() / m) / (m - 1) for s, q in zip(sums, squares)]
    if len(slots) == 2:  # U − μU = a (x1 − μ1) + b (x2 − μ2): var(U) = a² v1 + b² v2 + 2ab c12
        c12 = ((ds[0] * ds[1]).sum(dims, keepdim=True) - sums[0] * sums[1] / m) / (m - 1)
        aa, bb = a.to(acc), b.to(acc)
        mus.append(aa * mus[0] + bb * mus[1])
        var.append(aa.square() * var[0] + bb.square() * var[1] + 2 * aa * bb * c12)
    var[2] = var[2] + lam * s0.square()
    floor = EPS * s0.square()
    imps = []
    for y, p, mu, v in zip((x1, x2, u), pilots, mus, var):
        v = torch.maximum(v.clamp_min(0), floor)  # SPEC §1's floor, as importance() has it
        inv = _pow2_inverse(v.detach(), 1000, root=2)  # 1/s_j, a power of two near 1/std: z of order one
        # y − p is exact near p: a channel far from zero keeps its digits, where y − μ would round μ
        d = y - p if y is not u or len(slots) == 3 else a * (x1 - pilots[0]) + b * (x2 - pilots[1])
        z = d * (s0 * inv).to(y.dtype) + ((p.to(acc) * s0 - mu) * inv).to(y.dtype)
        imps.append(z.square() * (0.25 / (v * inv.square())).to(y.dtype) + 0.5)  # SPEC §1
    e = (2 - r) * imps[2] - a.square() * imps[0] - b.square() * imps[1]  # Eq. 7
    return torch.sigmoid(e) * u  # Eq. 8


class PairEnergyAttention(torch.autograd.Function):
    """``sigmoid(E*) ⊙ U`` for two inputs (Eq. 4, 7, 8); see the module docstring for the backward.

    On the CPU with trailing neuron dims, the kernel (:mod:`~simam2.core.pair_kernel`). Otherwise
    the three importances (of U, x1, x2) live in one tensor of three slots, so that most steps are
    one op, not three; temporaries are overwritten in place, since on CPU a fresh full-size
    allocation (page faults) can cost more than the arithmetic. Inputs must already share one
    floating dtype of at least float32 (the caller casts, as :meth:`~simam2.core.MultiSimAM2.fuse`
    does); ``r`` is a 0-dim tensor without gradient.
    """

    @staticmethod
    def forward(ctx, x1, x2, weights, r, lam: float, dims: tuple[int, ...]):
        ctx.lam, ctx.dims = lam, dims
        views = _kernel_views(x1, x2, weights, dims)
        if views is not None:  # the CPU kernel: one pass forward, one backward
            x1v, x2v, w, rows, per_neuron = views
            k = 2.0 - float(r)
            grad = any(ctx.needs_input_grad[:3])
            out, sigma, stats = pair_kernel.kernel().pair_forward(x1v, x2v, w, rows, per_neuron, k, lam, grad)
            ctx.save_for_backward(x1, x2, weights, x1v, x2v, w, sigma, stats)
            ctx.kernel_k, ctx.kernel_rows, ctx.per_neuron = k, rows, per_neuron
            return out.view(x1.shape)
        ctx.kernel_k = None
        m = neuron_count(x1, dims)
        w = _as_slots(weights, x1.dim())
        w1, w2 = w.unbind(0)
        u = x1 * w1
        u.addcmul_(x2, w2)  # Eq. 4
        c = x1.new_empty((3,) + x1.shape)  # slots: U, x1, x2
        for y, cy in zip((u, x1, x2), c.unbind(0)):
            torch.sub(y, y.mean(dims, keepdim=True), out=cy)
        cdims = tuple(d + 1 for d in dims)
        imp = c * c  # the buffer that holds z², then the importances
        v4 = imp.sum(cdims, keepdim=True)
        # Scaling by a power of two commutes with rounding, so it changes no number except where
        # c² overflows (inf from |c| ≈ 2e19 on in float32). On the CPU, where reading v4 costs
        # nothing, it runs only then; on an accelerator always, since a check would make the host wait.
        # v4 = 4 (Σz² / (M − 1) + λ/s²), q = 1 / max(v4, 4 EPS/s²): the reference's 1 / (4 max(v, EPS))
        if SCALE_ALWAYS or c.device.type != "cpu" or not bool(torch.isfinite(v4).all()):
            inv, inv2 = power_of_two_scale(torch.abs(c, out=imp).mean(cdims, keepdim=True))
            torch.mul(c.mul_(inv), c, out=imp)  # z = (y − μ) / s, and z², which cannot overflow
            v4 = imp.sum(cdims, keepdim=True).mul_(4 / (m - 1))
            if lam:
                v4[0].add_(inv2[0], alpha=4 * lam)  # λ on U only (SPEC §2)
            floor = inv2.mul_(4 * EPS)
        else:  # s = 1: z = c
            inv = None
            v4.mul_(4 / (m - 1))
            if lam:
                v4[0].add_(4 * lam)
            floor = 4 * EPS
        z = c
        live = v4 >= floor  # clamp_min passes gradient here; the backward mirrors that mask
        q = (torch.maximum(v4, floor) if inv is not None else v4.clamp_min_(floor)).reciprocal_()
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
        ctx.save_for_backward(x1, x2, weights, w, u, z, imp, q, inv, live, k)  # inv: None when s = 1
        ctx.m, ctx.cdims, ctx.lam, ctx.dims = m, cdims, lam, dims
        return s * u  # Eq. 8

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.kernel_k is not None:
            return _kernel_backward(ctx, grad_out)
        x1, x2, weights, w, u, c, imp, q, inv, live, k = ctx.saved_tensors
        m, cdims = ctx.m, ctx.cdims
        need_x1, need_x2, need_w = ctx.needs_input_grad[:3]
        if not (need_x1 or need_x2 or need_w):
            return None, None, None, None, None, None
        if torch.is_grad_enabled():  # create_graph: a second derivative may follow
            return _reference_backward(ctx, grad_out, (x1, x2, weights), 2 - k, ctx.needs_input_grad[:3])
        s = imp[0]

        gu = grad_out * s  # the direct path of out = s ⊙ U
        ge = u * gu
        ge.addcmul_(ge, s, value=-1)  # ∂E = G U s (1 − s)
        # slot j's importance has upstream grad −f_j ∂E, f = (−k, a², b²). With p = f ∂E z its
        # gradient is (1/s) (−2q (p − mean(p)) + β z), β = 8 q² / (M − 1) Σ(p z) where the clamp is live.
        # Slot 0 takes k ∂E c, the opposite sign, and so gives the opposite gradient (all linear).
        p = torch.empty_like(c)
        torch.mul(ge, k, out=p[0])
        torch.mul(w, ge, out=p[1:]).mul_(w)
        p.mul_(c)
        scratch = torch.mul(p, c)
        # in z = c / s: the same formulas, and the gradient times 1/s, folded into the per-channel factors
        qq, q2 = q.square().mul_(live), q.mul(-2)
        if inv is not None:
            qq.mul_(inv), q2.mul_(inv)
        beta = scratch.sum(cdims, keepdim=True).mul_(qq).mul_(8 / (m - 1))
        g = p.sub_(p.sum(cdims, keepdim=True), alpha=1 / m).mul_(q2)
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


def _kernel_reads(x1: torch.Tensor, dims: tuple[int, ...]) -> bool:
    """Whether the CPU kernel can take ``x1`` as rows of neurons: on the CPU, the neuron dims the
    trailing ones, not empty, the kernel built (both nodes' condition)."""
    return (x1.device.type == "cpu" and dims[-1] == x1.dim() - 1 and len(dims) == x1.dim() - dims[0]
            and x1.numel() > 0 and pair_kernel.available())


def _kernel_views(x1, x2, weights, dims):
    """``(x1, x2, w, rows, per_neuron)`` as the CPU kernel takes them: x1, x2 (N, M) with one channel
    per row, and w (L, 2) the weights, one per ``rows`` rows (the neuron dims start at 2 or later:
    ζ is constant over a channel) or, ``per_neuron``, one per neuron (L = N·M); None where the
    kernel does not apply (not on the CPU, neuron dims not the trailing ones, no kernel built).

    w is a view of ``weights`` (B, C, 2) where it can be, so that the kernel's ∂w is ∂weights; only
    where ζ is broadcast along some neuron dims is it expanded, and ∂w summed back.
    """
    if not _kernel_reads(x1, dims):
        return None
    d0, shape = dims[0], x1.shape
    n = math.prod(shape[:d0])
    m = x1.numel() // n
    if d0 >= 2:  # row n = (b, c, i): its weight is weights[b, c], one per `rows` rows
        w, rows, per_neuron = weights.reshape(-1, 2), n // (shape[0] * shape[1]), False
    elif x1.dim() == 2:  # (B, C) over C: one weight per neuron
        w, rows, per_neuron = weights.reshape(-1, 2), 1, True
    else:  # ζ broadcast along some neuron dims: expanded to one weight per neuron
        w = weights.reshape(shape[:2] + (1,) * (x1.dim() - 2) + (2,)).expand(shape + (2,)).reshape(-1, 2)
        rows, per_neuron = 1, True
    return x1.contiguous().view(n, m), x2.contiguous().view(n, m), w, rows, per_neuron


def _kernel_backward(ctx, grad_out):
    x1, x2, weights, x1v, x2v, w, sigma, stats = ctx.saved_tensors
    need = ctx.needs_input_grad[:3]
    if not any(need):
        return None, None, None, None, None, None
    if torch.is_grad_enabled():  # create_graph: a second derivative may follow
        return _reference_backward(ctx, grad_out, (x1, x2, weights), 2 - ctx.kernel_k, need)
    g = grad_out.reshape(x1v.shape)  # a view where it can be: the gradient of a sum is an expanded scalar
    if g.stride(1) not in (0, 1):
        g = g.contiguous()
    g1, g2, gw = pair_kernel.kernel().pair_backward(g, x1v, x2v, w, ctx.kernel_rows, ctx.per_neuron, sigma,
                                                    stats, ctx.kernel_k)
    g_weights = None
    if need[2]:
        if gw.shape[0] == x1.shape[0] * x1.shape[1]:  # one weight per (b, c): ∂weights itself
            g_weights = gw.view(weights.shape)
        else:  # expanded along some neuron dims: summed back over them
            g_weights = gw.view(x1.shape + (2,)).sum(tuple(range(2, x1.dim())))
    return (g1.view(x1.shape) if need[0] else None, g2.view(x1.shape) if need[1] else None, g_weights,
            None, None, None)


def _reference_backward(ctx, grad_out, inputs, r, need):
    """The vector-Jacobian product through the reference, with a graph: for second derivatives."""
    wanted = [t for t, n in zip(inputs, need) if n]
    out = reference_pair_attention(*inputs, r, ctx.lam, ctx.dims)
    got = iter(torch.autograd.grad(out, wanted, grad_out, create_graph=True, allow_unused=True))
    grads = [next(got) if n else None for n in need]
    grads = [torch.zeros_like(t) if n and g is None else g for t, n, g in zip(inputs, need, grads)]
    return (*grads, None, None, None)


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
    :func:`reference_pair_attention`, through which a second derivative runs.

    Under ``torch.compile``: on the CPU (trailing neuron dims, kernel built) the kernel as one
    custom operator, ``simam2::pair_attention_by_weights``, which the graph keeps whole, so that compiling
    costs it nothing; elsewhere :func:`moment_pair_attention`, the same moment algebra in
    differentiable ops, which inductor fuses (on CUDA, the path the docs recommend).
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
    neuron_count(x1, dims)
    r = torch.as_tensor(r, dtype=x1.dtype, device=x1.device).detach()
    if torch.compiler.is_compiling():
        views = _kernel_views(x1, x2, weights, dims)
        if views is not None:  # on the CPU, the kernel as one operator that the graph keeps whole
            x1v, x2v, w, rows, per_neuron = views
            return pair_kernel.pair_attention(x1v, x2v, w, rows, per_neuron, r, float(lam))[0].view(x1.shape)
        if x1.device.type == "cpu":
            # without the kernel, inductor's CPU code of the moment algebra measured 3–5× vanilla, the
            # op-by-op reference about 2×: the reference stays the CPU's compiled path
            return reference_pair_attention(x1, x2, weights, r, lam, dims)
        # on an accelerator inductor fuses the moments' passes, which the Function would hide from it
        return moment_pair_attention(x1, x2, weights, r, lam, dims)
    return PairEnergyAttention.apply(x1, x2, weights, r, float(lam), dims)


def _zeta_reference_vjp(x1, x2, zeta, k, lam, d0, grad_out):
    """∂(x1, x2, ζ) of the reference with a graph, for the C++ node's differentiable backward."""
    dims = tuple(range(d0, x1.dim()))
    with torch.enable_grad():
        out = reference_pair_attention(x1, x2, pair_weights(zeta), 2 - k, lam, dims)
        wanted = [t for t in (x1, x2, zeta) if t.requires_grad]
        got = iter(torch.autograd.grad(out, wanted, grad_out, create_graph=True, allow_unused=True))
    grads = [next(got) if t.requires_grad else None for t in (x1, x2, zeta)]
    return tuple(torch.zeros_like(t) if g is None else g for t, g in zip((x1, x2, zeta), grads))


@functools.cache
def _zeta_kernel():
    """The built kernel module, its differentiable-backward reference set once (call it where
    :func:`_kernel_reads` holds: the kernel is built)."""
    mod = pair_kernel.kernel()
    mod.set_reference_vjp(_zeta_reference_vjp)
    return mod


def fused_zeta_attention(
    x1: torch.Tensor,
    x2: torch.Tensor,
    zeta: torch.Tensor,
    r: float | torch.Tensor,
    lam: float,
    dims: tuple[int, ...],
) -> torch.Tensor:
    """Eq. 4, 7, 8 for two inputs with weights (ζ, 1 − ζ): :func:`fused_pair_attention` of
    ``pair_weights(zeta)``, the same numbers, what :class:`~simam2.core.SimAM2` calls.

    ``zeta`` (B, C) in the inputs' dtype; ``dims`` already resolved (sorted, non-negative); ``r`` a
    number or 0-dim tensor without gradient. On the CPU, eager, where the kernel applies (the neuron
    dims the trailing ones from dim 2 on, or dim 1 of a 2-D input), one autograd node in C++: no
    Python runs in its forward or backward, nor around it to build (ζ, 1 − ζ) and take their
    gradients, which on small inputs cost several times the kernel. Elsewhere (an accelerator,
    ``torch.compile``, other neuron dims, no kernel) :func:`fused_pair_attention`. A second
    derivative runs through the reference, as there.
    """
    if x1.shape != x2.shape or x1.dim() < 2 or tuple(zeta.shape) != tuple(x1.shape[:2]):
        raise ValueError(f"inputs (B, C, ...) of one shape and zeta (B, C) expected, got {tuple(x1.shape)}, "
                         f"{tuple(x2.shape)} and zeta {tuple(zeta.shape)}")
    if not (x1.dtype == x2.dtype == zeta.dtype) or x1.device != x2.device or x1.device != zeta.device:
        raise ValueError(f"inputs and zeta must share one dtype and device, got {x1.dtype}, {x2.dtype}, "
                         f"{zeta.dtype} on {x1.device}, {x2.device}, {zeta.device}; cast them first")
    neuron_count(x1, dims)
    d0 = dims[0]
    # ζ constant over each row (d0 ≥ 2) or one per neuron of a 2-D input; ζ broadcast along some
    # neuron dims takes fused_pair_attention, which expands it
    if (d0 >= 2 or x1.dim() == 2) and not torch.compiler.is_compiling() and _kernel_reads(x1, dims):
        return _zeta_kernel().zeta_attention(x1, x2, zeta, d0, 2.0 - float(r), float(lam))
    return fused_pair_attention(x1, x2, pair_weights(zeta), r, lam, dims)
