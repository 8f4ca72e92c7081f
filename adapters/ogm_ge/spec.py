"""OGM-GE (GeWu-Lab/OGM-GE_CVPR2022) declared: SimAM² in its fusion modules, decoupling-free
modulation of its encoders, one record schema.

The upstream's own ``main.py`` runs unchanged (after ``patches/ogm-ge``: CPU, loader workers, the
eval path's load, VGGSound roots, and FiLM, which crashes main.py at the pin; see
docs/adapters-ogm-ge.md). Installing the spec replaces, where ``models/basic_model.py`` looks them up:

- ``AVClassifier`` by a subclass that feeds the run's probe (always): epochs (main.py calls
  ``model.train()`` once per training epoch), the fusion inputs of each training forward, and the
  softmax of each evaluation pass, scored as Top-1 and mAP (upstream prints only accuracy);
- ``SumFusion``, ``ConcatFusion``, ``FiLM`` by SimAM² subclasses (with ``simam2`` on; see
  :mod:`.layers`);
- ``CramedDataset`` / ``VGGSound`` by subclasses that make the test labels known to the scorer.

Modality 1 is the stream whose weight is ζ: audio for sum and concat; for FiLM the ζ-weighted term
X1 = γ ⊙ F carries the filmed stream, visual when γ comes from audio (``x_film``), so there the
records' modality 1 is visual. ``rho_decoupled`` is OGM-GE's score ratio in the same order.

Modulation (:data:`MAIN_PY_MODULATION`): ``--modulation ogm-ge`` runs main.py's own OGM-GE
(``--modulation OGM_GE``; ``OGM`` with ``--modulation ogm`` or ``--no-ge``); ``--modulation df`` runs
main.py with ``Normal`` and the probe attaches core's
GradientModulator to the parameters main.py's OGM-GE would modulate: the 4-D (convolution) weights of
``audio_net`` and ``visual_net``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..machinery import AdapterError, Replacement, RunConfig, Spec, option_value
from ..machinery.config import Modulation
from . import checks, layers, synth
from .layers import FUSIONS

#: main.py's words for our modulations (its ``--modulation``): its own OGM and OGM-GE run the
#: decoupled ones; the decoupling-free one runs on top of its ``Normal``, noise or not
MAIN_PY_MODULATION = {"none": "Normal", "ogm": "OGM", "ogm-ge": "OGM_GE", "df": "Normal"}
#: main.py's own default, when its command line names none
MAIN_PY_DEFAULT_MODULATION = "OGM_GE"


def upstream_modulation(config: RunConfig) -> str:
    """main.py's ``--modulation`` for ``config``."""
    return MAIN_PY_MODULATION[Modulation.of(config).name]


