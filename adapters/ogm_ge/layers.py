"""OGM-GE's replacement classes: SimAM² fusion modules, the recording model, the recorded datasets.

The SimAM² subclasses keep the upstream's layers and attribute names (``fc_x``, ``fc_y``,
``fc_out``, ``fc``), so main.py's own OGM-GE path (``--modulation OGM_GE``) runs unchanged on top
of them; their ``forward`` composes those layers with the core's fusion forms (SPEC §4):

========  ===============================  ==========================
fusion    X1, X2                           output
========  ===============================  ==========================
sum       fc_x(x), fc_y(y)                 SimAM²(X1, X2)
concat    [x ; 0], [0 ; y]                 fc_out(SimAM²(X1, X2))
film      γ ⊙ y, β  with γ, β = fc(x)      fc_out(SimAM²(X1, X2))
========  ===============================  ==========================
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from simam2.core import ConcatFusion, FiLMFusion, Summation

from ..machinery import AdapterError, RunConfig
from ..machinery.layers import InitShim, named

FUSIONS = ("sum", "concat", "film")


def simam2_fusion_classes(fusion_modules, config: RunConfig) -> dict[str, type]:
    """SimAM² subclasses of the upstream's ``SumFusion``, ``ConcatFusion`` and ``FiLM``.

    Each keeps the upstream's ``__init__`` (so its layers, names and initialisation) and adds one
    core fusion module as ``self.simam2``; ``forward`` returns ``(x, y, output)`` as upstream does.
    """
    opts = dict(zeta_mode=config.zeta, lam=config.lam, s=config.s, u=config.u)

    class SimAM2SumFusion(fusion_modules.SumFusion):
        """Summation: X1, X2 = fc_x(x), fc_y(y), fused by SimAM² instead of added."""

        def __init__(self, input_dim=512, output_dim=100):
            super().__init__(input_dim, output_dim)
            self.simam2 = Summation(output_dim, **opts)

        def forward(self, x, y):
            return x, y, self.simam2(self.fc_x(x), self.fc_y(y))

    class SimAM2ConcatFusion(fusion_modules.ConcatFusion):
        """Concatenation: X1 = [x ; 0], X2 = [0 ; y]; fc_out reads the fused full-width vector."""

        def __init__(self, input_dim=1024, output_dim=100):
            super().__init__(input_dim, output_dim)
            self.simam2 = ConcatFusion(input_dim // 2, input_dim - input_dim // 2, **opts)

        def forward(self, x, y):
            return x, y, self.fc_out(self.simam2(x, y))

    class SimAM2FiLM(fusion_modules.FiLM):
        """FiLM (Eq. 9–10): X1 = γ ⊙ F, X2 = β from the upstream's ``film_terms`` seam; then fc_out."""

        def __init__(self, input_dim=512, dim=512, output_dim=100, x_film=True):
            super().__init__(input_dim, dim, output_dim, x_film)
            self.simam2 = FiLMFusion(dim, **opts)

        def forward(self, x, y):
            return x, y, self.fc_out(self.simam2(*self.film_terms(x, y)))

    return {"SumFusion": SimAM2SumFusion, "ConcatFusion": SimAM2ConcatFusion, "FiLM": SimAM2FiLM}


def top1_and_map(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Top-1 accuracy and mAP (macro average precision over the classes present in ``labels``)."""
    from sklearn.metrics import average_precision_score

    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs (N, classes) and labels (N,) disagree: {probs.shape} vs {labels.shape}")
    top1 = float((probs.argmax(1) == labels).mean())
    aps = [average_precision_score(labels == c, probs[:, c]) for c in np.unique(labels)]
    return top1, float(np.mean(aps))


class EvalScorer:
    """Collects the softmax of the fused logits over one evaluation pass (main.py's ``valid()``
    does not shuffle, so they arrive in the test dataset's order) and scores Top-1 and mAP."""

    def __init__(self, probe, datasets: dict):
        self.probe, self.datasets = probe, datasets
        self.probs: list[torch.Tensor] = []

    def add(self, logits: torch.Tensor) -> None:
        self.probs.append(logits.detach().float().softmax(1))

    def flush(self) -> None:
        if not self.probs:
            return
        probs = torch.cat(self.probs).cpu().numpy()
        self.probs = []
        dataset = self.datasets.get("test")
        labels = None if dataset is None else np.asarray(dataset.label)
        if labels is None or len(labels) != len(probs):
            have = "no test dataset" if labels is None else f"{len(labels)} test labels"
            warnings.warn(f"ogm-ge: {len(probs)} eval outputs but {have}: Top-1 and mAP not recorded")
            self.probe.modality_metrics(lambda logits: {})  # forget the pass's per-modality outputs
            self.probe.record_eval("test", len(probs), top1=None, mAP=None)
            return
        top1, m_ap = top1_and_map(probs, labels)

        def score(logits: torch.Tensor) -> dict:
            p = logits.float().softmax(1).cpu().numpy()
            if len(p) != len(labels):
                return {}
            t, m = top1_and_map(p, labels)
            return {"top1": t, "mAP": m}

        self.probe.record_eval("test", len(probs), top1=top1, mAP=m_ap, **self.probe.modality_metrics(score))


def recording_model_class(basic_model, spec, run, datasets: dict) -> type:
    """A subclass of the upstream's ``AVClassifier`` that registers itself with the run and feeds its
    probe: mode changes (epochs), the fusion inputs of training forwards, evaluation outputs."""
    upstream = basic_model.AVClassifier
    config, probe = run.config, run.probe

    class RecordedAVClassifier(InitShim, upstream):
        def __init__(self, args):
            if config.simam2 and args.fusion_method not in FUSIONS:
                raise AdapterError(f"SimAM² replaces the {', '.join(FUSIONS)} fusions; "
                                   f"--fusion_method {args.fusion_method} has no SimAM² form")
            upstream.__init__(self, args)  # not super(): see InitShim
            self.args = args
            self._last_out = None
            self._eval = EvalScorer(probe, datasets)
            run.register_model(self)

        def train(self, mode: bool = True):
            if probe.model is self:
                if mode:
                    self._eval.flush()
                probe.on_mode(bool(mode))
            return super().train(mode)

        def forward(self, audio, visual):
            a, v, out = super().forward(audio, visual)
            if probe.model is self:
                if self.training:
                    self._last_out = out
                    probe.on_fusion_inputs(*((a, v) if spec.audio_is_x1(self) else (v, a)))
                else:
                    self._eval.add(out)
                    probe.on_eval_fusion_inputs(*((a, v) if spec.audio_is_x1(self) else (v, a)))
            return a, v, out

    return named(RecordedAVClassifier, "RecordedAVClassifier")


def recording_dataset_class(base: type, datasets: dict) -> type:
    """A subclass of an upstream dataset that makes itself known to the run (for eval labels)."""

    class RecordedDataset(base):
        def __init__(self, args, mode="train"):
            super().__init__(args, mode=mode)
            datasets[mode] = self

    return named(RecordedDataset, f"Recorded{base.__name__}")
