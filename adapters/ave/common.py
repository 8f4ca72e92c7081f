"""What the AVE specs (AVGA, PSP) share: segment labels, evaluation scoring, input checks, CLI.

Both upstreams localise events in AVE: 10 one-second segments per video, 29 classes (28 events and
background), two streams (audio, visual) of per-segment embeddings that a late fusion combines before
a two-layer head. The specs (:mod:`.avga`, :mod:`.psp`) replace the upstream model classes by
subclasses that feed the run's probe; the probe counts epochs, computes OGM-GE's decoupled ratio at
the criterion (which also gives the segment labels) from the spec's per-modality logits, drives
core's GradientModulator (``ogm-ge``: the decoupled ratio; ``df``: Eq. 11) on the parameter groups
the spec names as each modality's encoder, and records both ratios and the coefficients per step.
Each evaluation (the scripts' ``val()`` / ``test()``) is scored exactly as the scripts'
``compute_acc``.

Modality 1 is audio throughout: ζ is audio's weight, ``rho_df`` = Σζ / Σ(1 − ζ),
``rho_decoupled`` = score_audio / score_visual.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..machinery import AdapterError, Modulation, Spec, groups_by_prefix, option_value
from .synth import EVAL_BATCH, AveInputError, check_inputs, write_synthetic_ave


def segment_accuracy(outputs: np.ndarray, labels: np.ndarray, n: int) -> float:
    """The scripts' ``compute_acc``: the fraction of the first ``n`` videos' segments whose argmax
    over classes agrees with the one-hot label's."""
    pred = outputs[:n].argmax(-1)
    true = labels[:n].argmax(-1)
    return float((pred == true).mean())


class SegmentScorer:
    """An evaluation set handed out its batch (``expect``): the next eval-mode forward of the model is
    scored against it (``score``) and recorded as one ``eval`` record."""

    def __init__(self, probe):
        self.probe = probe
        self.pending: tuple[str, np.ndarray, int] | None = None  # (split, one-hot labels, videos)

    def expect(self, split: str, labels: np.ndarray, n_videos: int) -> None:
        self.pending = (split, np.array(labels, copy=True), n_videos)

    def score(self, outputs: torch.Tensor) -> None:
        if self.pending is None:
            self.probe.modality_metrics(lambda out: {})  # an unscored pass: forget its per-modality outputs
            return
        split, labels, n = self.pending
        self.pending = None
        acc = segment_accuracy(outputs.detach().float().cpu().numpy(), labels, n)

        def alone(out: torch.Tensor) -> dict:
            return {"acc": segment_accuracy(out.float().cpu().numpy(), labels, n)}

        self.probe.record_eval(split, n, acc=acc, **self.probe.modality_metrics(alone))


