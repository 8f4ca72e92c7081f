"""OGM-GE (GeWu-Lab/OGM-GE_CVPR2022): SimAM² in its fusion modules, decoupling-free modulation, records.

The upstream's own ``main.py`` runs unchanged (after ``patches/ogm-ge``: CPU, loader workers, the
eval path's load, VGGSound roots, and FiLM, which crashes main.py at the pin; see
docs/adapters-ogm-ge.md). Installing the adapter replaces, where ``models/basic_model.py`` looks
them up:

- ``AVClassifier`` by a subclass that records (always): per training step, the decoupling-free ratio
  (Eq. 11, from ζ) beside OGM-GE's decoupled ratio (SPEC §6); per evaluation pass, Top-1 and mAP
  from the softmax of the fused logits. Upstream prints only accuracy.
- ``SumFusion``, ``ConcatFusion``, ``FiLM`` by SimAM² subclasses (with ``simam2`` on). They keep the
  upstream's layers and attribute names (``fc_x``, ``fc_y``, ``fc_out``, ``fc``), so main.py's own
  OGM-GE path (``--modulation OGM_GE``) runs unchanged on top of them; their ``forward`` composes
  those layers with the core's fusion forms (SPEC §4):

  ========  ===============================  ==========================
  fusion    X1, X2                           output
  ========  ===============================  ==========================
  sum       fc_x(x), fc_y(y)                 SimAM²(X1, X2)
  concat    [x ; 0], [0 ; y]                 fc_out(SimAM²(X1, X2))
  film      γ ⊙ y, β  with γ, β = fc(x)      fc_out(SimAM²(X1, X2))
  ========  ===============================  ==========================

- ``CramedDataset`` / ``VGGSound`` by subclasses that make the test labels known to the recorder
  (the evaluation loader does not shuffle, so eval outputs arrive in dataset order).

Modality 1 is audio (x) throughout the records: ``rho_df`` = audio's ζ-weight over visual's (Eq. 11),
``rho_decoupled`` = score_audio / score_visual (the inverse of main.py's ``ratio_v``). For FiLM the
ζ-weighted term X1 = γ ⊙ y carries the visual stream, so there ``rho_df`` = Σ(1 − ζ) / Σ ζ.

Decoupling-free modulation (``modulation="df"``): main.py runs with ``--modulation Normal`` and the
adapter attaches core's :class:`~simam2.core.GradientModulator` (an optimizer step pre-hook) to the
parameters main.py's OGM-GE would modulate, the 4-D (convolution) weights of ``audio_net`` and
``visual_net``, with α and the epoch window read from main.py's own ``--alpha``,
``--modulation_starts``, ``--modulation_ends``.

The epoch: main.py calls ``model.train()`` once at the start of every training epoch and
``model.eval()`` once per evaluation; the recording model counts its ``train(True)`` calls (epoch =
calls − 1, 0-based like main.py's loop). The scheduler would do as well, but main.py steps it at the
end of the epoch, after the last modulated step.

Labels of a training step come from a global module forward pre-hook that sees main.py's
``criterion(out, label)`` call on the fused logits of the last training forward; per-step values stay
on the device and are read back once per epoch (no host-device sync per step).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.optim.optimizer import register_optimizer_step_pre_hook

from simam2.core import ConcatFusion as CoreConcat
from simam2.core import FiLMFusion as CoreFiLM
from simam2.core import GradientModulator, Summation, decoupled_scores, ogm_coefficients

from .base import Adapter, AdapterError, Replacement, RunConfig, RunContext, current_context, option_value
from .ogm_ge_synth import write_cremad, write_vggsound

FUSIONS = ("sum", "concat", "film")
#: main.py's --modulation for (RunConfig.modulation, ge): only "ogm-ge" runs main.py's own.
UPSTREAM_MODULATION = {("none", True): "Normal", ("none", False): "Normal", ("df", True): "Normal",
                       ("df", False): "Normal", ("ogm-ge", True): "OGM_GE", ("ogm-ge", False): "OGM"}
_NAN = float("nan")


def _context() -> RunContext:
    ctx = current_context()
    if ctx is None or not isinstance(ctx.adapter, OgmGeAdapter):
        raise AdapterError("OGM-GE replacement classes must be built inside installed(ADAPTER, ...)")
    return ctx


# -- SimAM² fusion classes (SPEC §4) ---------------------------------------------------------------

def simam2_fusion_classes(fusion_modules, config: RunConfig) -> dict[str, type]:
    """SimAM² subclasses of the upstream's ``SumFusion``, ``ConcatFusion`` and ``FiLM``.

    Each keeps the upstream's ``__init__`` (so its layers, names and initialisation) and adds one
    core fusion module as ``self.simam2``; ``forward`` returns ``(x, y, output)`` as upstream does.
    """
    if config.zeta == "given":
        raise AdapterError("OGM-GE has no gate of its own to give ζ: use zeta='fixed' or 'learnable'")
    opts = dict(zeta=config.zeta, lam=config.lam, s=config.s)

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
            self.simam2 = CoreConcat(input_dim // 2, input_dim - input_dim // 2, **opts)

        def forward(self, x, y):
            return x, y, self.fc_out(self.simam2(x, y))

    class SimAM2FiLM(fusion_modules.FiLM):
        """FiLM (Eq. 9–10): X1 = γ ⊙ F, X2 = β from the upstream's ``film_terms`` seam; then fc_out."""

        def __init__(self, input_dim=512, dim=512, output_dim=100, x_film=True):
            super().__init__(input_dim, dim, output_dim, x_film)
            self.simam2 = CoreFiLM(dim, **opts)

        def forward(self, x, y):
            return x, y, self.fc_out(self.simam2(*self.film_terms(x, y)))

    return {"SumFusion": SimAM2SumFusion, "ConcatFusion": SimAM2ConcatFusion, "FiLM": SimAM2FiLM}


