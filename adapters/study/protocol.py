"""The study protocols: SPEC §9's (``tuned``, the default) and the earlier fixed recipe (``fixed``).

SPEC §9 was fixed before any result was seen; this module only writes it down. Every row — method ×
reading × fusion × regime — gets the same grid of settings (lr, and α for the modulated rows), each
setting trained with two tuning seeds and early stopping on the validation split; the setting with
the best mean validation accuracy is chosen (:func:`select`), and the final runs, with fresh seeds,
use it. The test split is read once per final run and never for a choice.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .train import Recipe


@dataclass(frozen=True)
class Protocol:
    """How a study trains and chooses. ``lrs`` × ``alphas`` (modulated rows) × ``tuning_seeds`` is
    each row's tuning grid; ``seeds`` the final runs' seeds (disjoint from the tuning seeds)."""

    name: str
    max_epochs: int
    seeds: tuple[int, ...]
    lrs: tuple[float, ...] = ()
    alphas: tuple[float, ...] = ()
    tuning_seeds: tuple[int, ...] = ()
    patience: int | None = None
    lr_step: int | None = None
    modulate: str = "all"
    batch: int = 64
    lr: float = 0.01      # the fixed protocol's one lr and α
    alpha: float = 0.1

    def __post_init__(self):
        if set(self.seeds) & set(self.tuning_seeds):
            raise ValueError(f"final seeds {sorted(set(self.seeds) & set(self.tuning_seeds))} are tuning seeds too")
        if self.max_epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.max_epochs}")

    @property
    def tuned(self) -> bool:
        return bool(self.lrs)

    def settings(self, modulated: bool) -> list[tuple[float, float | None]]:
        """The grid of one row: (lr, α) pairs; α is None for a row without modulation."""
        alphas = self.alphas if modulated else (None,)
        return [(lr, a) for lr in self.lrs for a in alphas]

    def recipe(self, lr: float | None = None, alpha: float | None = None, score_test: bool = True) -> Recipe:
        if not self.tuned:
            return Recipe(epochs=self.max_epochs, batch=self.batch, lr=self.lr, alpha=self.alpha)
        return Recipe(epochs=self.max_epochs, batch=self.batch, lr=lr, alpha=self.alpha if alpha is None else alpha,
                      patience=self.patience, lr_step=self.lr_step, modulate=self.modulate,
                      score_test=score_test)

    def plain(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def spec9(dataset: str) -> Protocol:
    """SPEC §9 as written: mfeat E_max 100 and 10 final seeds, AV digits E_max 40 and 5; lr × 0.1 at
    70 % of E_max; patience 10; lr ∈ {0.003, 0.01, 0.03, 0.1}, α ∈ {0.1, 0.8}; tuning seeds 1000, 1001."""
    e_max, n = {"mfeat": (100, 10), "avdigits": (40, 5)}[dataset]
    return Protocol("tuned", e_max, tuple(range(n)), (0.003, 0.01, 0.03, 0.1), (0.1, 0.8), (1000, 1001),
                    patience=10, lr_step=int(round(0.7 * e_max)), modulate="weights")


def quick(dataset: str) -> Protocol:
    """Every number of SPEC §9 shrunk, the structure kept (tests, a first look: minutes)."""
    return Protocol("tuned-quick", {"mfeat": 12, "avdigits": 3}[dataset], (0, 1), (0.01, 0.1), (0.8,), (1000,),
                    patience=3, lr_step={"mfeat": 8, "avdigits": 2}[dataset], modulate="weights")


#: the earlier recipe, one lr for every row, the last epoch scored (old numbers stay reproducible)
FIXED = {"mfeat": dict(max_epochs=20, lr=0.01), "avdigits": dict(max_epochs=5, lr=0.05)}
FIXED_QUICK_EPOCHS = {"mfeat": 8, "avdigits": 2}


def fixed(dataset: str, seeds: int = 5, epochs: int | None = None) -> Protocol:
    opts = dict(FIXED[dataset])
    if epochs is not None:
        opts["max_epochs"] = epochs
    return Protocol("fixed", seeds=tuple(range(seeds)), **opts)


def select(scores: dict[tuple[float, float | None], list[float]]) -> dict:
    """The setting with the best mean validation accuracy over the tuning seeds (SPEC §9); a tie
    keeps the first in grid order. ``scores``: setting -> the tuning runs' best validation accuracies.
    Returns {"lr", "alpha", "val_acc", "n", "scores": {setting: mean}}."""
    best, best_mean = None, -math.inf
    means = {}
    for setting, values in scores.items():
        mean = sum(values) / len(values) if values else -math.inf
        means[setting] = mean
        if mean > best_mean:
            best, best_mean = setting, mean
    if best is None:
        raise ValueError("no tuning run to select from")
    return {"lr": best[0], "alpha": best[1], "val_acc": best_mean, "n": len(scores[best]),
            "scores": {f"lr={lr:g}" + ("" if a is None else f",alpha={a:g}"): m for (lr, a), m in means.items()}}
