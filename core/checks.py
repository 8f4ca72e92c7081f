"""Checks of what the user hands the core: numbers (λ, s, α) and given fusion weights (ζ).

Each raises a ``ValueError`` whose one line names the argument, the value and the allowed range.
The tensor check never stalls an accelerator: see :func:`check_unit_interval`.
"""

from __future__ import annotations

import itertools
import math
import numbers
import os
import sys
import warnings
import weakref

import torch


def warn_deprecated(message: str) -> None:
    """A ``DeprecationWarning`` attributed to the first caller outside ``core/``, however deep inside
    it the deprecated spelling was met (a subclass's ``__init__`` passing it on)."""
    here = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 2  # stacklevel 2: warn_deprecated's caller
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == here:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DeprecationWarning, stacklevel=level)


def check_nonnegative(name: str, value) -> float:
    """``value`` as a float, refused unless it is a finite real number ≥ 0.

    λ (SPEC §1–§3), s (Eq. 6) and α (OGM-GE's rule, SPEC §5) are all of this kind: a negative one
    turns the equation around (α < 0 *amplifies* the dominant modality's gradient, k > 1), NaN makes
    every later value NaN, and an infinite one gives ∞ · 0 = NaN where a variance is zero.
    """
    if torch.is_tensor(value):
        if value.numel() != 1:
            raise ValueError(f"{name} must be one number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()  # a setting, read once when it is given, never on the training path
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number >= 0, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def _queued_on_device(ok: torch.Tensor, device: torch.device, message: str) -> bool:
    """Queue ``torch._assert_async(ok, message)`` where a host read of ``ok`` would stall an
    accelerator or break a compiled graph, and say whether it was queued; False on the CPU outside
    ``torch.compile`` (and on a device without ``_assert_async``): the caller reads ``ok`` itself."""
    if device.type != "cpu" or torch.compiler.is_compiling():
        try:
            torch._assert_async(ok, message)
            return True
        except NotImplementedError:
            pass
    return False


def check_unit_interval(t: torch.Tensor, what: str) -> None:
    """Refuse a tensor with an entry outside [0, 1] or NaN (a given ζ, or given fusion weights).

    On the CPU the check is exact and immediate, a ``ValueError`` (reading a CPU tensor costs no
    synchronisation). On an accelerator a host read would make the host wait for the device at every
    step, so the check is ``torch._assert_async``: queued on the device, it never stalls the loop,
    and a bad ζ stops the run with a device-side assertion that prints the same message (on CUDA the
    process cannot go on after it, like after any device-side assert). A device without
    ``_assert_async`` gets the host check. Under ``torch.compile`` the asynchronous form is used on
    every device (a host read would break the graph).
    """
    t = t.detach()
    ok = ((t >= 0) & (t <= 1)).all()  # NaN fails both comparisons
    if _queued_on_device(ok, t.device, f"{what} must lie in [0, 1] with no NaN"):
        return
    if not bool(ok):
        nan = t.isnan()
        finite = t[~nan]
        seen = [f"min {finite.min().item():g}, max {finite.max().item():g}"] if finite.numel() else []
        seen += [f"{int(nan.sum())} NaN"] if nan.any() else []
        raise ValueError(f"{what} must lie in [0, 1] with no NaN; got {' and '.join(seen)}")


#: every live SkipReport by key, for the compiled graph's op (which can carry an int, not an object)
_REPORTS: "weakref.WeakValueDictionary[int, SkipReport]" = weakref.WeakValueDictionary()
_KEYS = itertools.count()


@torch.library.custom_op("simam2::report_skips", mutates_args=("counter",))
def _report_skips(counter: torch.Tensor, key: int) -> None:
    """SkipReport.read inside a compiled graph (declared as mutating the counter so that it is
    kept in the graph; it only reads it)."""
    report = _REPORTS.get(key)
    if report is not None:
        report.read(counter)


class SkipReport:
    """Warns when a module skipped a statistics update, reading its device counter without waiting.

    The counter (a 0-dim int64 buffer) is bumped on the device, so that deciding and skipping need
    no host read. On the CPU the warning comes at once. On an accelerator the counter is copied,
    non-blocking, into a pinned host tensor at each call and the copy made at the previous call is
    read: the warning may come one training forward late, and the device never waits for the host.
    The instance lives in the module's ``__dict__``, so torch.nn.DataParallel's replicas share it.
    """

    def __init__(self, message: str):
        self.message = message  # formatted with n, the number of skipped updates so far
        self.seen = 0
        self.host: torch.Tensor | None = None
        self.key = next(_KEYS)
        _REPORTS[self.key] = self

    def __getstate__(self) -> dict:
        return {"message": self.message, "seen": self.seen}  # no pinned host tensor, no process-local key

    def __setstate__(self, state: dict) -> None:
        """A copy (``copy.deepcopy``, a pickled model loaded again) gets a key of its own."""
        self.__init__(state["message"])
        self.seen = state["seen"]

    def __call__(self, counter: torch.Tensor) -> None:
        if torch.compiler.is_compiling():
            # a host read here would break the graph: an opaque op reads the counter when the
            # compiled graph runs, as the eager path below does
            torch.ops.simam2.report_skips(counter, self.key)
            return
        self.read(counter)

    def read(self, counter: torch.Tensor) -> None:
        if counter.device.type == "cpu":
            n = int(counter)
        else:
            n = int(self.host) if self.host is not None else 0
            if self.host is None:
                self.host = torch.zeros((), dtype=counter.dtype, pin_memory=torch.cuda.is_available())
            self.host.copy_(counter, non_blocking=True)
        if n > self.seen:
            self.seen = n
            warnings.warn(self.message.format(n=n), RuntimeWarning, stacklevel=4)


def check_floating(x: torch.Tensor, what: str = "SimAM²'s inputs") -> None:
    """Refuse integer, boolean and complex inputs: Eq. 4–8 computed in an integer dtype truncate
    every value (the output is cast back to the input's dtype), so they would be silently wrong; the
    energy of Eq. 7 and its sigmoid are defined for real values only."""
    if not x.is_floating_point():
        raise ValueError(f"{what} must be floating-point tensors, got {x.dtype}: cast them first (x.float())")


def check_convex(weights: torch.Tensor, what: str) -> None:
    """Refuse given K-modality weights that do not sum to one over K (the last dim): Eq. 4's
    superposition is a convex combination; weights summing to 1.8 scale the fused output.

    The tolerance is a few units of the weights' own precision. Asynchronous on an accelerator,
    as :func:`check_unit_interval`.
    """
    w = weights.detach()
    tol = max(1e-5, 8 * torch.finfo(w.dtype).eps) if w.is_floating_point() else 0.0
    total = w.sum(-1, dtype=torch.float64 if w.device.type == "cpu" else torch.float32)
    ok = ((total - 1).abs() <= tol).all()
    if _queued_on_device(ok, w.device, f"{what} must sum to 1 over the modalities"):
        return
    if not bool(ok):
        raise ValueError(f"{what} must sum to 1 over the modalities (a convex combination, Eq. 4); "
                         f"got sums from {total.min().item():g} to {total.max().item():g}")


def check_var_max(value, key: str) -> None:
    """Refuse a loaded ``var_max`` that is not a variance: NaN, ±inf or negative (read once, at
    ``load_state_dict``, never on the training path). NaN there makes r, and so every output, NaN."""
    if not torch.is_tensor(value) or value.numel() == 0:
        return
    v = value.detach()
    if not v.is_floating_point():
        raise ValueError(f"{key} in the state dict must be a floating-point variance, got {v.dtype}")
    bad = ~torch.isfinite(v) | (v < 0)
    if bool(bad.any()):
        shown = ", ".join(f"{x:g}" for x in v[bad].flatten()[:4].tolist())
        raise ValueError(f"{key} in the state dict must hold finite variances >= 0; "
                         f"{int(bad.sum())} of {v.numel()} are not ({shown}): refusing to load it")
