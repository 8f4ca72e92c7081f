"""Checks of what the user hands the core: numbers (λ, s, α) and given fusion weights (ζ).

Each raises a ``ValueError`` whose one line names the argument, the value and the allowed range.
The tensor check never stalls an accelerator: see :func:`check_unit_interval`.
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch


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
    if t.device.type != "cpu" or torch.compiler.is_compiling():
        try:
            torch._assert_async(ok, f"{what} must lie in [0, 1] with no NaN")
            return
        except NotImplementedError:
            pass
    if not bool(ok):
        nan = t.isnan()
        finite = t[~nan]
        seen = [f"min {finite.min().item():g}, max {finite.max().item():g}"] if finite.numel() else []
        seen += [f"{int(nan.sum())} NaN"] if nan.any() else []
        raise ValueError(f"{what} must lie in [0, 1] with no NaN; got {' and '.join(seen)}")


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

    def __call__(self, counter: torch.Tensor) -> None:
        if torch.compiler.is_compiling():
            return  # a host read would break the graph; the counter still counts
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