class AveSpec(Spec):
    """Common declarations of the AVGA and PSP specs; subclasses supply the specifics.

    Subclass attributes: ``encoder_prefixes`` (each modality's encoder parameter names),
    ``label_option`` / ``label_default`` (the script's label file option), ``model_default`` and
    ``model_names`` (--model_name values the SimAM² replacement covers), ``batch_default``.
    """

    modalities = ("audio", "visual")
    metrics = ("acc",)
    primary = "acc"
    encoder_prefixes: dict[str, tuple[str, ...]] = {}
    label_option = "--dir_labels"
    label_default = "data/labels.h5"
    model_default = ""
    model_names: tuple[str, ...] = ()
    batch_default = 64

    def groups(self, model):
        return groups_by_prefix(model, self.encoder_prefixes)

    def fusion(self, model):
        return getattr(model, "simam2", None)

    def upstream_options(self, run, model):
        return {"train": "--train" in run.argv, "model_name": option_value(run.argv, "--model_name", self.model_default)}

    def needed_orders(self, train: bool) -> list[str]:
        raise NotImplementedError

    # -- inputs ----------------------------------------------------------------------------------

    def validate(self, run, argv: Sequence[str], cwd: Path) -> None:
        """Check the h5 files the script will read and the working directory it will write to."""
        cwd = Path(cwd).resolve()
        config = run.config
        if run.script != self.script:
            if config.simam2 or Modulation.of(config).on:
                raise AdapterError(f"{self.name}: SimAM² and modulation are wired into {self.script} only, "
                                   f"not {run.script}")
            return  # another script of the checkout, run as is
        if cwd == run.checkout or run.checkout in cwd.parents:
            raise AdapterError(f"{self.name}: run in an output folder of its own, not inside the upstream "
                               f"checkout {run.checkout} (the script writes checkpoints to its working directory)")
        model_name = option_value(argv, "--model_name", self.model_default)
        if (config.simam2 or Modulation.of(config).on) and model_name not in self.model_names:
            raise AdapterError(f"{self.name}: SimAM² and modulation are placed in {', '.join(self.model_names)}; "
                               f"--model_name {model_name} has no such fusion")
        train = "--train" in argv

        def path(option: str, default: str) -> Path:
            p = Path(option_value(argv, option, default))
            return p if p.is_absolute() else cwd / p

        files = {
            "visual": ("--dir_video", path("--dir_video", "data/visual_feature.h5")),
            "audio": ("--dir_audio", path("--dir_audio", "data/audio_feature.h5")),
            "labels": (self.label_option, path(self.label_option, self.label_default)),
        }
        orders = {s: (f"--dir_order_{s}", path(f"--dir_order_{s}", f"data/{s}_order.h5"))
                  for s in self.needed_orders(train)}
        batch = int(option_value(argv, "--batch_size", self.batch_default))
        try:
            check_inputs(files, orders, {"train": batch, "val": EVAL_BATCH, "test": EVAL_BATCH})
            check_eval_orders(orders)
            self.check_more(argv, cwd, train, batch, orders)
        except AveInputError as e:
            raise AdapterError(f"{self.name}: {self.script}: {e}") from None

    def check_more(self, argv, cwd: Path, train: bool, batch: int, orders: dict) -> None:
        """Script-specific checks and preparations (subclasses)."""

    # -- CLI -------------------------------------------------------------------------------------

    def add_arguments(self, parser) -> None:
        g = parser.add_argument_group(self.name.upper())
        g.add_argument("--data", type=Path, default=None,
                       help="an AVE folder as `simam2 synth` writes it: sets the script's --dir_* options "
                            "(arguments after -- still win)")

    def upstream_argv(self, config, ns=None) -> list[str]:
        data = getattr(ns, "data", None)
        return data_args(Path(data).absolute(), self.label_option, Path(self.label_default).name) if data else []

    def workdir_for(self, ns) -> Path | None:
        """The script writes checkpoints to its working directory: create ``--workdir`` if needed."""
        if ns.workdir is not None:
            Path(ns.workdir).mkdir(parents=True, exist_ok=True)
        return ns.workdir

    def synth(self, out_dir, **kwargs) -> Path:
        """A tiny AVE set in the upstream's format (see :func:`.synth.write_synthetic_ave`)."""
        return write_synthetic_ave(out_dir, **kwargs)


def check_eval_orders(orders: dict) -> None:
    """val()/test() score exactly len(order) videos of a 402-video batch: more than 402 fails."""
    import h5py

    for split in ("val", "test"):
        if split in orders:
            option, p = orders[split]
            with h5py.File(p, "r") as hf:
                n = hf["order"].shape[0]
            if n != EVAL_BATCH:
                raise AveInputError(f"{option} {p}: {n} entries; the script evaluates one batch of "
                                    f"exactly {EVAL_BATCH} videos (repeat entries to reach it)")


def data_args(data: Path, labels_option: str, labels_file: str) -> list[str]:
    """The scripts' data options for a folder written by :func:`write_synthetic_ave`."""
    data = Path(data)
    return ["--dir_video", str(data / "visual_feature.h5"), "--dir_audio", str(data / "audio_feature.h5"),
            labels_option, str(data / labels_file),
            "--dir_order_train", str(data / "train_order.h5"), "--dir_order_val", str(data / "val_order.h5"),
            "--dir_order_test", str(data / "test_order.h5")]
