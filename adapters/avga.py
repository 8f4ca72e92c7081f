"""AVGA (YapengTian/AVE-ECCV18, the A+V-att model): SimAM² in its late fusion, OGM-GE and
decoupling-free modulation, records.

The upstream's own ``supervised_main.py --model_name AV_att`` runs unchanged (after
``patches/avga``: CPU device, pickled-checkpoint load, and the seam ``att_Net.fuse`` — the
concatenation of the audio and visual BiLSTM outputs, moved unchanged out of ``forward``).
Installing the adapter replaces:

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
  published as ``simam2.adapters.avga.AdaptedAttNet`` so that the checkpoint pickles and a later
  run (``supervised_main.py`` without ``--train``, adapter installed) loads it. The adapter creates
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

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from simam2.core import ConcatFusion

from .ave import AveAdapter, InitShim, active_run, publish
from .ave_synth import AveInputError
from .base import AdapterError, Replacement, RunConfig, current_context

#: the visual side of AV_att: the visual BiLSTM and the attention's visual layers
VISUAL_PREFIXES = ("lstm_video.", "affine_video.", "affine_v.", "affine_h.")
AUDIO_PREFIXES = ("lstm_audio.",)


def _config() -> RunConfig:
    ctx = current_context()
    return ctx.config if ctx is not None else RunConfig()


def adapted_att_net(models) -> type:
    """``AdaptedAttNet``: the upstream ``att_Net`` with SimAM² behind its ``fuse`` seam (when on)."""
    upstream = models.att_Net

    class AdaptedAttNet(InitShim, upstream):
        def __init__(self, embedding_dim, hidden_dim, hidden_size, tagset_size):
            upstream.__init__(self, embedding_dim, hidden_dim, hidden_size, tagset_size)  # not super(): see InitShim
            config = _config()
            self.simam2 = None
            if config.simam2:
                if config.zeta == "given":
                    raise AdapterError("AV_att has no gate of its own to give ζ: use zeta='fixed' or 'learnable'")
                width = 2 * hidden_dim  # one BiLSTM's output per segment
                self.simam2 = ConcatFusion(width, width, zeta=config.zeta, lam=config.lam, s=config.s)
                self.simam2.to(self.L1.weight.device)  # the upstream moved itself to the GPU in __init__
            ctx = current_context()
            if ctx is not None and isinstance(ctx.adapter, AvgaAdapter):
                ctx.register_model(self)

        def fuse(self, lstm_audio, lstm_video):
            run = active_run(AvgaAdapter)
            if run is not None and self.training:
                run.on_streams(lstm_audio, lstm_video)
            if self.simam2 is None:
                return super().fuse(lstm_audio, lstm_video)
            b, t, c = lstm_audio.shape
            fused = self.simam2(lstm_audio.reshape(b * t, c), lstm_video.reshape(b * t, lstm_video.shape[-1]))
            return fused.view(b, t, -1)

        def forward(self, audio, video):
            out = super().forward(audio, video)
            run = active_run(AvgaAdapter)
            if run is not None and not self.training:
                run.on_eval_output(out)
            return out

        def zero_grad(self, set_to_none: bool = True):
            # only the training loop calls it; upstream never returns to training mode after val()
            self.train()
            return super().zero_grad(set_to_none)

    return AdaptedAttNet


def recorded_dataset(dataloader) -> type:
    """``AVEDataset`` that reports epochs (training set) and evaluation labels (val/test sets)."""
    upstream = dataloader.AVEDataset

    class RecordedAVEDataset(upstream):
        def __init__(self, video_dir, audio_dir, label_dir, order_dir, batch_size):
            super().__init__(video_dir, audio_dir, label_dir, order_dir, batch_size)
            ctx = current_context()
            state = ctx.state if ctx is not None else {}
            made = state["avga_datasets"] = state.get("avga_datasets", 0) + 1
            # train() builds its set first; every later set is val()'s (--train) or test()'s
            self._split = ("train" if made == 1 else "val") if state.get("avga_train") else "test"
            self._epochs = 0

        def get_batch(self, idx):
            batch = super().get_batch(idx)
            run = active_run(AvgaAdapter)
            if run is not None:
                if self._split == "train":
                    if idx == 0:
                        run.set_epoch(self._epochs)
                        self._epochs += 1
                else:
                    run.expect_eval(self._split, batch[2].numpy(), len(self))
            return batch

    return RecordedAVEDataset


class AvgaAdapter(AveAdapter):
    """AVE-ECCV18's ``supervised_main.py`` (AV_att) with SimAM² late fusion and modulation."""

    name = "avga"
    upstream = "avga"
    script = "supervised_main.py"
    criterion = nn.MultiLabelSoftMarginLoss
    label_option = "--dir_labels"
    label_default = "data/labels.h5"
    model_default = "AV_att"
    model_names = ("AV_att",)
    batch_default = 64

    def replacements(self, config: RunConfig) -> list[Replacement]:
        import dataloader
        import models

        return [
            Replacement("models", "att_Net", publish(adapted_att_net(models), __name__, "AdaptedAttNet")),
            Replacement("dataloader", "AVEDataset", recorded_dataset(dataloader)),
        ]

    def modality_groups(self, model: nn.Module) -> dict[str, list[nn.Parameter]]:
        named = list(model.named_parameters())
        return {"audio": [p for n, p in named if n.startswith(AUDIO_PREFIXES)],
                "visual": [p for n, p in named if n.startswith(VISUAL_PREFIXES)]}

    def modality_logits(self, model: nn.Module, audio: torch.Tensor, visual: torch.Tensor):
        """Each modality through the head with its half of ``L1``'s weight and half of each bias."""
        w1, b1 = model.L1.weight, model.L1.bias
        half = audio.shape[-1]

        def head(x, w):
            return F.linear(F.relu(F.linear(F.relu(x), w, b1 / 2)), model.L2.weight, model.L2.bias / 2)

        return head(audio, w1[:, :half]), head(visual, w1[:, half:])

    def segment_labels(self, args: tuple) -> torch.Tensor | None:
        labels = args[1]
        return labels.argmax(-1) if torch.is_tensor(labels) and labels.dim() == 3 else None

    def needed_orders(self, train: bool) -> list[str]:
        return ["train", "val"] if train else ["test"]

    def check_more(self, argv, cwd: Path, train: bool, batch: int, orders: dict) -> None:
        from .base import option_value

        self.check_eval_orders(orders)
        ctx = current_context()
        if ctx is not None:
            ctx.state["avga_train"] = train
        model_name = option_value(argv, "--model_name", self.model_default)
        checkpoint = cwd / "model" / f"{model_name}.pt"
        if train:
            checkpoint.parent.mkdir(exist_ok=True)  # the script saves there and does not create it
        elif not checkpoint.is_file():
            raise AveInputError(f"test mode loads {checkpoint}, which does not exist: train first "
                                f"(--train) in this working directory")


ADAPTER = AvgaAdapter()


def synth(out_dir, **kwargs) -> Path:
    """A tiny AVE set that ``supervised_main.py`` reads (see :func:`.ave_synth.write_synthetic_ave`)."""
    return ADAPTER.synth(out_dir, **kwargs)
