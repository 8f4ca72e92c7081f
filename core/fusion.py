"""SimAM² fusion: superposition (Eq. 4), degradation factor r (Eq. 6), fused energy (Eq. 7) and the
attention it drives (Eq. 8). SPEC §2–§3.

:class:`SimAM2` is the paper's two-modality module. :class:`MultiSimAM2` is our extension to K
modalities: the weights become a softmax over K inputs and Eq. 4 a convex sum; with K = 2 and weights
(ζ, 1 − ζ) it computes exactly what :class:`SimAM2` computes (a test checks it).

:func:`superpose` and :func:`fused_energy` are the reference, op by op; K > 2 runs through them.
K = 2 runs through :func:`~simam2.core.fused.fused_pair_attention`, the same equations in one
autograd node with a derived backward (tests hold the two equal).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn

from . import pair_kernel
from .checks import (SkipReport, check_convex, check_floating, check_nonnegative, check_unit_interval,
                     check_var_max, warn_deprecated)
from .distributed import is_distributed
from .energy import EPS, compute_dtype, importance, resolve_neuron_dims
from .fused import fused_pair_attention, fused_zeta_attention, pair_weights

#: how a fusion's ζ is made: the constructor's ``zeta_mode`` (``zeta`` names ζ's tensors)
ZETA_MODES = ("fixed", "learnable", "given")
#: the two readings of U for a fixed ζ (SPEC §2): Eq. 4 as written, or the vanilla fusion's output
U_READINGS = ("eq4", "vanilla")


def resolve_zeta_mode(zeta_mode: str, zeta: str | None) -> str:
    """``zeta_mode``, or the deprecated spelling ``zeta="learnable"`` of it (kept for one release:
    ``zeta`` now names ζ's tensors only, as in ``forward(x1, x2, zeta=...)``)."""
    if zeta is None:
        return zeta_mode
    warn_deprecated(f"zeta={zeta!r} as a constructor argument is deprecated: pass zeta_mode={zeta!r} "
                    "(zeta names ζ's tensors, as in forward(..., zeta=...))")
    if zeta_mode != "fixed" and zeta_mode != zeta:
        raise ValueError(f"zeta_mode={zeta_mode!r} and zeta={zeta!r} disagree: pass zeta_mode alone")
    return zeta


def superpose(xs: Sequence[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """Eq. 4, ``U = ζ ⊙ X1 + (1 − ζ) ⊙ X2``, written for K inputs: ``U = Σ_k w_k ⊙ X_k``.

    ``weights`` has shape (B, C, K) and broadcasts over the neuron dims of each (B, C, *S) input.
    """
    return sum(_broadcast(weights[..., k], x) * x for k, x in enumerate(xs))


def fused_energy(
    xs: Sequence[torch.Tensor],
    weights: torch.Tensor,
    u: torch.Tensor,
    r: torch.Tensor,
    lam: float,
    neuron_dims,
) -> torch.Tensor:
    """Eq. 7, ``E* = e_U − ζ² e_1 − (1 − ζ)² e_2 + (1 − r) e_U``, written for K inputs.

    Each ``e`` is an importance (SPEC §1): λ = 0 for the modalities, λ on U only.
    """
    e = (2 - r) * importance(u, lam, neuron_dims)  # e_U + (1 − r) e_U
    for k, x in enumerate(xs):
        e = e - _broadcast(weights[..., k], x).square() * importance(x, 0.0, neuron_dims)
    return e


def degradation_factor(var_b, var_max, s: float, lam: float):
    """Eq. 6, ``r = tanh((s · Σ_c var_b[c] + λ) / (Σ_c var_max[c] + λ))`` (SPEC §3).

    ``var_b`` and ``var_max``: the (C,) tensors, or their sums over C as numbers (r is then a
    number, computed on the host). The denominator is floored at EPS, so that λ = 0 with a
    constant ζ gives r = 0, not NaN.
    """
    if not torch.is_tensor(var_b):
        return math.tanh((s * var_b + lam) / max(var_max + lam, EPS))
    return torch.tanh((s * var_b.sum() + lam) / (var_max.sum() + lam).clamp_min(EPS))


def _broadcast(w: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, C) → (B, C, 1, …, 1) so that it multiplies a (B, C, *S) tensor."""
    return w.reshape(w.shape + (1,) * (like.dim() - 2))


def _pool(x: torch.Tensor) -> torch.Tensor:
    """(B, C, *S) → (B, C): the gate sees each channel's mean (identity for a 2-D input)."""
    return x.flatten(2).mean(-1) if x.dim() > 2 else x


def _nan_unless_finite(w: torch.Tensor, gate_input: torch.Tensor) -> torch.Tensor:
    """``w``, or all NaN when the gate's input (each channel's mean of each input) holds a NaN or
    ±inf (for weights the gate computed from the inputs).

    An inf input saturates the gate's ζ (sigmoid(inf) = 1) into finite but false statistics that
    would raise ``var_max`` for ever; made NaN, the batch is skipped as a NaN one is (and under DDP
    the NaN reaches every rank through the all-reduce, so all skip it together). A NaN or ±inf
    input makes its channel's mean NaN or ±inf, so the (B, K·C) gate input tells what a pass over
    the inputs would, at 1/S of its cost; a finite channel whose mean overflows gives the gate
    the same false input and is skipped too. Fixed or given weights do not depend on the inputs,
    so their statistics stay true. Decided on the host where reading is free, else on the device.
    """
    g = gate_input.detach()
    if _host_readable(g):
        # one float64 sum of float32 (or narrower) values cannot overflow: finite iff every value is
        ok = bool(torch.isfinite(g).all()) if g.dtype == torch.float64 else math.isfinite(
            g.sum(dtype=torch.float64).item())
        return w if ok else torch.full_like(w, float("nan"))
    finite = torch.isfinite(g).all()
    return torch.where(finite, w, torch.full_like(w, float("nan")))


def _autocast_off(device: str):
    """A context with autocast off on ``device`` where it is on (else a no-op): the statistics' row
    sums (matrix-vector products) and any matmul must not run in bf16/fp16 again."""
    return torch.autocast(device, enabled=False) if torch.is_autocast_enabled(device) else nullcontext()


def _statistics_kernel(zeta: torch.Tensor, gate_input: torch.Tensor | None):
    """The CPU kernel's module where it computes ζ's statistics (ζ (B, C) and the gate's input in
    float32 or float64, on the CPU, eager, the kernel on and built), else None."""
    ok = (torch.float32, torch.float64)
    if (zeta.device.type != "cpu" or zeta.dtype not in ok or torch.compiler.is_compiling()
            or (gate_input is not None and gate_input.dtype not in ok) or not pair_kernel.available()):
        return None
    return pair_kernel.kernel()


def _host_readable(t: torch.Tensor) -> bool:
    """Whether reading ``t`` on the host costs no device synchronisation and no graph break."""
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


class MultiSimAM2(nn.Module):
    """SimAM² over K ≥ 2 modalities (our extension of Eq. 4–8; K = 2 is the paper's module).

    Args:
        channels: C, the channel dim (dim 1) of every input.
        modalities: K.
        zeta_mode: ``"fixed"`` (uniform weights 1/K, plain averaging), ``"learnable"`` (an
            input-dependent softmax gate over K, SPEC §2) or ``"given"`` (``forward`` must receive
            the weights); :data:`ZETA_MODES`. ``zeta="..."`` is its deprecated spelling.
        lam: λ of the fused representation's importance (the paper: "usually 1e-6").
        s: the scale of Eq. 6 (the paper: 2.5).
        neuron_dims: which dims hold one channel's neurons (SPEC §1 default when None).
        sync_dist: under torch.distributed, reduce ζ's batch statistics over all ranks in training
            mode, so that every rank holds the same ``var_max`` and computes the same ``r`` (SPEC §3).
        u: the reading of U that Eq. 8 multiplies (SPEC §2). ``"eq4"``: U = Σ_k w_k ⊙ X_k as Eq. 4
            writes it. ``"vanilla"``: the vanilla fusion's own output, which ``vanilla`` names — with
            fixed weights the vanilla model adds its K terms (``"sum"``: Σ_k X_k = K·U) or averages
            them (``"mean"``: U itself); with learnable or given weights the vanilla learnable-weight
            sum *is* U, so the readings coincide. E* (Eq. 7) is the same in both: importances are
            scale-invariant.
        vanilla: what the vanilla fusion does with its K terms when the weights are fixed,
            ``"sum"`` (summation, FiLM, concatenation) or ``"mean"`` (a late fusion that averages).

    After each forward: ``.weights`` (B, C, K) and ``.r``, both detached. Buffers: ``var_max`` (C,),
    saved in the state dict; ``weight_sums`` (K,), the batch-and-channel sums of each weight in the
    last training forward (read by :class:`~simam2.core.GradientModulator`, Eq. 11; NaN until the
    first); ``skipped_updates``, how many training batches had non-finite ζ statistics and so left
    both as they were (with a warning). λ and s must be finite and ≥ 0, given weights in [0, 1].
    """

    def __init__(
        self,
        channels: int,
        modalities: int = 2,
        zeta_mode: str = "fixed",
        lam: float = 1e-6,
        s: float = 2.5,
        neuron_dims=None,
        sync_dist: bool = True,
        u: str = "eq4",
        vanilla: str = "sum",
        *,
        zeta: str | None = None,
    ):
        super().__init__()
        zeta_mode = resolve_zeta_mode(zeta_mode, zeta)
        if zeta_mode not in ZETA_MODES:
            raise ValueError(f"zeta_mode must be one of {ZETA_MODES}, got {zeta_mode!r}")
        if u not in U_READINGS:
            raise ValueError(f"u must be one of {U_READINGS} (SPEC §2's two readings of U), got {u!r}")
        if vanilla not in ("sum", "mean"):
            raise ValueError(f"vanilla must be 'sum' or 'mean', got {vanilla!r}")
        if modalities < 2:
            raise ValueError(f"fusion needs at least 2 modalities, got {modalities}")
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        self.channels = channels
        self.modalities = modalities
        self.zeta_mode = zeta_mode
        self.lam = check_nonnegative("lam (λ)", lam)
        self.s = check_nonnegative("s (the scale of Eq. 6)", s)
        self.neuron_dims = neuron_dims
        self.sync_dist = sync_dist
        self.u = u
        self.vanilla = vanilla
        self.gate = self._make_gate() if zeta_mode == "learnable" else None
        self.register_buffer("var_max", torch.zeros(channels))
        self.register_buffer("weight_sums", torch.full((modalities,), float("nan")), persistent=False)
        # training batches whose ζ statistics were not finite, and so left var_max and weight_sums as
        # they were (see _update)
        self.register_buffer("skipped_updates", torch.zeros((), dtype=torch.long), persistent=False)
        self._skip_report = SkipReport(
            "SimAM²: ζ's batch statistics were not finite (NaN or inf in the inputs, or in ζ from the "
            "gate) in {n} training batch(es) so far; var_max and weight_sums kept their values for "
            "those batches, whose r and output are NaN")
        self.weights: torch.Tensor | None = None
        self.r: torch.Tensor | None = None

    # -- the weights -------------------------------------------------------------------------------

    def _make_gate(self) -> nn.Module:
        return nn.Linear(self.modalities * self.channels, self.modalities * self.channels)

    def compute_weights(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        """(B, C, K) fusion weights that sum to one over K (SPEC §2)."""
        b = xs[0].shape[0]
        if self.zeta_mode == "fixed":
            return xs[0].new_full((b, self.channels, self.modalities), 1.0 / self.modalities)
        if self.zeta_mode == "given":
            raise ValueError("this module was built with zeta_mode='given': pass the weights to forward()")
        return self.gated_weights(self.gate_input(xs))

    def gate_input(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        """(B, K·C): each input's channel means, side by side, in the gate's dtype (SPEC §2)."""
        return torch.cat([_pool(x) for x in xs], dim=1).to(self.gate.weight.dtype)

    def gated_weights(self, gate_input: torch.Tensor) -> torch.Tensor:
        """(B, C, K) weights from the gate's input (:meth:`gate_input`): a softmax over K.

        What :meth:`fuse` calls for a learnable ζ (it keeps the gate's input for the finiteness
        check), so a subclass changes the gate here, not in :meth:`compute_weights`."""
        logits = self.gate(gate_input)
        return logits.view(gate_input.shape[0], self.modalities, self.channels).transpose(1, 2).softmax(-1)

    # -- the statistics ----------------------------------------------------------------------------

    def _batch_statistics(self, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel batch variance of the weights, mean over K (C,), and per-modality sums (K,).

        Population variance over the batch (SPEC §3); with K = 2 both weights have the same
        variance, so the mean over K is var_b(ζ) itself. Reduced over ranks under DDP in training.
        """
        w = weights.detach()
        if self.training and self.sync_dist and is_distributed():
            w = w.double()
            n = torch.tensor([float(w.shape[0])], dtype=w.dtype, device=w.device)
            packed = torch.cat([n, w.sum(0).flatten(), w.square().sum(0).flatten()])
            dist.all_reduce(packed)
            n, rest = packed[0], packed[1:]
            total, total_sq = rest.view(2, self.channels, self.modalities)
            var = (total_sq / n - (total / n).square()).clamp_min(0)
            return var.mean(-1), total.sum(0)
        # two passes over (K, B, C), contiguous for SimAM2's weights: var_mean is far slower on CPU
        wk = w.movedim(-1, 0).contiguous()
        mean = wk.mean(1, keepdim=True)
        return (wk - mean).square_().mean((0, 1)), mean.sum((1, 2)).mul_(w.shape[0])

    def _update(self, weights: torch.Tensor, gate_input: torch.Tensor | None = None) -> torch.Tensor:
        """r for this forward (Eq. 6); in training mode also grows ``var_max`` and ``weight_sums``.

        ``gate_input``: the gate's input where, in training, the gate made the weights from the
        inputs (:func:`_nan_unless_finite`: a non-finite one makes the statistics NaN).

        Both updates are in place, so that they survive torch.nn.DataParallel: its replica on the
        first device shares storage with the wrapped module. Non-finite statistics never enter
        either buffer (``torch.maximum`` would keep a NaN for ever): such a batch leaves both as they
        were, counts in ``skipped_updates`` and is warned about (:meth:`_grow`). The decision is
        taken from the all-reduced statistics under DDP, so every rank takes the same one. An empty
        batch in training mode is an error, except under DDP with sync_dist, where the other ranks'
        samples make the statistics and a rank that raised would leave them waiting in the
        all-reduce.
        """
        with torch.no_grad():
            syncs = self._syncs()
            if self.training and weights.shape[0] == 0 and not syncs:
                raise ValueError(
                    "SimAM² got an empty batch (B = 0) in training mode: ζ's batch variance (Eq. 6) is "
                    "undefined; skip empty batches before the model (e.g. DataLoader(drop_last=True))")
            if gate_input is not None:
                weights = _nan_unless_finite(weights, gate_input)
            var_b, sums = self._batch_statistics(weights)
            # in float64: r is a ratio of sums of small variances
            if _host_readable(var_b):  # Σ_c var_b read once decides the update and gives r
                total = var_b.sum(dtype=torch.float64).item()
                if self.training:
                    self._grow(var_b, sums, math.isfinite(total))
                r = degradation_factor(total, self.var_max.sum(dtype=torch.float64).item(), self.s, self.lam)
                return torch.tensor(r, dtype=torch.float64)
            if self.training:
                self._grow(var_b, sums)
            return degradation_factor(var_b.double(), self.var_max.double(), self.s, self.lam)

    def _syncs(self) -> bool:
        """Whether this forward's statistics are all-reduced over the ranks (DDP, training)."""
        return self.training and self.sync_dist and is_distributed()

    def _grow(self, var_b: torch.Tensor, sums: torch.Tensor, finite: bool | None = None) -> None:
        """var_max ← max(var_max, var_b) and weight_sums ← sums, unless the statistics are not finite.

        A NaN or inf weight makes its channel's variance NaN (and its modality's sum non-finite),
        so var_b alone decides: ``finite``, read on the host by the caller where reading is free (a
        CPU tensor, outside torch.compile; the sum of C variances of weights in [0, 1] cannot
        overflow, so it is finite iff each is), and the decision is a plain ``if``; None elsewhere,
        where it is a ``torch.where`` on the device, so that the host never waits for an accelerator.
        """
        if finite is not None:
            if finite:
                torch.maximum(self.var_max, var_b.to(self.var_max.dtype), out=self.var_max)
                self.weight_sums.copy_(sums)
            else:
                self.skipped_updates.add_(1)
                self._skip_report(self.skipped_updates)
        else:
            finite = torch.isfinite(var_b).all()
            grown = torch.maximum(self.var_max, var_b.to(self.var_max.dtype))
            self.var_max.copy_(torch.where(finite, grown, self.var_max))
            self.weight_sums.copy_(torch.where(finite, sums.to(self.weight_sums.dtype), self.weight_sums))
            self.skipped_updates.add_(~finite)
            self._skip_report(self.skipped_updates)

    # -- the forward -------------------------------------------------------------------------------

    def _check(self, xs: Sequence[torch.Tensor], weights: torch.Tensor | None) -> None:
        if len(xs) != self.modalities:
            raise ValueError(f"expected {self.modalities} inputs, got {len(xs)}")
        for x in xs:
            check_floating(x)
        shape = xs[0].shape
        for k, x in enumerate(xs):
            if x.shape != shape:
                raise ValueError(
                    f"all inputs must have one shape; input 1 is {tuple(shape)}, input {k + 1} is {tuple(x.shape)}"
                )
        if xs[0].dim() < 2 or shape[1] != self.channels:
            raise ValueError(f"expected inputs of shape (B, {self.channels}, ...), got {tuple(shape)}")
        if weights is not None and tuple(weights.shape) != (shape[0], self.channels, self.modalities):
            raise ValueError(
                f"fusion weights must have shape (B, C, K) = {(shape[0], self.channels, self.modalities)}, "
                f"got {tuple(weights.shape)}"
            )

    def _check_given(self, weights: torch.Tensor) -> None:
        check_unit_interval(weights, "given fusion weights")
        check_convex(weights, "given fusion weights")

    # -- the statistic's buffers: float32 whatever the module's dtype, checked at load -------------

    def _apply(self, fn, recurse=True):
        """As nn.Module's, but ``var_max`` and ``weight_sums`` never drop below float32: under
        ``.half()`` the running maximum of small variances would be kept (and compared) in fp16."""
        kept = {k: self._buffers[k] for k in ("var_max", "weight_sums")}
        super()._apply(fn, recurse)
        for k, old in kept.items():
            new = self._buffers[k]
            if new is not None and new.is_floating_point() and torch.finfo(new.dtype).bits < 32:
                self._buffers[k] = old.to(device=new.device)
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        check_var_max(state_dict.get(prefix + "var_max"), prefix + "var_max")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def fuse(self, xs: Sequence[torch.Tensor], weights: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. 4–8 for K inputs; ``weights`` (B, C, K) given, or computed per ``zeta``."""
        self._check(xs, weights)
        gate_input = None
        if weights is None and self.gate is not None:  # ζ from the inputs: an inf saturates it
            gate_input = self.gate_input(xs)
            weights = self.gated_weights(gate_input)
        elif weights is None:
            weights = self.compute_weights(xs)
        else:
            self._check_given(weights)
        return self._fuse_checked(xs, weights, gate_input)

    def _fuse_checked(self, xs: Sequence[torch.Tensor], weights: torch.Tensor,
                      gate_input: torch.Tensor | None) -> torch.Tensor:
        """Eq. 4–8 on checked inputs. ``weights``: the (B, C, K) weights, or, in :class:`SimAM2`,
        ζ (B, C) itself; ``gate_input``: the gate's input where the gate made them, else None."""
        dims = resolve_neuron_dims(xs[0], self.neuron_dims)
        out_dtype = xs[0].dtype
        ct = compute_dtype(torch.promote_types(out_dtype, weights.dtype))
        xs = [x if x.dtype == ct else x.to(ct) for x in xs]
        w = weights if weights.dtype == ct else weights.to(ct)
        r = self._update(w, gate_input if self.training else None)
        out = self._attend(xs, w, r, dims)
        gain = self.vanilla_gain
        if gain != 1.0:
            out = out * gain  # sigmoid(E*) ⊙ V with V = gain · U: E* unchanged (SPEC §2)
        self.weights, self.r = weights.detach(), r
        return out if out.dtype == out_dtype else out.to(out_dtype)

    @property
    def vanilla_gain(self) -> float:
        """V / U, the factor from Eq. 4's U to the output that Eq. 8 multiplies (SPEC §2): K when
        ``u="vanilla"`` reads a fixed-weight fusion that adds its K terms, 1 otherwise."""
        if self.u == "vanilla" and self.zeta_mode == "fixed" and self.vanilla == "sum":
            return float(self.modalities)
        return 1.0

    def _attend(self, xs, w, r, dims) -> torch.Tensor:
        """Eq. 4, 7, 8 on inputs already in the statistics' dtype (SPEC §1: at least float32);
        ``r`` is Eq. 6's r as :meth:`_update` returns it (0-dim float64).

        Autocast is switched off here: it would run the row sums (matrix-vector products) and any
        matmul in bf16/fp16 again. K = 2 takes the fused node (under torch.compile, the reference
        it stands for, which inductor fuses); K > 2 the reference.
        """
        r = r.to(xs[0].dtype)
        with _autocast_off(xs[0].device.type):
            if len(xs) == 2:  # the paper's case: Eq. 4, 7, 8 in one autograd node
                return fused_pair_attention(xs[0], xs[1], w, r, self.lam, dims)
            u = superpose(xs, w)  # Eq. 4
            e = fused_energy(xs, w, u, r, self.lam, dims)  # Eq. 7
            return torch.sigmoid(e) * u  # Eq. 8

    def forward(self, *xs: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        return self.fuse(xs, weights)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, modalities={self.modalities}, zeta_mode={self.zeta_mode!r}, "
            f"lam={self.lam}, s={self.s}, neuron_dims={self.neuron_dims}, u={self.u!r}"
        )


class SimAM2(MultiSimAM2):
    """The paper's two-modality SimAM² (Eq. 4–8): ``forward(x1, x2, zeta=None)``.

    ζ, the weight of ``x1``, has shape (B, C) (SPEC §2): 0.5 when ``zeta_mode="fixed"`` (summation);
    ``sigmoid(Linear(concat(pool(x1), pool(x2))))`` with C outputs when ``"learnable"``; passed to
    ``forward`` when given (which overrides the module's own ζ). After each forward ``.zeta`` is that
    forward's ζ (detached) and ``.r`` its degradation factor; ``.weights`` is (ζ, 1 − ζ) built from it.

    ζ itself, not the (B, C, 2) weights, travels from the gate to the node
    (:func:`~simam2.core.fused.fused_zeta_attention`) and to ζ's statistics (Eq. 6); on the CPU with
    the kernel both are one C++ call each (docs/equations.md, issue 19).
    """

    def __init__(self, channels: int, zeta_mode: str = "fixed", lam: float = 1e-6, s: float = 2.5,
                 neuron_dims=None, sync_dist: bool = True, u: str = "eq4", vanilla: str = "sum", *,
                 zeta: str | None = None):
        super().__init__(channels, 2, zeta_mode, lam, s, neuron_dims, sync_dist, u, vanilla, zeta=zeta)

    def _make_gate(self) -> nn.Module:
        return nn.Linear(2 * self.channels, self.channels)

    def compute_zeta(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """ζ (B, C) per SPEC §2."""
        if self.zeta_mode == "fixed":
            return x1.new_full((x1.shape[0], self.channels), 0.5)
        if self.zeta_mode == "given":
            raise ValueError("this module was built with zeta_mode='given': pass zeta to forward()")
        return torch.sigmoid(self.gate(self.gate_input((x1, x2))))

    def compute_weights(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        zeta = self.compute_zeta(*xs)
        return pair_weights(zeta)

    def gated_zeta(self, gate_input: torch.Tensor) -> torch.Tensor:
        """ζ (B, C) from the gate's input (:meth:`gate_input`): what :meth:`fuse` calls for a
        learnable ζ, so a subclass changes the gate here (or in :meth:`gated_weights`)."""
        return torch.sigmoid(self.gate(gate_input))

    def gated_weights(self, gate_input: torch.Tensor) -> torch.Tensor:
        return pair_weights(self.gated_zeta(gate_input))

    def _check_given(self, weights: torch.Tensor) -> None:
        check_unit_interval(weights[..., 0], "given zeta (ζ)")  # 1 − ζ is in [0, 1] when ζ is

    # ζ (B, C) travels where MultiSimAM2 carries the (B, C, 2) weights (ζ, 1 − ζ): the two-modality
    # node takes ζ itself, so that nothing builds the pair, or differentiates through it, per forward
    # (on small inputs those ops cost more than the attention). Given weights or a given ζ, a ζ
    # narrower than the statistics' dtype, and a subclass that overrides gated_weights or
    # compute_weights take MultiSimAM2's path unchanged.

    @property
    def weights(self) -> torch.Tensor | None:
        """The last forward's (B, C, 2) weights (ζ, 1 − ζ), detached; None before the first.
        Built from ζ when first read, then kept (one tensor per forward, as MultiSimAM2's)."""
        if self._weights is None and self._zeta is not None:
            self.__dict__["_weights"] = pair_weights(self._zeta)
        return self._weights

    @weights.setter
    def weights(self, value: torch.Tensor | None) -> None:
        # plain attributes (what restored_attributes saves and puts back), set without
        # nn.Module.__setattr__'s checks: this runs at every forward
        pair = value is not None and value.dim() == 3
        self.__dict__.update(_zeta=value[..., 0] if pair else value, _weights=value if pair else None)

    @property
    def zeta(self) -> torch.Tensor | None:
        return self._zeta

    def _batch_statistics(self, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return super()._batch_statistics(pair_weights(weights) if weights.dim() == 2 else weights)

    def _update(self, weights: torch.Tensor, gate_input: torch.Tensor | None = None) -> torch.Tensor:
        mod = _statistics_kernel(weights, gate_input) if weights.dim() == 2 and not self._syncs() else None
        if mod is None or (self.training and weights.shape[0] == 0):
            return super()._update(weights, gate_input)
        # the CPU kernel's one pass over ζ, in float64: what MultiSimAM2._update computes op by op
        total, var_max = mod.zeta_statistics(weights.detach(), self.var_max, self.weight_sums, self.training,
                                             None if gate_input is None else gate_input.detach())
        if self.training and not math.isfinite(total):
            self.skipped_updates.add_(1)
            self._skip_report(self.skipped_updates)
        return torch.tensor(degradation_factor(total, var_max, self.s, self.lam), dtype=torch.float64)

    def _attend(self, xs, w, r, dims) -> torch.Tensor:
        if w.dim() == 3:
            return super()._attend(xs, w, r, dims)
        with _autocast_off(xs[0].device.type):
            return fused_zeta_attention(xs[0], xs[1], w, r.to(xs[0].dtype), self.lam, dims)

    def fuse(self, xs: Sequence[torch.Tensor], weights: torch.Tensor | None = None) -> torch.Tensor:
        cls = type(self)
        if (weights is not None or cls.gated_weights is not SimAM2.gated_weights
                or cls.compute_weights is not SimAM2.compute_weights):
            return super().fuse(xs, weights)  # given weights, or a subclass's own (B, C, 2) hook
        self._check(xs, None)
        gate_input = None
        if self.gate is None:
            zeta = self.compute_zeta(*xs)
        else:
            gate_input = self.gate_input(xs)
            zeta = self.gated_zeta(gate_input)
        if zeta.dtype != compute_dtype(torch.promote_types(xs[0].dtype, zeta.dtype)):
            # a ζ narrower than the statistics (bf16 under autocast) makes its pair in its own dtype,
            # as MultiSimAM2 does: 1 − ζ rounded there, then cast
            return self._fuse_checked(xs, pair_weights(zeta), gate_input)
        return self._fuse_checked(xs, zeta, gate_input)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, zeta: torch.Tensor | None = None) -> torch.Tensor:
        weights = None
        if zeta is not None:  # checked against the inputs' shape, which fuse() checks otherwise
            self._check((x1, x2), None)
            if zeta.dim() != 2 or zeta.shape[0] != x1.shape[0] or zeta.shape[1] != self.channels:
                raise ValueError(
                    f"zeta must have shape (B, C) = ({x1.shape[0]}, {self.channels}), got {tuple(zeta.shape)}"
                )
            weights = pair_weights(zeta)  # given: MultiSimAM2's path, through fuse (subclasses override it)
        return self.fuse((x1, x2), weights)

    def __setstate__(self, state: dict) -> None:
        if "_zeta" not in state:  # a module pickled whole when it kept the (B, C, 2) weights
            w = state.pop("weights", None)
            state.update(_zeta=None if w is None else w[..., 0], _weights=w)
        super().__setstate__(state)
