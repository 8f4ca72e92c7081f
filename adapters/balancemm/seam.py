"""The one seam of BalanceMM's resolved config, and what its runs log.

``balancemm/__main__.py`` builds the whole configuration (``configs/*.yaml``, then its CLI) and hands
it to ``balancemm.train.train_and_test``; no flag sets the data paths, epochs, batch size, workers,
fusion or output folder. The spec replaces that one function — the only place where the fully
resolved config can be changed — by one that applies :class:`Overrides` first.

:func:`read_training_log` reads back what the upstream itself logs (``training.log``): per-epoch
train and validation accuracy and macro-F1, fused and per modality, the validation loss, the
Shapley values of the best model and its test metrics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .synth import dataset_paths

#: The fusion names BaseClassifierModel builds (``avclassify_model.py``); sum, film and gated need
#: patch 0006 (at the pin their forward raises TypeError).
FUSIONS = ("concat", "sum", "film", "gated", "shared")


@dataclass(frozen=True)
class Overrides:
    """What a run sets in BalanceMM's resolved config (None: leave the upstream's value).

    out_dir: where ``training.log``, ``logs/`` and ``checkpoints/`` go (required: the upstream's own
        default is inside the checkout, which is read-only for runs).
    data: a folder written by :func:`~simam2.adapters.balancemm.synth.write_cremad`.
    epochs: the trainer's ``max_epochs``; batch_size: per-device batch; workers: loader processes
        (0 loads in-process; pin_memory follows the device).
    fusion: one of :data:`FUSIONS`.
    trainer: values merged into the trainer's own block (``alpha``, ``modulation_starts``, …: the
        CLI sets only some of them).
    keep_checkpoint: the upstream saves the best model (257 MB with ResNet18s and AdamW state) and
        reloads it for the test; False removes ``checkpoints/`` once the run is over.
    """

    out_dir: Path
    data: Path | None = None
    epochs: int | None = None
    batch_size: int | None = None
    workers: int | None = None
    fusion: str | None = None
    trainer: dict | None = None
    keep_checkpoint: bool = False

    def __post_init__(self) -> None:
        if self.fusion is not None and self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be non-negative, got {self.workers}")

    def apply(self, config: dict) -> dict:
        """Set these values in ``config`` (the dict ``train_and_test`` receives), in place; returns it."""
        config["out_dir"] = str(Path(self.out_dir).absolute())
        if self.data is not None:
            config["dataset"].update(dataset_paths(self.data))
        if self.epochs is not None:
            config["trainer"]["base_para"]["max_epochs"] = self.epochs
            config["train"]["parameter"]["total_epoch"] = self.epochs
        if self.batch_size is not None:
            config["dataloader"]["batch_size"] = self.batch_size
        if self.workers is not None:
            config["dataloader"]["num_workers"] = self.workers
        if config["Main_config"]["device"] == "cpu":
            config["dataloader"]["pin_memory"] = False
        if self.fusion is not None:
            config["model"]["fusion"] = self.fusion
        if self.trainer:
            config["trainer"].update(self.trainer)
        return config


_PAIR = re.compile(r"(\w+): (-?[0-9][0-9.e+-]*|nan|inf)")
_SHAPLEY = re.compile(r"'(\w+)': (?:np\.float64\()?(-?[0-9][0-9.e+-]*)")


def read_training_log(path: Path | str) -> dict:
    """What the upstream logged: ``{"train": [...], "valid": [...], "shapley": {...}, "test": {...}}``.

    Each train/valid entry maps the upstream's own names (``train_acc``/``valid_acc``, ``…_f1``,
    ``valid_loss``, ``acc_<modality>``, ``f1_<modality>``) to floats; ``test`` likewise
    (``test_acc``, ``test_f1``, …); ``shapley`` maps each modality to its Shapley value. Floats are
    parsed from the upstream's full ``repr``, so two equal logs give bitwise-equal numbers.
    """
    out: dict = {"train": [], "valid": [], "shapley": {}, "test": {}}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        message = line.split(" - INFO - ", 1)[-1]
        if message.startswith(("train_acc:", "valid_acc:", "test_acc:")):
            values = {k: float(v) for k, v in _PAIR.findall(message)}
            kind = message.split("_", 1)[0]
            if kind == "test":
                out["test"] = values
            else:
                out[kind].append(values)
        elif message.startswith("defaultdict(<class 'float'>"):
            out["shapley"] = {k: float(v) for k, v in _SHAPLEY.findall(message)}
    return out
