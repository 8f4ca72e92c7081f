"""BalanceMM's own entry point, ``python -m balancemm``, run in-process with its resolved config overridden.

``balancemm/__main__.py`` builds the whole configuration (``configs/*.yaml``, then its CLI) and hands
it to ``balancemm.train.train_and_test``; no flag sets the data paths, epochs, batch size, workers,
fusion or output folder. :func:`run_module` therefore wraps that one function — the only seam where
the fully resolved config can be changed — applies :class:`Overrides`, and runs the package's
``__main__`` unchanged through :func:`runpy.run_module`, from the checkout's root as the README does.
Everything it touches (``sys.argv``, ``sys.path``, the cwd, the wrapped function, the log handlers
the run adds) is restored afterwards.

:func:`read_training_log` reads back what the upstream itself logs (``training.log``): per-epoch
train and validation accuracy and macro-F1, fused and per modality, the validation loss, the
Shapley values of the best model and its test metrics.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import runpy
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .balancemm_synth import dataset_paths

#: The fusion names BaseClassifierModel builds (``avclassify_model.py``); sum, film and gated need
#: patch 0006 (at the pin their forward raises TypeError).
FUSIONS = ("concat", "sum", "film", "gated", "shared")


@dataclass(frozen=True)
class Overrides:
    """What a run sets in BalanceMM's resolved config (None: leave the upstream's value).

    out_dir: where ``training.log``, ``logs/`` and ``checkpoints/`` go (required: the upstream's own
        default is inside the checkout, which is read-only for runs).
    data: a folder written by :func:`~simam2.adapters.balancemm_synth.write_cremad`.
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


@contextlib.contextmanager
def _saved_process_state(checkout: Path, argv: Sequence[str]) -> Iterator[None]:
    saved_argv, saved_path, saved_cwd = sys.argv[:], sys.path[:], os.getcwd()
    saved_env = {k: os.environ.get(k) for k in ("PYTHONPATH", "http_proxy", "https_proxy", "CUDA_VISIBLE_DEVICES")}
    saved_bytecode = sys.dont_write_bytecode
    try:
        sys.argv = ["balancemm", *argv]
        sys.path.insert(0, str(checkout))
        sys.dont_write_bytecode = True  # the cached checkout stays as vendor_fetch made it
        os.chdir(checkout)  # __main__ puts the cwd on PYTHONPATH: the README runs it from the root
        yield
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        sys.dont_write_bytecode = saved_bytecode
        os.chdir(saved_cwd)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_module(checkout: Path | str, argv: Sequence[str], overrides: Overrides,
               before: Callable[[dict], None] | None = None,
               context: Callable[[], contextlib.AbstractContextManager] | None = None) -> Path:
    """Run ``python -m balancemm ARGV`` from ``checkout`` in this process with ``overrides``; returns
    the run's ``training.log``.

    ``before`` is called with the resolved config after the overrides (a hook for adapters);
    ``context()`` is entered once the checkout is importable and left after the run (an adapter's
    replacements, e.g. :func:`~simam2.adapters.balancemm_layers.installed`). The
    ``balancemm`` package stays imported afterwards, so that a second run in the same process sees
    the same module objects; the handlers its logger gained are closed and removed.
    """
    checkout = Path(checkout).absolute()
    if not (checkout / "balancemm" / "__main__.py").is_file():
        raise FileNotFoundError(f"no balancemm/__main__.py under {checkout}")
    out_dir = Path(overrides.out_dir).absolute()
    with _saved_process_state(checkout, argv):
        import balancemm.train as train  # after the checkout is on sys.path

        original = train.train_and_test
        run_logger = logging.getLogger("balancemm.train")
        handlers = list(run_logger.handlers)

        def train_and_test(config: dict):
            overrides.apply(config)
            if before is not None:
                before(config)
            return original(config)

        train.train_and_test = train_and_test
        try:
            with context() if context is not None else contextlib.nullcontext():
                runpy.run_module("balancemm", run_name="__main__", alter_sys=True)
        finally:
            train.train_and_test = original
            for handler in run_logger.handlers[:]:
                if handler not in handlers:
                    handler.close()
                    run_logger.removeHandler(handler)
            if not overrides.keep_checkpoint:
                shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    return out_dir / "training.log"


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
