"""FOP (msaadsaeed/FOP, "Fusion and Orthogonal Projection for Improved Face-Voice Association"):
declared: SimAM² in its fusion layer, decoupling-free modulation of its two branches, records.

The upstream's own ``main.py`` (training, with its online evaluation) and ``test.py`` (evaluation
of a checkpoint) run unchanged, after ``patches/fop``. Installing the spec replaces, where
``retrieval_model.py`` and ``online_evaluation.py`` look them up:

- ``FOP`` by a subclass that registers itself with the run and counts its epochs (always);
- with ``simam2`` off, ``GatedFusion`` by a subclass whose output is the upstream's and that keeps
  the sums of FOP's gate, so that Eq. 11's ρ of FOP's own gate is recorded too;
- ``online_evaluation.test`` by a wrapper that records each online evaluation's EER and AUC, as the
  upstream computes them (always; it returns what the upstream returns);
- with ``simam2`` on, ``GatedFusion`` and ``LinearWeightedAvg`` by SimAM² subclasses (SPEC §2, §4):

  ===============  ============================  =========================================
  upstream fusion  X1, X2                        ζ
  ===============  ============================  =========================================
  GatedFusion      tanh(face), tanh(voice)       ``given``: FOP's own gate g (default);
                                                 ``fixed`` 0.5 or ``learnable`` also work
  LinearWeighted…  weight1·face, weight2·voice   ``fixed`` or ``learnable``
  ===============  ============================  =========================================

  FOP's gate, ``g = sigmoid(attention(concat(face, voice)))``, is already the weight of the face
  in ``g·face + (1 − g)·voice``: one value per sample and channel, a ζ in the sense of Eq. 4. The
  SimAM² gated fusion overrides only the ``fuse`` seam (patch 0005) that receives the upstream's
  tanh'ed embeddings and its gate; the gate's layers, its computation and its training stay FOP's.
  The evaluation reads the face and voice embeddings the fusion returns, not the fused vector,
  so SimAM² acts on what training learns (cross-entropy and orthogonal projection on the fused
  vector), not on how pairs are scored.

Parameters the spec adds (the learnable ζ gate, SPEC §2) are not in the parameter groups that
``main.py`` hands to its Adam; the run's probe adds them as one more group, with the optimizer's
defaults (main.py's ``--lr`` and weight decay 0.01), before the first step.

Decoupling-free modulation (``modulation="df"``, Eq. 11): core's
:class:`~simam2.core.GradientModulator` over the face branch (modality 1: ζ is the face's weight)
and the voice branch, every parameter of each, hooked before each optimizer step.

Epochs: ``main.py`` calls ``model.train()`` before every batch and ``model.eval()`` once per epoch,
in its online evaluation; the epoch (0-based) is the number of evaluations so far.

Working directories (:mod:`.checks`): the scripts read ``features/*.csv`` and write ``output/``
and checkpoint folders relative to the working directory; ``--data`` prepares one from a dataset
folder. Nothing is written into the checkout.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..machinery import AdapterError, Modulation, Replacement, Spec, option_value
from . import layers
from .checks import (READ_SPLIT, SPLITS_HELP, csv_shape, prepare_workdir, validate_features, validate_imports,
                     validate_main_args)
from .synth import SPLITS, TRAIN_FILES, write_fop

EVAL_SCRIPT = "test.py"


class FopSpec(Spec):
    """FOP's ``main.py`` and ``test.py`` (Table 3: face–voice association, EER / AUC)."""

    name = "fop"
    upstream = "fop"
    script = "main.py"
    distributed = ("FOP's main.py neither wraps its model in nn.DataParallel nor batches through a DataLoader "
                   "(its get_batch slices in-memory feature arrays): there is nothing for DDP and a "
                   "DistributedSampler to take over")
    modalities = ("face", "voice")
    metrics = ("eer", "auc")
    primary = "eer"
    higher_is_better = False
    no_mean_ablation = ("FOP's verification compares the face and voice embeddings that enter the fusion, so a "
                        "branch alone has no score of its own")
    zeta_modes = ("fixed", "learnable", "given")
    default_zeta = "given"
    epoch_source = "evaluations"
    criterion = nn.CrossEntropyLoss  # main.py's ce_loss on the fused logits: the records' ``loss`` (CE part)

    def replacements(self, run) -> list[Replacement]:
        import online_evaluation
        import retrieval_model

        if Modulation.of(run.config).decoupled:
            raise AdapterError("FOP has no per-modality classifier to split for OGM-GE's decoupled ratio: "
                               "use --modulation df (ζ = FOP's gate) or none")
        reps = [
            Replacement("retrieval_model", "FOP", layers.recording_fop_class(retrieval_model, run)),
            Replacement("online_evaluation", "test", layers.recording_online_test(online_evaluation.test, run)),
        ]
        if run.config.simam2:
            reps += [Replacement("retrieval_model", attr, cls)
                     for attr, cls in layers.simam2_fusion_classes(retrieval_model, run.config).items()]
        else:
            reps.append(Replacement("retrieval_model", "GatedFusion", layers.recording_gated_class(retrieval_model)))
        return reps

    # -- where things are ------------------------------------------------------------------------

    def groups(self, model):
        return {"face": list(model.face_branch.parameters()), "voice": list(model.voice_branch.parameters())}

    def fusion(self, model):
        return getattr(model.fusion_layer, "simam2", None)

    def zeta_sums(self, model):
        """SimAM²'s weight sums, or FOP's own gate's (SimAM² off): Eq. 11's ρ is recorded for both."""
        fusion = self.fusion(model)
        if fusion is not None:
            return fusion.weight_sums
        return getattr(model.fusion_layer, "gate_sums", None)

    def labels(self, probe, args):
        return args[1] if len(args) >= 2 and torch.is_tensor(args[1]) else None

    def zeta(self, model):
        fusion = self.fusion(model)
        if fusion is not None:
            return fusion.zeta
        return getattr(model.fusion_layer, "gate", None)

    # -- a run's life ----------------------------------------------------------------------------

    def on_start(self, run) -> None:
        # main.py sets CUDA_VISIBLE_DEVICES for its own process; do not leak it into ours
        saved = os.environ.get("CUDA_VISIBLE_DEVICES")

        def restore_env():
            if saved is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = saved

        run.add_cleanup(restore_env)
        run.add_cleanup(_close_figures)

    def upstream_options(self, run, model):
        return {"fusion": model.args.fusion, "dim_embed": model.args.dim_embed}

    def validate(self, run, argv: Sequence[str], cwd: Path) -> None:
        training = run.script == self.script
        validate_imports(run.script)
        validate_features(cwd, training)
        if training:
            rows, _ = csv_shape(Path(cwd) / "features" / TRAIN_FILES[0])
            validate_main_args(argv, rows)
        else:
            ckpt = Path(cwd) / option_value(argv, "--ckpt", "checkpoint.pth.tar")
            if not ckpt.is_file():
                raise AdapterError(f"test.py loads --ckpt {ckpt}, which does not exist")

    # -- the command line ------------------------------------------------------------------------

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("FOP", "With --simam2, ζ is FOP's own gate unless --zeta says otherwise.")
        g.add_argument("--evaluate", action="store_true",
                       help="run test.py (evaluate -- --ckpt PATH --fusion F) instead of main.py")
        g.add_argument("--data", type=Path, default=None,
                       help="dataset folder (simam2 synth fop DIR); the working directory is prepared from it")
        g.add_argument("--split", choices=SPLITS, default=READ_SPLIT, help=SPLITS_HELP)

    def script_for(self, ns) -> str:
        return EVAL_SCRIPT if ns.evaluate else self.script

    def workdir_for(self, ns) -> Path | None:
        if ns.data is None:
            if ns.split != READ_SPLIT:
                raise AdapterError("--split needs --data: the working directory is prepared from the dataset folder")
            return ns.workdir
        if ns.workdir is None:
            raise AdapterError("--data needs --workdir: where to prepare the working directory")
        return prepare_workdir(ns.data, ns.workdir, ns.split)

    def synth(self, out_dir, **kwargs) -> Path:
        """Write a tiny synthetic face–voice dataset (see :mod:`.synth`) to ``out_dir``."""
        return write_fop(out_dir, **kwargs)


def _close_figures() -> None:
    """main.py draws into pyplot figures 1–3 and never closes them: a second run in this process would
    draw over the first one's curves."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close("all")


SPEC = FopSpec()