# -- per-modality logits of OGM-GE's decoupled ratio (SPEC §6) -------------------------------------

def modality_logits(fusion: nn.Module, fusion_modules, a: torch.Tensor, v: torch.Tensor):
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


def audio_is_x1(fusion: nn.Module, fusion_modules) -> bool:
    """Whether ζ (the weight of X1) is audio's: True for sum and concat; for FiLM, X1 = γ ⊙ F
    carries the filmed stream, which is visual when γ comes from audio (``x_film``)."""
    if isinstance(fusion, fusion_modules.FiLM):
        return not fusion.x_film
    return True


# -- mAP -------------------------------------------------------------------------------------------

def top1_and_map(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Top-1 accuracy and mAP (macro average precision over the classes present in ``labels``)."""
    from sklearn.metrics import average_precision_score

    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs (N, classes) and labels (N,) disagree: {probs.shape} vs {labels.shape}")
    top1 = float((probs.argmax(1) == labels).mean())
    aps = [average_precision_score(labels == c, probs[:, c]) for c in np.unique(labels)]
    return top1, float(np.mean(aps))


# -- the recording model -------------------------------------------------------------------------

class _Recording:
    """What the recording model and the hooks share during one run (kept in ``ctx.state``)."""

    def __init__(self, ctx: RunContext, model, fusion_modules, args):
        self.ctx, self.model, self.fm, self.args = ctx, model, fusion_modules, args
        self.train_calls = 0
        self.step_out = None  # (a, v, out) of the last training forward
        self.rho_decoupled = None
        self.steps: list[torch.Tensor] = []
        self.eval_probs: list[torch.Tensor] = []
        self.evaluations = 0
        self.modulator: GradientModulator | None = None
        self.audio_first = audio_is_x1(model.fusion_module, fusion_modules)

    # called by the model
    def on_mode(self, training: bool) -> None:
        if training:
            self.flush_eval()
            self.train_calls += 1
            self.ctx.epoch = self.train_calls - 1
        else:
            self.flush_steps()
            self.eval_probs = []

    def on_forward(self, a, v, out) -> None:
        if self.model.training:
            self.step_out = (a.detach(), v.detach(), out)
        else:
            self.eval_probs.append(out.detach().float().softmax(1))

    # called by the hooks
    @torch.no_grad()
    def on_loss(self, logits, labels) -> None:
        """main.py's criterion(out, label) on this step's fused logits: OGM-GE's ratio, on device."""
        if self.step_out is None or logits is not self.step_out[2]:
            return
        a, v, _ = self.step_out
        split = modality_logits(self.model.fusion_module, self.fm, a, v)
        if split is not None:
            s = decoupled_scores(split[0], split[1], labels)
            self.rho_decoupled = s[0] / s[1]

    @torch.no_grad()
    def on_step(self) -> None:
        """Before optimizer.step(): stack this step's values (on device; read once per epoch)."""
        if self.step_out is None:
            return
        device = self.step_out[2].device
        nan = torch.full((), _NAN, device=device)  # a fill on the device, not a host-to-device copy
        rho_df = nan
        sums = getattr(getattr(self.model.fusion_module, "simam2", None), "weight_sums", None)
        if sums is not None:
            rho_df = sums[0] / sums[1] if self.audio_first else sums[1] / sums[0]
        rho_dec = self.rho_decoupled if self.rho_decoupled is not None else nan
        k_a = k_v = nan
        m = self.modulator
        if m is not None and m.last.get("applied"):
            k1, k2 = m.last["k1"], m.last["k2"]
            k_a, k_v = (k1, k2) if self.audio_first else (k2, k1)
        elif self.args.modulation in ("OGM", "OGM_GE") and self.rho_decoupled is not None and (
                self.args.modulation_starts <= self.ctx.epoch <= self.args.modulation_ends):
            # main.py's own rule on its own ratio (ratio_v = 1 / rho_decoupled), for the record
            k_a, k_v = ogm_coefficients(self.rho_decoupled, self.args.alpha)
        self.steps.append(torch.stack([t.to(device=device, dtype=torch.float32) for t in (rho_df, rho_dec, k_a, k_v)]))
        self.step_out, self.rho_decoupled = None, None

    # records
    def flush_steps(self) -> None:
        if not self.steps:
            return
        rows = torch.stack(self.steps).cpu().tolist()  # the one read-back per epoch
        for i, (rho_df, rho_dec, k_a, k_v) in enumerate(rows):
            self.ctx.recorder.write("step", epoch=self.ctx.epoch, step=i, rho_df=rho_df,
                                    rho_decoupled=rho_dec, k_audio=k_a, k_visual=k_v)
        self.steps = []

    def flush_eval(self) -> None:
        if not self.eval_probs:
            return
        probs = torch.cat(self.eval_probs).cpu().numpy()
        self.eval_probs = []
        dataset = self.ctx.state.get("datasets", {}).get("test")
        labels = None if dataset is None else np.asarray(dataset.label)
        fields = dict(epoch=self.ctx.epoch, evaluation=self.evaluations, n=len(probs))
        self.evaluations += 1
        if labels is None or len(labels) != len(probs):
            warnings.warn(f"ogm-ge: {len(probs)} eval outputs but "
                          f"{'no test dataset' if labels is None else f'{len(labels)} test labels'}: "
                          "Top-1 and mAP not recorded")
            self.ctx.recorder.write("eval", top1=None, mAP=None, **fields)
            return
        top1, m_ap = top1_and_map(probs, labels)
        self.ctx.recorder.write("eval", top1=top1, mAP=m_ap, **fields)

    def finish(self) -> None:
        self.flush_steps()
        self.flush_eval()


class _ModuleInitShim:
    """Sits between the recording model and the upstream ``AVClassifier`` in the MRO.

    The upstream calls ``super(AVClassifier, self).__init__()``, looking the name up in its module at
    call time, where it now finds the replacement: the call lands here (no arguments) and does what
    upstream meant, ``nn.Module.__init__``.
    """

    def __init__(self):
        nn.Module.__init__(self)


def recording_model_class(basic_model, fusion_modules) -> type:
    """A subclass of the upstream's ``AVClassifier`` that registers itself and feeds :class:`_Recording`."""

    upstream = basic_model.AVClassifier

    class RecordedAVClassifier(_ModuleInitShim, upstream):
        def __init__(self, args):
            ctx = _context()
            if ctx.config.simam2 and args.fusion_method not in FUSIONS:
                raise AdapterError(f"SimAM² replaces the {', '.join(FUSIONS)} fusions; "
                                   f"--fusion_method {args.fusion_method} has no SimAM² form")
            upstream.__init__(self, args)  # not super(): see _ModuleInitShim
            self._recording = _Recording(ctx, self, fusion_modules, args)
            ctx.state["recording"] = self._recording
            ctx.register_model(self)

        def train(self, mode: bool = True):
            self._recording.on_mode(bool(mode))
            return super().train(mode)

        def forward(self, audio, visual):
            a, v, out = super().forward(audio, visual)
            self._recording.on_forward(a, v, out)
            return a, v, out

    return RecordedAVClassifier


def recording_dataset_class(base: type) -> type:
    """A subclass of an upstream dataset that makes itself known to the run (for eval labels)."""

    class RecordedDataset(base):
        def __init__(self, args, mode="train"):
            super().__init__(args, mode=mode)
            ctx = current_context()
            if ctx is not None:
                ctx.state.setdefault("datasets", {})[mode] = self

    RecordedDataset.__name__ = RecordedDataset.__qualname__ = f"Recorded{base.__name__}"
    return RecordedDataset


# -- the adapter ---------------------------------------------------------------------------------

class OgmGeAdapter(Adapter):
    """OGM-GE's ``main.py`` with SimAM² fusion, decoupling-free modulation and per-step records."""

    name = "ogm-ge"
    upstream = "ogm-ge"
    script = "main.py"

    def replacements(self, config: RunConfig) -> list[Replacement]:
        import dataset.CramedDataset as cremad
        import dataset.VGGSoundDataset as vggsound
        import models.basic_model as basic_model
        import models.fusion_modules as fusion_modules

        reps = [
            Replacement("models.basic_model", "AVClassifier", recording_model_class(basic_model, fusion_modules)),
            Replacement("dataset.CramedDataset", "CramedDataset", recording_dataset_class(cremad.CramedDataset)),
            Replacement("dataset.VGGSoundDataset", "VGGSound", recording_dataset_class(vggsound.VGGSound)),
        ]
        if config.simam2:
            reps += [Replacement("models.basic_model", attr, cls)
                     for attr, cls in simam2_fusion_classes(fusion_modules, config).items()]
        return reps

    def on_start(self, ctx: RunContext) -> None:
        def loss_hook(module, args):
            rec = ctx.state.get("recording")
            if rec is not None and isinstance(module, nn.CrossEntropyLoss) and len(args) >= 2:
                rec.on_loss(args[0], args[1])

        def step_hook(optimizer, args, kwargs):
            rec = ctx.state.get("recording")
            if rec is not None:
                rec.on_step()

        ctx.add_cleanup(register_module_forward_pre_hook(loss_hook).remove)
        # registered in on_model, after the modulator's own hook, so that it sees this step's k
        ctx.state["step_hook"] = step_hook

    def on_model(self, ctx: RunContext, model) -> None:
        rec: _Recording = model._recording
        args = rec.args
        config = ctx.config
        ctx.recorder.write("start", fusion=args.fusion_method, upstream_modulation=args.modulation,
                           alpha=args.alpha, modulation_starts=args.modulation_starts,
                           modulation_ends=args.modulation_ends, train=bool(args.train),
                           simam2=config.simam2, zeta=config.zeta, modulation=config.modulation, ge=config.ge)
        if config.modulation == "df":
            if args.modulation != "Normal":
                raise AdapterError(f"decoupling-free modulation replaces main.py's own: run main.py with "
                                   f"--modulation Normal, not {args.modulation}")
            fusion = getattr(model.fusion_module, "simam2", None)
            if fusion is None:
                raise AdapterError("decoupling-free modulation reads ζ from the SimAM² fusion: turn simam2 on")
            audio = [p for p in model.audio_net.parameters() if p.dim() == 4]
            visual = [p for p in model.visual_net.parameters() if p.dim() == 4]
            groups = {"audio": audio, "visual": visual} if rec.audio_first else {"visual": visual, "audio": audio}
            rec.modulator = GradientModulator(
                groups, fusion=fusion, alpha=args.alpha, mode="ogm_ge" if config.ge else "ogm",
                start_epoch=args.modulation_starts, end_epoch=args.modulation_ends,
                epoch_fn=lambda: ctx.epoch, seed=config.seed)
            ctx.add_cleanup(rec.modulator.attach(None).remove)
        if "step_handle" not in ctx.state:
            handle = register_optimizer_step_pre_hook(ctx.state["step_hook"])
            ctx.state["step_handle"] = handle
            ctx.add_cleanup(handle.remove)

    def on_end(self, ctx: RunContext) -> None:
        rec = ctx.state.get("recording")
        if rec is not None:
            rec.finish()

    # -- CLI -------------------------------------------------------------------------------------

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("OGM-GE")
        g.add_argument("--fusion", choices=FUSIONS, default="sum",
                       help="main.py's --fusion_method (default sum)")

    def upstream_args(self, ns) -> list[str]:
        """main.py's fusion, modulation, α and window from the run options; arguments after -- win."""
        return ["--fusion_method", ns.fusion,
                "--modulation", UPSTREAM_MODULATION[(ns.modulation, not ns.no_ge)],
                "--alpha", str(ns.alpha),
                "--modulation_starts", str(ns.modulation_start),
                "--modulation_ends", str(ns.modulation_end)]

    def validate(self, argv: Sequence[str], cwd: Path) -> None:
        dataset = option_value(argv, "--dataset", "CREMAD")
        needed = {"CREMAD": ["data/CREMAD/train.csv", "data/CREMAD/test.csv"],
                  "VGGSound": ["data/VGGSound/vggsound.csv"]}.get(dataset, [])
        missing = [p for p in needed if not (Path(cwd) / p).is_file()]
        if missing:
            raise AdapterError(f"main.py reads its {dataset} lists relative to the working directory, and "
                               f"{Path(cwd).resolve()} lacks {', '.join(missing)}; run in the dataset folder "
                               f"(simam2 synth ogm-ge DIR writes one)")
        if dataset == "CREMAD":
            # main.py skips every listed clip whose files are missing: an empty set fails deep in torch
            audio = Path(cwd) / option_value(argv, "--audio_path", "/home/hudi/data/CREMA-D/AudioWAV")
            visual = Path(cwd) / option_value(argv, "--visual_path", "/home/hudi/data/CREMA-D/")
            if not audio.is_dir() or not (visual / "Image-{:02d}-FPS".format(int(option_value(argv, "--fps", 1)))).is_dir():
                raise AdapterError(f"main.py finds no CREMA-D clips: --audio_path {audio} needs the .wav files and "
                                   f"--visual_path {visual} the Image-NN-FPS frame folders (for simam2 synth's "
                                   f"layout: --audio_path AudioWAV --visual_path .)")

    def synth(self, out_dir, dataset: str = "CREMAD", **kwargs) -> Path:
        """Write a tiny synthetic CREMA-D (default) or VGGSound to ``out_dir``."""
        writers = {"CREMAD": write_cremad, "VGGSound": write_vggsound}
        if dataset not in writers:
            raise ValueError(f"dataset must be one of {', '.join(writers)}, got {dataset!r}")
        return writers[dataset](out_dir, **kwargs)


ADAPTER = OgmGeAdapter()


def run_table(out_dir, data_dir=None, epochs: int = 2, progress=print, **kwargs) -> str:
    """Table 1 on synthetic CREMA-D: see :mod:`simam2.adapters.ogm_ge_table`."""
    from .ogm_ge_table import run_table as _run_table

    return _run_table(out_dir, data_dir=data_dir, epochs=epochs, progress=progress, **kwargs)
