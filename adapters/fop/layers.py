"""FOP's replacement classes: SimAM² fusion layers, the recording gate, model and online evaluation.

==================  ============================  =========================================
upstream fusion     X1, X2                        ζ
==================  ============================  =========================================
GatedFusion         tanh(face), tanh(voice)       ``given``: FOP's own gate g (default);
                                                  ``fixed`` 0.5 or ``learnable`` also work
LinearWeightedAvg   weight1·face, weight2·voice   ``fixed`` or ``learnable``
==================  ============================  =========================================

FOP's gate, ``g = sigmoid(attention(concat(face, voice)))``, is already the weight of the face in
``g·face + (1 − g)·voice``: one value per sample and channel, a ζ in the sense of Eq. 4. The SimAM²
gated fusion overrides only the ``fuse`` seam (patch 0005) that receives the upstream's tanh'ed
embeddings and its gate; the gate's layers, its computation and its training stay FOP's.
"""

from __future__ import annotations

import torch

from simam2.core import SimAM2

from ..machinery import AdapterError, RunConfig
from ..machinery.layers import InitShim, named
from .checks import FUSIONS
from .synth import FACE_DIM, VOICE_DIM


def simam2_fusion_classes(retrieval_model, config: RunConfig) -> dict[str, type]:
    """SimAM² subclasses of the upstream's ``GatedFusion`` and ``LinearWeightedAvg`` for ``config``."""
    opts = dict(lam=config.lam, s=config.s, u=config.u)
    upstream_gated = retrieval_model.GatedFusion
    upstream_linear = retrieval_model.LinearWeightedAvg

    class SimAM2GatedFusion(InitShim, upstream_gated):
        """FOP's gated fusion with SimAM² over (tanh(face), tanh(voice)); ζ = FOP's gate when given."""

        def __init__(self, face_input, voice_input, embed_dim_in, mid_att_dim, emb_dim_out):
            upstream_gated.__init__(self, face_input, voice_input, embed_dim_in, mid_att_dim, emb_dim_out)
            if embed_dim_in != emb_dim_out:
                raise AdapterError(f"SimAM² fuses embeddings of the gate's width: embed_dim_in {embed_dim_in} "
                                   f"!= emb_dim_out {emb_dim_out}")
            self.simam2 = SimAM2(emb_dim_out, zeta_mode=config.zeta, **opts)

        def fuse(self, face_trans, voice_trans, attention_out):
            """Eq. 4–8 in place of ``g·face + (1 − g)·voice``; ``attention_out`` is FOP's gate g."""
            zeta = attention_out if config.zeta == "given" else None
            return self.simam2(face_trans, voice_trans, zeta=zeta)

    class SimAM2LinearWeightedAvg(InitShim, upstream_linear):
        """FOP's linear fusion: SimAM² over its two weighted terms (SPEC §4, summation)."""

        def __init__(self, face_feat_dim, voice_feat_dim):
            upstream_linear.__init__(self, face_feat_dim, voice_feat_dim)
            if config.zeta == "given":
                raise AdapterError("FOP's linear fusion has no gate to give ζ: use --zeta fixed or learnable "
                                   "(or --fusion gated)")
            if face_feat_dim != voice_feat_dim:
                raise AdapterError(f"face and voice embeddings differ in width: {face_feat_dim} vs {voice_feat_dim}")
            self.simam2 = SimAM2(face_feat_dim, zeta_mode=config.zeta, **opts)

        def forward(self, face_feat, voice_feat):
            face_term, voice_term = self.terms(face_feat, voice_feat)
            return self.simam2(face_term, voice_term), face_feat, voice_feat

    return {"GatedFusion": SimAM2GatedFusion, "LinearWeightedAvg": SimAM2LinearWeightedAvg}


def recording_gated_class(retrieval_model) -> type:
    """FOP's ``GatedFusion``, output unchanged, keeping Σg and Σ(1 − g) of its last training forward:
    Eq. 11's ρ for FOP's own gate, recorded beside the SimAM² runs' (installed, SimAM² off)."""
    upstream = retrieval_model.GatedFusion

    class RecordedGatedFusion(InitShim, upstream):
        def __init__(self, *args):
            upstream.__init__(self, *args)
            self.gate_sums: torch.Tensor | None = None
            self.gate: torch.Tensor | None = None

        def fuse(self, face_trans, voice_trans, attention_out):
            if self.training:
                g = self.gate = attention_out.detach()
                self.gate_sums = torch.stack([g.sum(), (1 - g).sum()])
            return super().fuse(face_trans, voice_trans, attention_out)

    return named(RecordedGatedFusion, "RecordedGatedFusion")


def recording_fop_class(retrieval_model, run) -> type:
    """A subclass of the upstream's ``FOP`` that registers itself and tells the probe when it leaves
    training (main.py calls ``train()`` before every batch and ``eval()`` once per epoch)."""
    upstream = retrieval_model.FOP
    probe = run.probe

    class RecordedFOP(InitShim, upstream):
        def __init__(self, args, face_feat_dim, voice_feat_dim):
            if (face_feat_dim, voice_feat_dim) != (FACE_DIM, VOICE_DIM):
                raise AdapterError(f"FOP's evaluation reads {FACE_DIM} face and {VOICE_DIM} voice features; "
                                   f"the training files give {face_feat_dim} and {voice_feat_dim}")
            if args.fusion not in FUSIONS:
                raise AdapterError(f"--fusion must be one of {', '.join(FUSIONS)}, got {args.fusion!r} "
                                   "(FOP then builds no fusion layer)")
            upstream.__init__(self, args, face_feat_dim, voice_feat_dim)  # not super(): see InitShim
            self.args = args
            run.register_model(self)

        def train(self, mode: bool = True):
            if probe.model is self:
                probe.on_mode(bool(mode))
            return super().train(mode)

    return named(RecordedFOP, "RecordedFOP")


def recording_online_test(upstream_test, run):
    """``online_evaluation.test`` that also records the EER and AUC it returns (as computed upstream)."""

    def test(args, model, face_test, voice_test):
        eer, auc = upstream_test(args, model, face_test, voice_test)
        if run.probe.model is model:
            run.probe.record_eval("val", len(face_test), eer=float(eer), auc=float(auc))
        return eer, auc

    test.__wrapped__ = upstream_test
    return test
