"""AVGA (YapengTian/AVE-ECCV18, the A+V-att model): SimAM² in its late fusion, OGM-GE and
decoupling-free modulation, records.

The upstream's own ``supervised_main.py --model_name AV_att`` runs unchanged (after
``patches/avga``: CPU device, pickled-checkpoint load, and the seam ``att_Net.fuse`` — the
concatenation of the audio and visual BiLSTM outputs, moved unchanged out of ``forward``).
Installing the spec replaces:

- ``models.att_Net`` by ``AdaptedAttNet``, a subclass that keeps the upstream's layers and, with
  ``simam2`` on, adds one :class:`~simam2.core.ConcatFusion` as ``self.simam2`` and overrides the
  seam ``fuse``: X1 = [a ; 0], X2 = [0 ; v] per segment (SPEC §4, concatenation in its padded form,
  so the fused vector keeps the width 512 and ``L1`` stands). Each segment is one sample whose 512
  features are its neurons (the streams are viewed as (B·10, 256)); ζ is (B·10, 512): fixed 0.5 or
  the learnable gate. With SimAM² off, ``fuse`` is the upstream's.
- ``dataloader.AVEDataset`` by a subclass that tells the run when an epoch starts (the training
  set's first batch: ``train()`` asks for batch 0 once per epoch) and which labels the next
  evaluation forward is scored against (``val()`` in a ``--train`` run, ``test()`` otherwise).

Two traps of the script, and what the adapter does about them:

- ``val()`` calls ``net_model.eval()`` and nothing calls ``.train()`` again, so every epoch after
  the first would train in eval mode. AV_att has no dropout or batch norm, so no upstream number
  depends on the mode, but SimAM²'s ``var_max`` grows in training mode only. ``zero_grad()``, which
  the script calls only in its training loop, puts the model back in training mode.
- ``torch.save(net_model, 'model/<name>.pt')`` pickles the whole model: ``AdaptedAttNet`` is
  published as ``simam2.adapters.ave.avga.AdaptedAttNet`` so that the checkpoint pickles and a later
  run (``supervised_main.py`` without ``--train``, adapter installed) loads it. The spec creates
  ``model/`` in the run's working directory and refuses to run inside the checkout.

Modality encoders (the parameters OGM-GE's coefficients scale; OGM-GE modulates each modality's
encoder, the layers that see one modality only, before the fusion):

- audio: ``lstm_audio.*`` (the audio BiLSTM; audio features enter as given);
- visual: ``lstm_video.*``, ``affine_video.*``, ``affine_v.weight``, ``affine_h.weight`` (the
  visual BiLSTM and the visual side of the attention over the 7 × 7 positions).

Left out: ``affine_audio.*`` and ``affine_g.weight``, the audio guidance of the visual attention —
audio input, but they reach the loss only through the visual stream, so scaling them by audio's
coefficient would modulate the visual path; and the head ``L1``, ``L2`` (fused, as in OGM-GE).

OGM-GE's decoupled ratio (``modulation="ogm-ge"``): the head is ``softmax(L2(relu(L1(relu([a ; v])))))``.
As OGM-GE splits its concatenation classifier (each half of the weight with half the bias), each
modality's logits are the head with only its half of ``L1``'s input weight and half of each bias:
``out_a = L2(relu(L1.W[:, :256] relu(a) + L1.b / 2)) + L2.b / 2``, ``out_v`` likewise with
``L1.W[:, 256:]``. score_m = Σ over segments of softmax(out_m) at the segment's class (SPEC §6).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from simam2.core import ConcatFusion

from ..machinery import Replacement, option_value
from ..machinery.layers import InitShim, allow_checkpoints, named, publish
from .common import AveSpec, SegmentScorer
from .synth import AveInputError


def adapted_att_net(models, spec: "AvgaSpec", run, scorer: SegmentScorer) -> type:
    """``AdaptedAttNet``: the upstream ``att_Net`` with SimAM² behind its ``fuse`` seam (when on)."""
    upstream = models.att_Net
    config, probe = run.config, run.probe

    class AdaptedAttNet(InitShim, upstream):
        def __init__(self, embedding_dim, hidden_dim, hidden_size, tagset_size):
            upstream.__init__(self, embedding_dim, hidden_dim, hidden_size, tagset_size)  # not super(): see InitShim
            self.simam2 = None
            if config.simam2:
                width = 2 * hidden_dim  # one BiLSTM's output per segment
                self.simam2 = ConcatFusion(width, width, zeta_mode=config.zeta, lam=config.lam, s=config.s,
                                            u=config.u)
                self.simam2.to(self.L1.weight.device)  # the upstream moved itself to the GPU in __init__
            run.register_model(self)

        def fuse(self, lstm_audio, lstm_video):
            if self.training and probe.model is self:
                probe.on_fusion_inputs(lstm_audio, lstm_video)
            if self.simam2 is None:
                fused = super().fuse(lstm_audio, lstm_video)
            else:
                b, t, c = lstm_audio.shape
                fused = self.simam2(lstm_audio.reshape(b * t, c),
                                    lstm_video.reshape(b * t, lstm_video.shape[-1])).view(b, t, -1)
            if not self.training:
                # test mode evaluates the model it unpickles, not the one it built (the run's): say which
                probe.on_eval_fusion_inputs(lstm_audio, lstm_video, model=self)
            return fused

        def forward(self, audio, video):
            out = super().forward(audio, video)
            if not self.training:
                scorer.score(out)
            return out

        def train(self, mode: bool = True):
            if probe.model is self:
                probe.on_mode(bool(mode))
            return super().train(mode)

        def zero_grad(self, set_to_none: bool = True):
            # only the training loop calls it; upstream never returns to training mode after val()
            self.train()
            return super().zero_grad(set_to_none)

    return publish(AdaptedAttNet, __name__, "AdaptedAttNet")


def recorded_dataset(dataloader, run, scorer: SegmentScorer) -> type:
    """``AVEDataset`` that reports epochs (training set) and evaluation labels (val/test sets)."""
    upstream = dataloader.AVEDataset
    train_run = "--train" in run.argv
    made = []

    class RecordedAVEDataset(upstream):
        def __init__(self, video_dir, audio_dir, label_dir, order_dir, batch_size):
            super().__init__(video_dir, audio_dir, label_dir, order_dir, batch_size)
            made.append(self)
            # train() builds its set first; every later set is val()'s (--train) or test()'s
            self._split = ("train" if len(made) == 1 else "val") if train_run else "test"
            self._epochs = 0

        def get_batch(self, idx):
            batch = super().get_batch(idx)
            if self._split == "train":
                if idx == 0:  # train() asks for batch 0 once per epoch
                    run.probe.set_epoch(self._epochs)
                    self._epochs += 1
            else:
                scorer.expect(self._split, batch[2].numpy(), len(self))
            return batch

    return named(RecordedAVEDataset, "RecordedAVEDataset")


class AvgaSpec(AveSpec):
    """AVE-ECCV18's ``supervised_main.py`` (AV_att) with SimAM² late fusion and modulation."""

    name = "avga"
    upstream = "avga"
    script = "supervised_main.py"
    distributed = ("supervised_main.py neither wraps its model in nn.DataParallel nor batches through a DataLoader "
                   "(AVEDataset.get_batch slices in-memory h5 arrays): there is nothing for DDP and a "
                   "DistributedSampler to take over, and the model moves itself with .cuda()")
    epoch_source = "explicit"
    criterion = nn.MultiLabelSoftMarginLoss
    encoder_prefixes = {"audio": ("lstm_audio.",),
                        "visual": ("lstm_video.", "affine_video.", "affine_v.", "affine_h.")}
    label_option = "--dir_labels"
    label_default = "data/labels.h5"
    model_default = "AV_att"
    model_names = ("AV_att",)
    batch_default = 64

    def replacements(self, run) -> list[Replacement]:
        import dataloader
        import models

        self.check_zeta(run.config, "AV_att")
        scorer = SegmentScorer(run.probe)
        adapted = adapted_att_net(models, self, run, scorer)
        allow_checkpoints(run, models, sys.modules[__name__])  # test mode loads the pickled model
        return [
            Replacement("models", "att_Net", adapted),
            Replacement("dataloader", "AVEDataset", recorded_dataset(dataloader, run, scorer)),
        ]

    def head(self, model, audio, visual):
        """``forward`` from the fusion on: fuse, ReLU, L1, ReLU, L2, softmax (what the scorer reads)."""
        return F.softmax(model.L2(model.relu(model.L1(model.relu(model.fuse(audio, visual))))), dim=-1)

    def modality_logits(self, model, audio, visual):
        """Each modality through the head with its half of ``L1``'s weight and half of each bias."""
        w1, b1 = model.L1.weight, model.L1.bias
        half = audio.shape[-1]

        def head(x, w):
            return F.linear(F.relu(F.linear(F.relu(x), w, b1 / 2)), model.L2.weight, model.L2.bias / 2)

        return head(audio, w1[:, :half]), head(visual, w1[:, half:])

    def labels(self, probe, args):
        labels = args[1] if len(args) >= 2 else None
        if not (torch.is_tensor(labels) and labels.dim() == 3):
            return None
        return labels.argmax(-1)

    def needed_orders(self, train: bool) -> list[str]:
        return ["train", "val"] if train else ["test"]

    def check_more(self, argv, cwd: Path, train: bool, batch: int, orders: dict) -> None:
        model_name = option_value(argv, "--model_name", self.model_default)
        checkpoint = cwd / "model" / f"{model_name}.pt"
        if train:
            checkpoint.parent.mkdir(exist_ok=True)  # the script saves there and does not create it
        elif not checkpoint.is_file():
            raise AveInputError(f"test mode loads {checkpoint}, which does not exist: train first "
                                f"(--train) in this working directory")


SPEC = AvgaSpec()
