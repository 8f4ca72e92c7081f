"""PSP (jasongief/PSP_CVPR_2021, fully supervised): SimAM² in its late fusion, OGM-GE and
decoupling-free modulation, records.

The upstream's own ``fully_supervised_main.py --model_name PSP --threshold=0.099 --train`` runs
unchanged (after ``patches/psp``: CPU device and pickled-checkpoint load; no seam is needed).
PSP's fusion is the averaged sum of the two propagated streams, ``a_v_fuse = (v_psp + a_psp) · 0.5``
at the end of ``PSP.forward``, which also returns both streams — so the spec replaces it at run
time, without a patch:

- ``fully_model.PSP`` by ``AdaptedPSP``: the upstream's ``forward`` runs as is; with ``simam2`` on,
  its fused output is replaced by :class:`~simam2.core.LateFusion` of the streams it returns,
  X1 = a_psp, X2 = v_psp (SPEC §4: a summation with ζ = 0.5, the case SimAM² is built for; with ζ
  fixed, U is exactly the upstream's ``a_v_fuse``). Each segment is one sample whose 256 features
  are its neurons; ζ is (B·10, 256), fixed or the learnable gate.
- ``fully_model.psp_net`` by ``AdaptedPspNet``: registers the model, counts epochs (the script
  calls ``net_model.train()`` at the start of each), and scores evaluation forwards.
- ``dataloader.AVE_Fully_Dataset`` by a subclass that hands the evaluation labels (status ``val``
  or ``test``) to the run.

Both classes are published under this module (``simam2.adapters.ave.psp.AdaptedPSP`` …) because the
script pickles the whole model (``torch.save(net_model, 'PSP_<epoch>_fully.pt')``, in the working
directory) whenever the test accuracy improves.

Modality encoders (the parameters OGM-GE's coefficients scale; the layers that see one modality
only, before the positive sample propagation mixes them):

- audio: ``fa.*`` (the audio projection) and ``lstm_a_v.lstm_audio.*``;
- visual: ``attention.affine_video.*``, ``attention.affine_v.weight``, ``attention.affine_h.weight``
  (the visual side of the audio-guided attention), ``fv.*`` and ``lstm_a_v.lstm_video.*``.

Left out: the attention's audio guidance ``attention.affine_audio.*``, ``attention.affine_g.weight``
(they reach the loss only through the visual stream); the PSP module ``psp.*``, whose layers feed
each stream with the other (``v_psp = v + γ_va · a_L2(a)``, ``a_psp = a + γ_av · v_L1(v)``) and share
one LayerNorm; the head ``L1``, ``L2``. ``v_classify``, ``a_classify``, ``L3``, ``L4`` and ``linear_v``
are built but never used by the upstream's forward (no gradient).

OGM-GE's decoupled ratio (``modulation="ogm-ge"``): the fused vector is a sum, and OGM-GE splits a
sum fusion into the terms it adds (``fc_x(x)``, ``fc_y(y)``). Here the terms are 0.5·a_psp and
0.5·v_psp, and the head has no biases, so each modality's logits are the head applied to its term:
``out_m = L2(relu(L1(0.5 · m_psp)))``. score_m = Σ over segments of softmax(out_m) at the segment's
class (SPEC §6).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from simam2.core import LateFusion

from ..machinery import Replacement, option_value
from ..machinery.layers import InitShim, allow_checkpoints, named, publish
from .common import AveSpec, SegmentScorer
from .synth import AveInputError


def adapted_psp(fully_model, run) -> type:
    """``AdaptedPSP``: the upstream PSP module, its fused output replaced by SimAM² (when on)."""
    upstream = fully_model.PSP
    config, probe = run.config, run.probe

    class AdaptedPSP(InitShim, upstream):
        def __init__(self, a_dim=256, v_dim=256, hidden_dim=256, out_dim=256):
            upstream.__init__(self, a_dim, v_dim, hidden_dim, out_dim)  # not super(): see InitShim
            self.simam2 = None
            if config.simam2:
                self.simam2 = LateFusion(out_dim, zeta_mode=config.zeta, lam=config.lam, s=config.s, u=config.u)

        def forward(self, a_fea, v_fea, thr_val):
            a_v_fuse, v_psp, a_psp = super().forward(a_fea, v_fea, thr_val)
            if self.training:
                probe.on_fusion_inputs(a_psp, v_psp)
            if self.simam2 is not None:
                a_v_fuse = self.simam2(a_psp, v_psp)
            if not self.training:
                probe.on_eval_fusion_inputs(a_psp, v_psp)
            return a_v_fuse, v_psp, a_psp

    return publish(AdaptedPSP, __name__, "AdaptedPSP")


def adapted_psp_net(fully_model, run, scorer: SegmentScorer) -> type:
    """``AdaptedPspNet``: the upstream ``psp_net`` that registers itself, counts epochs, scores evals."""
    upstream = fully_model.psp_net
    probe = run.probe

    class AdaptedPspNet(InitShim, upstream):
        def __init__(self, a_dim=128, v_dim=512, hidden_dim=128, category_num=29):
            upstream.__init__(self, a_dim, v_dim, hidden_dim, category_num)  # not super(): see InitShim
            run.register_model(self)

        def train(self, mode: bool = True):
            if probe.model is self:
                # the script calls net_model.train() once at the start of every epoch
                probe.on_mode(bool(mode))
            return super().train(mode)

        def forward(self, audio, video, thr_val):
            if not self.training:
                probe.set_eval_model(self)  # test mode evaluates the model it unpickles, not the one it built
            fusion, out, cross_att = super().forward(audio, video, thr_val)
            if not self.training:
                scorer.score(out)
            return fusion, out, cross_att

    return publish(AdaptedPspNet, __name__, "AdaptedPspNet")


def recorded_dataset(dataloader, scorer: SegmentScorer) -> type:
    """``AVE_Fully_Dataset`` that hands its labels to the scorer when an evaluation set is read."""
    upstream = dataloader.AVE_Fully_Dataset

    class RecordedAVEFullyDataset(upstream):
        def get_batch(self, idx, shuffle_samples=False):
            batch = super().get_batch(idx, shuffle_samples)
            if self.status != "train":
                scorer.expect(self.status, batch[2].numpy(), len(self))
            return batch

    return named(RecordedAVEFullyDataset, "RecordedAVEFullyDataset")


class PspSpec(AveSpec):
    """PSP's ``fully_supervised_main.py`` with SimAM² late fusion and modulation."""

    name = "psp"
    upstream = "psp"
    script = "fully_supervised_main.py"
    distributed = ("fully_supervised_main.py neither wraps its model in nn.DataParallel nor batches through a "
                   "DataLoader (AVEDataset.get_batch slices in-memory h5 arrays): there is nothing for DDP and a "
                   "DistributedSampler to take over")
    epoch_source = "train_calls"
    criterion = nn.CrossEntropyLoss
    encoder_prefixes = {"audio": ("fa.", "lstm_a_v.lstm_audio."),
                        "visual": ("attention.affine_video.", "attention.affine_v.", "attention.affine_h.", "fv.",
                                   "lstm_a_v.lstm_video.")}
    label_option = "--dir_labels"
    label_default = "data/right_labels.h5"
    model_default = "PSP"
    model_names = ("PSP",)
    batch_default = 128

    def replacements(self, run) -> list[Replacement]:
        import dataloader
        import fully_model

        self.check_zeta(run.config, "PSP")
        scorer = SegmentScorer(run.probe)
        reps = [
            Replacement("fully_model", "PSP", adapted_psp(fully_model, run)),
            Replacement("fully_model", "psp_net", adapted_psp_net(fully_model, run, scorer)),
            Replacement("dataloader", "AVE_Fully_Dataset", recorded_dataset(dataloader, scorer)),
        ]
        allow_checkpoints(run, fully_model, sys.modules[__name__])  # --trained_model_path loads a pickled model
        return reps

    def fusion(self, model):
        return getattr(getattr(model, "psp", None), "simam2", None)

    def head(self, model, audio, visual):
        """``psp_net.forward`` from the fusion on: PSP's average (or SimAM²), ReLU(L1), L2."""
        psp = model.psp
        fused = psp.simam2(audio, visual) if psp.simam2 is not None else torch.mul(visual + audio, 0.5)
        return model.L2(model.relu(model.L1(fused)))

    def modality_logits(self, model, audio, visual):
        """The head on each modality's term of the averaged sum, 0.5 · m_psp (the head has no biases)."""
        def head(x):
            return model.L2(F.relu(model.L1(0.5 * x)))

        return head(audio), head(visual)

    def labels(self, probe, args):
        labels = args[1] if len(args) >= 2 else None
        return labels if torch.is_tensor(labels) and labels.dim() == 2 and not labels.is_floating_point() else None

    def needed_orders(self, train: bool) -> list[str]:
        return ["train", "val", "test"] if train else ["test"]

    def check_more(self, argv, cwd: Path, train: bool, batch: int, orders: dict) -> None:
        import h5py

        if train:
            option, p = orders["train"]
            with h5py.File(p, "r") as hf:
                n = hf["order"].shape[0]
            # the epoch summary scores nb_batch = n // batch videos of the last batch of `batch` videos
            if n // batch > batch:
                raise AveInputError(f"{option} {p}: {n} videos in batches of {batch} give {n // batch} batches, "
                                    f"more than the batch size; the script's training accuracy then indexes "
                                    f"past its batch (use --batch_size of at least {int(n ** 0.5) + 1})")
        model_path = option_value(argv, "--trained_model_path", None)
        if not train and model_path is not None:
            p = Path(model_path) if Path(model_path).is_absolute() else cwd / model_path
            if not p.is_file():
                raise AveInputError(f"--trained_model_path {p}: no such file")


SPEC = PspSpec()
