"""Per-modality outputs by mean ablation at the fusion input (SPEC §8), for any fusion.

The metric of modality 1 alone is the metric of the model's output when modality 2's fusion input
is replaced by its mean, and the other way round: ``head(x1, mean(x2))`` and ``head(mean(x1), x2)``,
where ``head`` is everything from the fusion inputs to the model's output (the fusion and the
classifier after it). A mean, not zeros: a constant zero input is a degenerate case for SimAM²'s
statistics (its variance terms vanish) and far from anything the network saw in training, so it
would measure the network's reaction to an impossible input rather than what the other modality
contributes.

Which mean: the mean over the batch dimension (one value per feature, keeping every other
dimension) of the fusion inputs of the **last training epoch**, kept as a running sum on the device
while that epoch trains (one reduction per step, no host sync). A run that evaluates without having
trained (an evaluation-only script) uses the mean over the evaluation set itself, computed after the
pass from the kept inputs; the ``eval`` record says which (``ablation_mean``: ``train`` or ``eval``).

The fused output is never touched: the ablated forwards run after it, without gradients, in eval
mode, and the plain tensor attributes a fusion keeps of its last forward (SimAM²'s ``weights``,
``r``) are put back afterwards, so whatever reads them sees the fused forward's.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

Head = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SOURCES = ("train", "eval")


@contextlib.contextmanager
def restored_attributes(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Put back, on leaving, every plain attribute of the modules' submodules that holds a tensor
    or None (what a module keeps of its last forward); parameters and buffers are not attributes
    of this kind, and in eval mode nothing here changes them."""
    saved = []
    for module in modules:
        for m in module.modules():
            for name, value in vars(m).items():
                if value is None or torch.is_tensor(value):
                    saved.append((m, name, value))
    try:
        yield
    finally:
        for m, name, value in saved:
            object.__setattr__(m, name, value)


class RunningMean:
    """The running mean over the batch dimension of one stream's tensors, on the stream's device."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach()
        part = x.sum(0, dtype=torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else None)
        if self.total is None or self.total.shape != part.shape:
            if self.total is not None:  # inputs changed shape within an epoch: restart from these
                self.count = 0
            self.total = part.clone()
        else:
            self.total += part
        self.count += x.shape[0]  # a Python int from the shape: no sync

    def mean(self) -> torch.Tensor | None:
        return None if self.total is None or self.count == 0 else self.total / self.count


def _like(mean: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if mean.shape != x.shape[1:]:
        raise ValueError(f"the mean fusion input has shape {tuple(mean.shape)}, this batch's inputs "
                         f"{tuple(x.shape[1:])} per sample")
    return mean.to(device=x.device, dtype=x.dtype).expand_as(x)


class MeanAblation:
    """Collects per-modality outputs of evaluation passes by mean ablation (see the module docstring).

    ``observe_training(x1, x2)`` at each training forward; ``start_training()`` when an epoch
    starts (``train()``), ``end_training()`` when it ends (``eval()``): the epoch's mean becomes the
    one used. ``evaluate(head, x1, x2)`` at each evaluation forward, after the fused output;
    ``take(head)`` at the end of the pass returns ``(outputs of modality 1 alone, of modality 2
    alone, source)`` as an :class:`Alone`, each concatenated over the pass's batches in order.
    """

    def __init__(self, preserve: Sequence[nn.Module] = ()) -> None:
        self.preserve = list(preserve)
        self._running = (RunningMean(), RunningMean())
        self.means: tuple[torch.Tensor, torch.Tensor] | None = None
        self._alone: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        self._kept: list[tuple[torch.Tensor, torch.Tensor]] = []
        #: why this pass has no per-modality outputs (None while it has)
        self.why: str | None = None

    # -- training: the mean of the last epoch ----------------------------------------------------

    def start_training(self) -> None:
        self._running = (RunningMean(), RunningMean())

    def observe_training(self, x1: torch.Tensor, x2: torch.Tensor) -> None:
        with torch.no_grad():
            self._running[0].add(x1)
            self._running[1].add(x2)

    def end_training(self) -> None:
        m1, m2 = (r.mean() for r in self._running)
        if m1 is not None and m2 is not None:
            self.means = (m1, m2)

    # -- evaluation ------------------------------------------------------------------------------

    def _run(self, head: Head, x1, x2, means) -> None:
        with torch.no_grad(), restored_attributes(self.preserve):
            self._alone[0].append(head(x1, _like(means[1], x2)).detach())
            self._alone[1].append(head(_like(means[0], x1), x2).detach())

    def evaluate(self, head: Head, x1: torch.Tensor, x2: torch.Tensor) -> None:
        """One evaluation batch's fusion inputs (modality 1 first), after its fused forward.
        ``head(x1, x2)`` is the model's output from fusion inputs, batch first."""
        if self.why is not None:
            return
        if self.means is None:  # no training mean: keep the inputs, ablate with the evaluation set's mean
            self._kept.append((x1.detach(), x2.detach()))
            return
        try:
            self._run(head, x1, x2, self.means)
        except ValueError as e:  # inputs whose shape differs from training's: no per-modality metric
            self.why = str(e)

    def take(self, head: Head) -> "Alone":
        """The pass's per-modality outputs and which mean made them (or why there are none);
        resets for the next pass."""
        source = "train" if self._alone[0] else None
        if self._kept and self.why is None:
            running = (RunningMean(), RunningMean())
            for x1, x2 in self._kept:
                running[0].add(x1)
                running[1].add(x2)
            means = (running[0].mean(), running[1].mean())
            if any(running[i].count != sum(k[i].shape[0] for k in self._kept) for i in (0, 1)):
                self.why = "the evaluation's fusion inputs change shape between batches"
            else:
                for x1, x2 in self._kept:
                    self._run(head, x1, x2, means)
                source = "eval"
        if self.why is not None or not self._alone[0]:
            out = Alone(None, None, None, self.why or "no evaluation batch reached the fusion")
        else:
            out = Alone(torch.cat(self._alone[0]), torch.cat(self._alone[1]), source, None)
        self._alone, self._kept, self.why = ([], []), [], None
        return out


@dataclass(frozen=True)
class Alone:
    """One evaluation pass's outputs with modality 1 alone (``m1``) and 2 alone (``m2``), in batch
    order; ``source`` of the mean (``train`` or ``eval``); ``why`` there are none (else None)."""

    m1: torch.Tensor | None
    m2: torch.Tensor | None
    source: str | None
    why: str | None


__all__ = ["MeanAblation", "Alone", "RunningMean", "restored_attributes", "SOURCES"]
