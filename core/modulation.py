"""Decoupling-free gradient modulation (Sec. 2.3, Eq. 11) with OGM-GE's coefficient rule (SPEC §5),
and OGM-GE's own decoupled ratio kept for comparison (SPEC §6).

:class:`GradientModulator` rescales the gradients of two named groups of parameters between
``backward()`` and ``optimizer.step()``, through PyTorch's optimizer step pre-hooks, so that no
training loop has to change. All its arithmetic stays on the parameters' device: it never reads a
value back to the host.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import torch
import torch.distributed as dist
from torch.optim.optimizer import Optimizer, register_optimizer_step_pre_hook

from .checks import check_floating, check_nonnegative, warn_deprecated
from .distributed import is_distributed

#: what drives OGM's coefficient rule: ζ (Eq. 11, decoupling-free) or OGM-GE's decoupled scores (SPEC §6)
RATIOS = ("zeta", "decoupled")
#: the deprecated ``mode`` spelling of ``noise`` (kept for one release): "ogm" is noise=False
MODES = ("ogm", "ogm_ge")
#: OGM-GE adds this to the gradient's std before drawing its noise (its main.py).
GE_STD_FLOOR = 1e-8


def decoupling_free_ratio(zeta: torch.Tensor) -> torch.Tensor:
    """Eq. 11: ``ρ1 = Σ ζ / Σ (1 − ζ)`` over batch and channels; ρ2 = 1 / ρ1."""
    zeta = zeta.detach()
    return zeta.sum() / (1 - zeta).sum()


def ogm_coefficients(rho1, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """OGM-GE's rule (its Eq. 10), SPEC §5: the dominant modality's gradient is damped.

    ``ρ1 > 1``: ``k1 = 1 − tanh(α ρ1)``, ``k2 = 1``; otherwise ``k2 = 1 − tanh(α / ρ1)``, ``k1 = 1``.
    Accepts a float or a tensor; returns 0-dim tensors on ``rho1``'s device. α must be finite and
    ≥ 0 (α < 0 would amplify the dominant modality); α = 0 gives k = 1 whatever ρ1, also at ρ1 = 0 or
    ∞, where the products would be 0 · ∞.
    """
    alpha = check_nonnegative("alpha (α)", alpha)
    rho1 = torch.as_tensor(rho1, dtype=torch.float32 if not torch.is_tensor(rho1) else None)
    one = torch.ones_like(rho1)
    if alpha == 0:
        return one, one.clone()
    dominant = rho1 > 1
    k1 = torch.where(dominant, 1 - torch.tanh(alpha * rho1), one)
    k2 = torch.where(dominant, one, 1 - torch.tanh(alpha / rho1))
    return k1, k2


def decoupled_scores(logits1: torch.Tensor, logits2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """OGM-GE's per-modality scores ``score_m = Σ_i softmax(out_m)[i, label_i]``, stacked (2,)."""
    if logits1.shape != logits2.shape or logits1.dim() != 2:
        raise ValueError(
            f"per-modality logits must both be (N, classes), got {tuple(logits1.shape)} and {tuple(logits2.shape)}"
        )
    if labels.shape != logits1.shape[:1]:
        raise ValueError(f"labels must have shape ({logits1.shape[0]},), got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        # .long() would truncate them (0.5 → class 0): silently the wrong class's probability
        raise ValueError(f"labels must be class indices (an integer tensor), got {labels.dtype}")
    check_floating(logits1, "per-modality logits")
    check_floating(logits2, "per-modality logits")
    idx = labels.long().view(-1, 1)
    return torch.stack([
        logits1.detach().softmax(1).gather(1, idx).sum(),
        logits2.detach().softmax(1).gather(1, idx).sum(),
    ])


def decoupled_ratio(logits1: torch.Tensor, logits2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SPEC §6: OGM-GE's decoupled ratio ``score_1 / score_2`` from the split classifier's logits."""
    s = decoupled_scores(logits1, logits2, labels)
    return s[0] / s[1]


class GradientModulator:
    """OGM's coefficient rule on two parameter groups, with or without GE noise, driven by Eq. 11's
    ratio or by OGM-GE's decoupled one.

    Args:
        groups: two named groups, ``{"audio": params, "visual": params}``; the first is modality 1,
            whose fusion weight is ζ.
        fusion: the fusion module whose ζ drives ``ratio="zeta"``: a :class:`~simam2.core.SimAM2`
            (its ``weight_sums`` buffer is read, on device) or any object with a ``.zeta`` tensor.
        alpha: OGM-GE's α, finite and ≥ 0.
        mode: deprecated (one release): ``"ogm"`` is ``noise=False``, ``"ogm_ge"`` ``noise=True``.
        start_epoch, end_epoch: the modulation window, inclusive at both ends as in OGM-GE.
        epoch_fn: returns the current epoch; without one, set :attr:`epoch` from the loop.
        ratio: the ratio OGM's rule reads: ``"zeta"`` (decoupling-free, Eq. 11) or ``"decoupled"``
            (OGM-GE's own, fed each step through :meth:`observe_logits`).
        seed: seeds the GE noise generator; None draws one (shared from rank 0 under DDP, so that
            every rank adds the same noise, SPEC §5).
        noise: add OGM-GE's ``N(0, std(grad)²)`` after ``grad ← k·grad`` (GE, SPEC §5); False is
            plain OGM. Default True.

    ``last`` holds the latest step's detached values: ``rho_zeta``, ``rho_decoupled`` (when logits
    were observed), ``k1``, ``k2``, ``applied``.
    """

    def __init__(
        self,
        groups: Mapping[str, Iterable[torch.nn.Parameter]],
        fusion=None,
        alpha: float = 0.1,
        mode: str | None = None,
        start_epoch: int = 0,
        end_epoch: int = 50,
        epoch_fn: Callable[[], int] | None = None,
        ratio: str = "zeta",
        seed: int | None = None,
        *,
        noise: bool | None = None,
    ):
        if mode is not None:
            if mode not in MODES:
                raise ValueError(f"mode must be one of {MODES}, got {mode!r} (mode is deprecated: pass noise=)")
            warn_deprecated(f"GradientModulator(mode={mode!r}) is deprecated: pass noise={mode == 'ogm_ge'} "
                            "(the ratio is chosen by ratio=)")
            if noise is not None and noise != (mode == "ogm_ge"):
                raise ValueError(f"mode={mode!r} and noise={noise} disagree: pass noise alone")
            noise = mode == "ogm_ge"
        if noise is None:
            noise = True
        if not isinstance(noise, bool):
            raise ValueError(f"noise must be True or False, got {noise!r}")
        if ratio not in RATIOS:
            raise ValueError(f"ratio must be one of {RATIOS}, got {ratio!r}")
        if len(groups) != 2:
            raise ValueError(f"gradient modulation balances exactly two modalities, got groups {list(groups)}")
        self.names = list(groups)
        self.groups = [list(p) for p in groups.values()]
        for name, params in zip(self.names, self.groups):
            if not params:
                raise ValueError(f"parameter group {name!r} is empty")
        _refuse_overlaps(self.names, self.groups)
        if ratio == "zeta":
            if fusion is None:
                raise ValueError("decoupling-free modulation (ratio='zeta') needs the fusion module whose ζ it reads")
            if getattr(fusion, "zeta_mode", None) == "fixed":
                raise ValueError(
                    "decoupling-free modulation needs a learnable (or given) ζ: with the fixed ζ = 0.5 "
                    "Eq. 11's ratio is 1 at every step; build the fusion with zeta_mode='learnable'"
                )
        self.fusion = fusion
        self.alpha = check_nonnegative("alpha (α)", alpha)
        self.noise = noise
        self.start_epoch, self.end_epoch = start_epoch, end_epoch
        self.epoch_fn = epoch_fn
        self.epoch = 0
        self.ratio = ratio
        self.seed = seed
        self.last: dict[str, torch.Tensor | bool] = {}
        self._generators: dict[torch.device, torch.Generator] = {}
        self._param_ids = {id(p) for group in self.groups for p in group}
        self._owns: dict[int, bool] = {}
        self._ratio_checked = False  # weight_sums seen finite once (see zeta_ratio)
        self._handles: dict[int | None, object] = {}  # attach(): one hook per optimizer

    @property
    def mode(self) -> str:
        """Deprecated (one release): ``"ogm_ge"`` when :attr:`noise`, else ``"ogm"``."""
        warn_deprecated("GradientModulator.mode is deprecated: read .noise")
        return "ogm_ge" if self.noise else "ogm"

    # -- ratios ------------------------------------------------------------------------------------

    def zeta_ratio(self) -> torch.Tensor:
        """Eq. 11's ρ1 from the fusion's ζ in the last training forward (on device).

        ``weight_sums`` is NaN until the fusion's first training forward with finite ζ, and never
        NaN after it (:meth:`~simam2.core.MultiSimAM2._update` keeps non-finite statistics out). So
        it is read back once, until it is seen finite, and an error says why there is no ratio yet;
        later steps never wait for the device.
        """
        sums = getattr(self.fusion, "weight_sums", None)
        if torch.is_tensor(sums) and sums.numel() == 2:
            if not self._ratio_checked:
                if not bool(torch.isfinite(sums).all()):
                    raise RuntimeError(_NO_FORWARD)
                self._ratio_checked = True
            return sums[0] / sums[1]
        zeta = getattr(self.fusion, "zeta", None)
        if zeta is None:
            raise RuntimeError(_NO_FORWARD)
        return decoupling_free_ratio(zeta)

    def observe_logits(self, logits1: torch.Tensor, logits2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Record OGM-GE's decoupled ratio for this step (SPEC §6); summed over ranks under DDP."""
        scores = decoupled_scores(logits1, logits2, labels)
        if is_distributed():
            dist.all_reduce(scores)
        self.last["rho_decoupled"] = rho = scores[0] / scores[1]
        return rho

    # -- the step ----------------------------------------------------------------------------------

    def current_epoch(self) -> int:
        return self.epoch_fn() if self.epoch_fn is not None else self.epoch

    def in_window(self) -> bool:
        return self.start_epoch <= self.current_epoch() <= self.end_epoch

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(k1, k2) for this step, from the configured ratio."""
        if self.ratio == "zeta":
            rho = self.last["rho_zeta"] = self.zeta_ratio()
        else:
            if "rho_decoupled" not in self.last:
                raise RuntimeError("ratio='decoupled' needs observe_logits() before each optimizer step")
            rho = self.last["rho_decoupled"]
        if self.fusion is not None and self.ratio != "zeta":
            self.last["rho_zeta"] = self.zeta_ratio()
        k1, k2 = ogm_coefficients(rho, self.alpha)
        # a NaN ratio (NaN ζ from a fusion without SimAM2's guard, NaN logits) must not turn the
        # gradients NaN: that step is not modulated (k = 1), on the device, without a host read
        k1, k2 = (torch.where(k.isnan(), torch.ones_like(k), k) for k in (k1, k2))
        self.last["k1"], self.last["k2"] = k1, k2
        return k1, k2

    def _generator(self, device: torch.device) -> torch.Generator:
        gen = self._generators.get(device)
        if gen is None:
            if self.seed is None:
                seed = torch.randint(0, 2**62, (1,), dtype=torch.int64)
                if is_distributed():
                    seed = seed.to(device) if dist.get_backend() == "nccl" else seed
                    dist.broadcast(seed, src=0)
                self.seed = int(seed.item())  # once per run, at the first step
            gen = torch.Generator(device=device)
            gen.manual_seed(self.seed)
            self._generators[device] = gen
        return gen

    @torch.no_grad()
    def apply(self) -> bool:
        """Modulate the groups' gradients now, if inside the window; returns whether it did."""
        if not self.in_window():
            self.last["applied"] = False
            return False
        for k, params in zip(self.coefficients(), self.groups):
            for p in params:
                g = p.grad
                if g is None:
                    continue
                k_dev = k.to(device=g.device, dtype=g.dtype)
                if self.noise:
                    # OGM-GE's unbiased std; a one-element gradient has none (std() is NaN there),
                    # so it gets the floor alone
                    std = (g.std() if g.numel() > 1 else g.new_zeros(())) + GE_STD_FLOOR
                    noise = torch.randn(g.shape, generator=self._generator(g.device), device=g.device, dtype=g.dtype)
                    g.mul_(k_dev).add_(noise.mul_(std))
                else:
                    g.mul_(k_dev)
        self.last["applied"] = True
        return True

    # -- hooks -------------------------------------------------------------------------------------

    def _holds_groups(self, optimizer: Optimizer) -> bool:
        owns = self._owns.get(id(optimizer))
        if owns is None:
            ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
            owns = self._owns[id(optimizer)] = bool(ids & self._param_ids)
        return owns

    def _hook(self, optimizer: Optimizer, args, kwargs) -> None:
        if self._holds_groups(optimizer):
            self.apply()

    def attach(self, optimizer: Optimizer | None = None):
        """Run :meth:`apply` before each ``step()`` of ``optimizer``; with None, before the step of
        any optimizer that holds these parameters (a global hook, for optimizers built by code we do
        not control). Returns a handle whose ``remove()`` detaches it.

        Idempotent: attaching again to the same optimizer (or globally again) returns the live
        handle and adds no second hook, which would modulate twice (k² and two draws of noise). A
        global hook and a hook on one optimizer would both fire at that optimizer's step, so the
        second of the two is refused.
        """
        key = None if optimizer is None else id(optimizer)
        live = {k: h for k, h in self._handles.items() if _is_live(h)}
        self._handles = live
        if key in live:
            return live[key]
        if live and (key is None or None in live):
            raise RuntimeError(
                "this GradientModulator is already attached "
                + ("globally" if None in live else "to an optimizer")
                + "; a global hook and an optimizer's hook would both modulate that optimizer's step: "
                  "remove() the first handle, or attach in one way only")
        handle = register_optimizer_step_pre_hook(self._hook) if optimizer is None \
            else optimizer.register_step_pre_hook(self._hook)
        self._handles[key] = handle
        return handle


_NO_FORWARD = ("the fusion module has not run a forward in training mode yet (or every one so far "
               "had non-finite ζ), so Eq. 11 has no ζ to read: run a training forward (model.train()) "
               "before the first optimizer step")


def _is_live(handle) -> bool:
    """Whether a hook handle is still registered (its ``remove()`` was not called)."""
    hooks = handle.hooks_dict_ref()
    return hooks is not None and handle.id in hooks


def _refuse_overlaps(names: list[str], groups: list[list[torch.nn.Parameter]]) -> None:
    """A parameter twice in one group, or in both, would be scaled twice (k² or k1 k2) and get
    noise twice: refused, naming the group(s) and the parameter's shape and position."""
    seen: dict[int, tuple[str, int]] = {}
    for name, params in zip(names, groups):
        for i, p in enumerate(params):
            if id(p) in seen:
                first, j = seen[id(p)]
                where = f"twice in group {name!r}" if first == name else f"in both groups {first!r} and {name!r}"
                raise ValueError(
                    f"a parameter of shape {tuple(p.shape)} is listed {where} (positions {j} and {i}); "
                    f"each parameter must be in one group, once, or its gradient is modulated twice")
            seen[id(p)] = (name, i)