class OgmGeSpec(Spec):
    """OGM-GE's ``main.py`` (Table 1: CREMA-D Top-1 / mAP)."""

    name = "ogm-ge"
    upstream = "ogm-ge"
    script = "main.py"
    modalities = ("audio", "visual")
    metrics = ("top1", "mAP")
    primary = "top1"
    epoch_source = "train_calls"
    criterion = nn.CrossEntropyLoss
    own_ogm_ge = True
    distributed = None  # main.py wraps AVClassifier in nn.DataParallel and trains from a shuffling DataLoader

    def replacements(self, run) -> list[Replacement]:
        import dataset.CramedDataset as cremad
        import dataset.VGGSoundDataset as vggsound
        import models.basic_model as basic_model
        import models.fusion_modules as fusion_modules

        self.check_zeta(run.config, "OGM-GE")
        datasets: dict = {}
        reps = [
            Replacement("models.basic_model", "AVClassifier",
                        layers.recording_model_class(basic_model, self, run, datasets)),
            Replacement("dataset.CramedDataset", "CramedDataset",
                        layers.recording_dataset_class(cremad.CramedDataset, datasets)),
            Replacement("dataset.VGGSoundDataset", "VGGSound",
                        layers.recording_dataset_class(vggsound.VGGSound, datasets)),
        ]
        if run.config.simam2:
            reps += [Replacement("models.basic_model", attr, cls)
                     for attr, cls in layers.simam2_fusion_classes(fusion_modules, run.config).items()]
        return reps

    # -- where things are ------------------------------------------------------------------------

    @staticmethod
    def audio_is_x1(model: nn.Module) -> bool:
        """Whether ζ (the weight of X1) is audio's: True for sum and concat; for FiLM, X1 = γ ⊙ F
        carries the filmed stream, which is visual when γ comes from audio (``x_film``)."""
        fusion = model.fusion_module
        return not getattr(fusion, "x_film", False) if hasattr(fusion, "film_terms") else True

    def modalities_of(self, model):
        return ("audio", "visual") if self.audio_is_x1(model) else ("visual", "audio")

    def groups(self, model):
        audio = [p for p in model.audio_net.parameters() if p.dim() == 4]
        visual = [p for p in model.visual_net.parameters() if p.dim() == 4]
        return {"audio": audio, "visual": visual} if self.audio_is_x1(model) else {"visual": visual, "audio": audio}

    def fusion(self, model):
        return getattr(model.fusion_module, "simam2", None)

    def modality_logits(self, model, x1, x2):
        """main.py's split of the fusion classifier, in modality order (SPEC §6)."""
        import models.fusion_modules as fm

        a, v = (x1, x2) if self.audio_is_x1(model) else (x2, x1)
        split = split_logits(model.fusion_module, fm, a, v)
        if split is None:
            return None
        return split if self.audio_is_x1(model) else split[::-1]

    def head(self, model, x1, x2):
        """The fusion module's logits from the two encoders' outputs (its classifier included)."""
        a, v = (x1, x2) if self.audio_is_x1(model) else (x2, x1)
        return model.fusion_module(a, v)[2]

    def labels(self, probe, args):
        model = probe.model
        if len(args) >= 2 and model is not None and args[0] is model._last_out:
            return args[1]
        return None

    # -- a run's life ----------------------------------------------------------------------------

    def on_end(self, run) -> None:
        model = run.probe.model
        if model is not None:
            model._eval.flush()

    def upstream_options(self, run, model):
        a = model.args
        return dict(fusion=a.fusion_method, modulation=a.modulation, alpha=a.alpha,
                    modulation_starts=a.modulation_starts, modulation_ends=a.modulation_ends, train=bool(a.train))

    def validate(self, run, argv: Sequence[str], cwd: Path) -> None:
        """main.py's own ``--modulation`` and ``--alpha`` (the last given: the script's arguments
        come after ours) must say what the run's options say; then the dataset."""
        config = run.config
        expected, given = upstream_modulation(config), option_value(argv, "--modulation", MAIN_PY_DEFAULT_MODULATION)
        if given != expected:
            hint = "decoupling-free modulation replaces main.py's own: " if Modulation.of(config).decoupling_free else ""
            raise AdapterError(f"{hint}--modulation {Modulation.of(config).name} runs main.py with --modulation "
                               f"{expected}, not {given}")
        alpha = option_value(argv, "--alpha", None)
        if Modulation.of(config).on and alpha is not None and _number(alpha) != config.alpha:
            raise AdapterError(f"main.py's --alpha {alpha} differs from the run's --alpha {config.alpha}: "
                               "give α once, as simam2's --alpha")
        checks.check_dataset(argv, cwd)

    # -- the command line ------------------------------------------------------------------------

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("OGM-GE")
        g.add_argument("--fusion", choices=FUSIONS, default="sum", help="main.py's --fusion_method (default sum)")

    def upstream_argv(self, config: RunConfig, ns: argparse.Namespace | None = None) -> list[str]:
        """main.py's fusion, modulation, α and window, from the run's options."""
        fusion = ["--fusion_method", ns.fusion] if ns is not None else []
        return fusion + ["--modulation", upstream_modulation(config), "--alpha", str(config.alpha),
                         "--modulation_starts", str(config.modulation_start),
                         "--modulation_ends", str(config.modulation_end)]

    def synth(self, out_dir, dataset: str = "CREMAD", **kwargs) -> Path:
        """Write a tiny synthetic CREMA-D (default) or VGGSound to ``out_dir``."""
        writers = {"CREMAD": synth.write_cremad, "VGGSound": synth.write_vggsound}
        if dataset not in writers:
            raise AdapterError(f"--dataset must be one of {', '.join(writers)}, got {dataset!r}")
        return writers[dataset](out_dir, **kwargs)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # main.py's own parser refuses it, in its words


def split_logits(fusion: nn.Module, fusion_modules, a: torch.Tensor, v: torch.Tensor):
    """(out_audio, out_visual): the fusion classifier split per modality as main.py's training step
    splits it — sum: fc_x(a), fc_y(v); concat: each half of fc_out's weight with half its bias;
    FiLM: the patched upstream's ``modality_logits``. None for a fusion OGM-GE cannot split (gated).
    """
    if isinstance(fusion, fusion_modules.SumFusion):
        return fusion.fc_x(a), fusion.fc_y(v)
    if isinstance(fusion, fusion_modules.ConcatFusion):
        w, b = fusion.fc_out.weight, fusion.fc_out.bias
        half = w.shape[1] // 2
        return nn.functional.linear(a, w[:, :half], b / 2), nn.functional.linear(v, w[:, half:], b / 2)
    if isinstance(fusion, fusion_modules.FiLM) and hasattr(fusion, "modality_logits"):
        return fusion.modality_logits(a, v)
    return None


SPEC = OgmGeSpec()
