"""FOP (msaadsaeed/FOP, "Fusion and Orthogonal Projection for Improved Face-Voice Association"):
SimAM² in its fusion layer, decoupling-free modulation of its two branches, records.

The upstream's own ``main.py`` (training, with its online evaluation) and ``test.py`` (evaluation
of a checkpoint) run unchanged, after ``patches/fop``. Installing the adapter replaces, where
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

Parameters the adapter adds (the learnable ζ gate, SPEC §2) are not in the parameter groups that
``main.py`` hands to its Adam; a step pre-hook adds them as one more group, with the optimizer's
defaults (main.py's ``--lr`` and weight decay 0.01), before the first step.

Decoupling-free modulation (``modulation="df"``, Eq. 11): core's
:class:`~simam2.core.GradientModulator` over the face branch (modality 1: ζ is the face's weight)
and the voice branch, every parameter of each, hooked before each optimizer step.

Epochs: ``main.py`` calls ``model.train()`` before every batch and ``model.eval()`` once per epoch,
in its online evaluation; the epoch (0-based) is the number of evaluations so far.

Working directories: the scripts read ``features/*.csv`` and write ``output/`` and checkpoint
folders relative to the working directory; :func:`prepare_workdir` makes one from a dataset folder,
with a chosen split's verification list under the one name the scripts read. Nothing is written
into the checkout.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from simam2.core import GradientModulator, SimAM2

from .base import (Adapter, AdapterError, Replacement, RunConfig, RunContext, current_context, option_value,
                   run_script)
from .fop_synth import FACE_DIM, SPLITS, TRAIN_FILES, VOICE_DIM, list_files, write_fop

FUSIONS = ("gated", "linear")
EVAL_SCRIPT = "test.py"
#: The verification list both scripts read (online_evaluation.read_data, test.py's read_data).
READ_SPLIT = "unseenunheard"


def _context() -> RunContext:
    ctx = current_context()
    if ctx is None or not isinstance(ctx.adapter, FopAdapter):
        raise AdapterError("FOP replacement classes must be built inside installed(ADAPTER, ...)")
    return ctx


class _ModuleInitShim:
    """Sits between a replacement class and the upstream class it extends, in the MRO.

    FOP's classes call ``super(GatedFusion, self).__init__()``, looking their own name up in the
    module at call time, where they now find the replacement: the call lands here (no arguments)
    and does what the upstream meant, ``nn.Module.__init__``.
    """

    def __init__(self):
        nn.Module.__init__(self)


# -- SimAM² fusion classes (SPEC §2, §4) ------------------------------------------------------------

def simam2_fusion_classes(retrieval_model, config: RunConfig) -> dict[str, type]:
    """SimAM² subclasses of the upstream's ``GatedFusion`` and ``LinearWeightedAvg`` for ``config``."""
    opts = dict(lam=config.lam, s=config.s)
    upstream_gated = retrieval_model.GatedFusion
    upstream_linear = retrieval_model.LinearWeightedAvg

    class SimAM2GatedFusion(_ModuleInitShim, upstream_gated):
        """FOP's gated fusion with SimAM² over (tanh(face), tanh(voice)); ζ = FOP's gate when given."""

        def __init__(self, face_input, voice_input, embed_dim_in, mid_att_dim, emb_dim_out):
            upstream_gated.__init__(self, face_input, voice_input, embed_dim_in, mid_att_dim, emb_dim_out)
            if embed_dim_in != emb_dim_out:
                raise AdapterError(f"SimAM² fuses embeddings of the gate's width: embed_dim_in {embed_dim_in} "
                                   f"!= emb_dim_out {emb_dim_out}")
            self.simam2 = SimAM2(emb_dim_out, zeta=config.zeta, **opts)

        def fuse(self, face_trans, voice_trans, attention_out):
            """Eq. 4–8 in place of ``g·face + (1 − g)·voice``; ``attention_out`` is FOP's gate g."""
            zeta = attention_out if config.zeta == "given" else None
            return self.simam2(face_trans, voice_trans, zeta=zeta)

    class SimAM2LinearWeightedAvg(_ModuleInitShim, upstream_linear):
        """FOP's linear fusion: SimAM² over its two weighted terms (SPEC §4, summation)."""

        def __init__(self, face_feat_dim, voice_feat_dim):
            upstream_linear.__init__(self, face_feat_dim, voice_feat_dim)
            if config.zeta == "given":
                raise AdapterError("FOP's linear fusion has no gate to give ζ: use zeta='fixed' or 'learnable' "
                                   "(or --fusion gated)")
            if face_feat_dim != voice_feat_dim:
                raise AdapterError(f"face and voice embeddings differ in width: {face_feat_dim} vs {voice_feat_dim}")
            self.simam2 = SimAM2(face_feat_dim, zeta=config.zeta, **opts)

        def forward(self, face_feat, voice_feat):
            face_term, voice_term = self.terms(face_feat, voice_feat)
            return self.simam2(face_term, voice_term), face_feat, voice_feat

    return {"GatedFusion": SimAM2GatedFusion, "LinearWeightedAvg": SimAM2LinearWeightedAvg}


def recording_gated_class(retrieval_model) -> type:
    """FOP's ``GatedFusion``, output unchanged, keeping Σg and Σ(1 − g) of its last training forward:
    Eq. 11's ρ for FOP's own gate, recorded beside the SimAM² runs' (adapter installed, SimAM² off)."""
    upstream = retrieval_model.GatedFusion

    class RecordedGatedFusion(_ModuleInitShim, upstream):
        def __init__(self, *args):
            upstream.__init__(self, *args)
            self.gate_sums: torch.Tensor | None = None

        def fuse(self, face_trans, voice_trans, attention_out):
            if self.training:
                g = attention_out.detach()
                self.gate_sums = torch.stack([g.sum(), (1 - g).sum()])
            return super().fuse(face_trans, voice_trans, attention_out)

    return RecordedGatedFusion


# -- the recording model ----------------------------------------------------------------------------

class _Recording:
    """Per-run state shared by the model, the hooks and the evaluation wrapper (in ``ctx.state``)."""

    def __init__(self, ctx: RunContext, model, args):
        self.ctx, self.model, self.args = ctx, model, args
        self.evaluations = 0
        self.steps: list[torch.Tensor] = []
        self.modulator: GradientModulator | None = None

    @property
    def fusion(self) -> SimAM2 | None:
        return getattr(self.model.fusion_layer, "simam2", None)

    def on_eval_mode(self) -> None:
        self.flush_steps()

    @torch.no_grad()
    def on_step(self) -> None:
        """Before optimizer.step(): this step's ρ (Eq. 11, face over voice), r and k, kept on device."""
        fusion = self.fusion
        if fusion is not None and fusion.r is not None:
            sums, r = fusion.weight_sums, fusion.r
        else:  # FOP's own gate, SimAM² off (no r: Eq. 6 belongs to SimAM²)
            sums, r = getattr(self.model.fusion_layer, "gate_sums", None), float("nan")
            if sums is None:
                return
        nan = sums.new_full((), float("nan"))
        k_face = k_voice = nan
        m = self.modulator
        if m is not None and m.last.get("applied"):
            k_face, k_voice = m.last["k1"], m.last["k2"]
        values = (sums[0] / sums[1], r, k_face, k_voice)
        self.steps.append(torch.stack([torch.as_tensor(v, dtype=torch.float32, device=sums.device).reshape(())
                                       for v in values]))

    def flush_steps(self) -> None:
        if not self.steps:
            return
        rows = torch.stack(self.steps).cpu().tolist()  # one read-back per epoch
        for i, (rho, r, k_face, k_voice) in enumerate(rows):
            self.ctx.recorder.write("step", epoch=self.ctx.epoch, step=i, rho_face=rho, r=r,
                                    k_face=k_face, k_voice=k_voice)
        self.steps = []

    def on_evaluation(self, eer: float, auc: float) -> None:
        self.ctx.recorder.write("eval", epoch=self.ctx.epoch, evaluation=self.evaluations,
                                eer=float(eer), auc=float(auc))
        self.evaluations += 1
        self.ctx.epoch = self.evaluations


def recording_fop_class(retrieval_model) -> type:
    """A subclass of the upstream's ``FOP`` that registers itself and counts its evaluations."""

    upstream = retrieval_model.FOP

    class RecordedFOP(_ModuleInitShim, upstream):
        def __init__(self, args, face_feat_dim, voice_feat_dim):
            ctx = _context()
            if (face_feat_dim, voice_feat_dim) != (FACE_DIM, VOICE_DIM):
                raise AdapterError(f"FOP's evaluation reads {FACE_DIM} face and {VOICE_DIM} voice features; "
                                   f"the training files give {face_feat_dim} and {voice_feat_dim}")
            if args.fusion not in FUSIONS:
                raise AdapterError(f"--fusion must be one of {', '.join(FUSIONS)}, got {args.fusion!r} "
                                   "(FOP then builds no fusion layer)")
            upstream.__init__(self, args, face_feat_dim, voice_feat_dim)  # not super(): see _ModuleInitShim
            self._recording = _Recording(ctx, self, args)
            ctx.state["recording"] = self._recording
            ctx.register_model(self)

        def train(self, mode: bool = True):
            if not mode:
                self._recording.on_eval_mode()
            return super().train(mode)

    return RecordedFOP


def recording_online_test(upstream_test):
    """``online_evaluation.test`` that also records the EER and AUC it returns."""

    def test(args, model, face_test, voice_test):
        eer, auc = upstream_test(args, model, face_test, voice_test)
        rec = getattr(model, "_recording", None)
        if rec is not None:
            rec.on_evaluation(eer, auc)
        return eer, auc

    test.__wrapped__ = upstream_test
    return test


# -- working directories and their validation ---------------------------------------------------------

def prepare_workdir(data_dir, workdir, split: str = READ_SPLIT) -> Path:
    """A working directory for FOP's scripts: ``features/`` linking ``data_dir/features``'s training
    files and ``split``'s verification list under the name the scripts read, and an ``output/``.

    ``data_dir`` is a folder written by :func:`~simam2.adapters.fop_synth.write_fop` (or real
    features laid out the same way). Returns ``workdir``.
    """
    face_list, voice_list = list_files(split)  # checks the split
    src = Path(data_dir).resolve() / "features"
    work = Path(workdir)
    links = {name: src / name for name in TRAIN_FILES}
    links.update(zip(list_files(READ_SPLIT), (src / face_list, src / voice_list)))
    missing = [str(p) for p in links.values() if not p.is_file()]
    if missing:
        raise AdapterError(f"dataset folder {data_dir} lacks {', '.join(missing)} "
                           "(simam2 synth fop DIR writes one)")
    features = work / "features"
    features.mkdir(parents=True, exist_ok=True)
    (work / "output").mkdir(exist_ok=True)
    for name, target in links.items():
        dest = features / name
        if dest.resolve() == target:
            continue
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        try:
            dest.symlink_to(target)
        except OSError:  # no symlinks here (some file systems): copy
            shutil.copyfile(target, dest)
    return work


def _csv_shape(path: Path) -> tuple[int, int]:
    """(rows, columns of the first row) of a header-less CSV, without parsing it all."""
    with open(path, "rb") as f:
        first = f.readline()
        if not first.strip():
            return 0, 0
        cols = first.count(b",") + 1
        rows = 1 + sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    if not first.endswith(b"\n"):
        rows -= 1  # the count above found no newline for the first row
    return rows, cols


def validate_features(workdir: Path, training: bool) -> None:
    """Check the CSVs FOP is about to read under ``workdir/features``; AdapterError naming the file.

    Training files: faces exactly 4096 features + identity (main.py takes column 4096 as the label
    and drops the last column), voices exactly 512 + identity, the same rows. Verification list:
    at least 4096 / 512 columns (the rest are ignored), the same rows, at least 10 pairs (10 folds).
    """
    features = Path(workdir) / "features"
    face_list, voice_list = list_files(READ_SPLIT)
    checks = [(face_list, FACE_DIM, False), (voice_list, VOICE_DIM, False)]
    if training:
        checks = [(TRAIN_FILES[0], FACE_DIM + 1, True), (TRAIN_FILES[1], VOICE_DIM + 1, True)] + checks
    rows = {}
    for name, width, exact in checks:
        path = features / name
        if not path.is_file():
            raise AdapterError(f"FOP reads {path}, which does not exist; make the working directory with "
                               f"prepare_workdir or simam2 synth fop DIR")
        n, cols = _csv_shape(path)
        if n == 0:
            raise AdapterError(f"{path} is empty")
        if cols != width if exact else cols < width:
            want = f"exactly {width}" if exact else f"at least {width}"
            raise AdapterError(f"{path} has {cols} columns; FOP needs {want} "
                               f"({width - 1 if exact else width} features{' + identity' if exact else ''})")
        rows[name] = n
    pairs = [(face_list, voice_list)] + ([TRAIN_FILES] if training else [])
    for a, b in pairs:
        if rows[a] != rows[b]:
            raise AdapterError(f"{features / a} has {rows[a]} rows but {features / b} has {rows[b]}: "
                               "row i of both must be the same sample or pair")
    if rows[face_list] < 10:
        raise AdapterError(f"{features / face_list} has {rows[face_list]} pairs; FOP's evaluation needs "
                           "at least 10 (10 folds)")
    if training and not (Path(workdir) / "output").is_dir():
        raise AdapterError(f"main.py writes its log to output/, and {Path(workdir).resolve()} has none")


#: Third-party modules each script imports (pip names in brackets where they differ).
SCRIPT_IMPORTS = {"main.py": ("pandas", "sklearn [scikit-learn]", "scipy", "matplotlib", "tqdm"),
                  "test.py": ("pandas", "sklearn [scikit-learn]", "scipy")}


def validate_imports(script: str) -> None:
    """Name every missing module the script imports at once, rather than the first, mid-run."""
    import importlib.util

    missing = [m for m in SCRIPT_IMPORTS.get(script, ()) if importlib.util.find_spec(m.split()[0]) is None]
    if missing:
        names = [m.split()[-1].strip("[]") for m in missing]
        raise AdapterError(f"FOP's {script} imports {', '.join(m.split()[0] for m in missing)}, not installed: "
                           f"pip install {' '.join(names)} (or the project's [upstream] extra)")


def validate_main_args(argv: Sequence[str], train_rows: int) -> None:
    """Catch main.py's option traps before a long read: each fails late, or silently, upstream."""
    if any(a == "--alpha_list" or a.startswith("--alpha_list=") for a in argv):
        raise AdapterError("main.py's --alpha_list (type=list) splits its value into characters; leave it out "
                           "(the default trains with alpha 1, and main.py returns after the first alpha anyway)")
    batch = int(option_value(argv, "--batch_size", 1))
    if batch < 2:
        raise AdapterError(f"--batch_size {batch}: FOP's BatchNorm1d layers need at least 2 samples per batch "
                           "(main.py's default is 1)")
    if train_rows // batch < 1:
        raise AdapterError(f"--batch_size {batch} exceeds the {train_rows} training rows: no batch to train on")
    epochs = int(option_value(argv, "--max_num_epoch", 5))
    if epochs < 2:
        raise AdapterError(f"--max_num_epoch {epochs}: main.py trains epochs 1 .. max_num_epoch - 1, so "
                           "it needs at least 2")
    fusion = option_value(argv, "--fusion", "gated")
    if fusion not in FUSIONS:
        raise AdapterError(f"--fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")


# -- the adapter ----------------------------------------------------------------------------------

class FopAdapter(Adapter):
    """FOP's ``main.py`` and ``test.py`` with SimAM² fusion, decoupling-free modulation and records."""

    name = "fop"
    upstream = "fop"
    script = "main.py"
    eval_script = EVAL_SCRIPT

    def replacements(self, config: RunConfig) -> list[Replacement]:
        import online_evaluation
        import retrieval_model

        if config.modulation == "ogm-ge":
            raise AdapterError("FOP has no per-modality classifier to split for OGM-GE's decoupled ratio: "
                               "use modulation='df' (ζ = FOP's gate) or 'none'")
        reps = [
            Replacement("retrieval_model", "FOP", recording_fop_class(retrieval_model)),
            Replacement("online_evaluation", "test", recording_online_test(online_evaluation.test)),
        ]
        if config.simam2:
            reps += [Replacement("retrieval_model", attr, cls)
                     for attr, cls in simam2_fusion_classes(retrieval_model, config).items()]
        else:
            reps.append(Replacement("retrieval_model", "GatedFusion", recording_gated_class(retrieval_model)))
        return reps

    def on_start(self, ctx: RunContext) -> None:
        # main.py sets CUDA_VISIBLE_DEVICES for its own process; do not leak it into ours
        saved = os.environ.get("CUDA_VISIBLE_DEVICES")

        def restore_env():
            if saved is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = saved

        ctx.add_cleanup(restore_env)
        ctx.add_cleanup(_close_figures)

    def on_model(self, ctx: RunContext, model) -> None:
        rec: _Recording = model._recording
        args, config = rec.args, ctx.config
        ctx.recorder.write("start", fusion=args.fusion, dim_embed=args.dim_embed, simam2=config.simam2,
                           zeta=config.zeta, modulation=config.modulation, ge=config.ge, alpha=config.alpha)
        if rec.fusion is not None:
            ctx.register_fusion(rec.fusion)
        if config.modulation == "df":
            if rec.fusion is None:
                raise AdapterError("decoupling-free modulation reads ζ from the SimAM² fusion: turn simam2 on")
            groups = {"face": list(model.face_branch.parameters()), "voice": list(model.voice_branch.parameters())}
            rec.modulator = GradientModulator(
                groups, fusion=rec.fusion, alpha=config.alpha, mode="ogm_ge" if config.ge else "ogm",
                start_epoch=config.modulation_start, end_epoch=config.modulation_end,
                epoch_fn=lambda: ctx.epoch, seed=config.seed)
            ctx.add_cleanup(rec.modulator.attach(None).remove)
        if "step_handle" not in ctx.state:
            # registered after the modulator's hook, so that the record sees this step's k
            handle = register_optimizer_step_pre_hook(_step_hook(ctx))
            ctx.state["step_handle"] = handle
            ctx.add_cleanup(handle.remove)

    def on_end(self, ctx: RunContext) -> None:
        rec = ctx.state.get("recording")
        if rec is not None:
            rec.flush_steps()

    def validate(self, argv: Sequence[str], cwd: Path) -> None:
        ctx = current_context()
        script = ctx.script if ctx is not None and ctx.script else self.script
        training = script == self.script
        validate_imports(script)
        validate_features(cwd, training)
        if training:
            rows, _ = _csv_shape(Path(cwd) / "features" / TRAIN_FILES[0])
            validate_main_args(argv, rows)
        else:
            ckpt = Path(cwd) / option_value(argv, "--ckpt", "checkpoint.pth.tar")
            if not ckpt.is_file():
                raise AdapterError(f"test.py loads --ckpt {ckpt}, which does not exist")

    # -- CLI -------------------------------------------------------------------------------------

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("FOP", "With --simam2, ζ is FOP's own gate unless --zeta says otherwise "
                                             "(--zeta given is FOP's default).")
        g.add_argument("--evaluate", action="store_true",
                       help="run test.py (evaluate -- --ckpt PATH --fusion F) instead of main.py")
        g.add_argument("--data", type=Path, default=None,
                       help="dataset folder (simam2 synth fop DIR); the working directory is prepared from it")
        g.add_argument("--split", choices=SPLITS, default=READ_SPLIT,
                       help="verification list the scripts read (default unseenunheard)")
        parser.set_defaults(zeta="given")  # FOP's own gate is ζ unless asked otherwise

    def script_for(self, ns) -> str:
        return self.eval_script if ns.evaluate else self.script

    def workdir_for(self, ns) -> Path | None:
        if ns.data is None:
            if ns.split != READ_SPLIT:
                raise AdapterError("--split needs --data: the working directory is prepared from the dataset folder")
            return ns.workdir
        if ns.workdir is None:
            raise AdapterError("--data needs --workdir: where to prepare the working directory")
        return prepare_workdir(ns.data, ns.workdir, ns.split)

    def synth(self, out_dir, **kwargs) -> Path:
        """Write a tiny synthetic face–voice dataset (see :mod:`.fop_synth`) to ``out_dir``."""
        return write_fop(out_dir, **kwargs)


def _step_hook(ctx: RunContext):
    seen: set[int] = set()

    def hook(optimizer, args, kwargs):
        rec = ctx.state.get("recording")
        if rec is None:
            return
        if id(optimizer) not in seen:
            seen.add(id(optimizer))
            _add_missing_params(ctx, optimizer, rec.model)
        rec.on_step()

    return hook


def _add_missing_params(ctx: RunContext, optimizer, model) -> None:
    """Put the adapter's own parameters (a learnable ζ gate) into main.py's optimizer, once."""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if not any(id(p) in held for p in model.parameters()):
        return  # not this model's optimizer
    fusion = getattr(model.fusion_layer, "simam2", None)
    missing = [p for p in (fusion.parameters() if fusion is not None else ()) if id(p) not in held and p.requires_grad]
    if missing:
        optimizer.add_param_group({"params": missing})
        ctx.recorder.write("param_group_added", params=sum(p.numel() for p in missing))


def _close_figures() -> None:
    """main.py draws into pyplot figures 1–3 and never closes them: a second run in this process would
    draw over the first one's curves."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close("all")


ADAPTER = FopAdapter()


# -- evaluation of a checkpoint through test.py, and Table 3 -------------------------------------------

_PRINTED = {"eer": re.compile(r"Equal Error Rate \(EER\): ([0-9.]+)"),
            "auc": re.compile(r"Area Under Curve \(AUC\): ([0-9.]+)"),
            "accuracy": re.compile(r"Accuracy: ([0-9.]+)\+-")}


def parse_test_output(text: str) -> dict[str, float]:
    """EER, AUC and accuracy as test.py prints them (three decimals); it returns nothing else."""
    found = {k: rx.findall(text) for k, rx in _PRINTED.items()}
    missing = [k for k, v in found.items() if not v]
    if missing:
        raise AdapterError(f"test.py printed no {', '.join(missing)}; its output ends with: {text[-300:]!r}")
    return {k: float(v[-1]) for k, v in found.items()}


def evaluate_checkpoint(checkpoint, data_dir, workdir, split: str = READ_SPLIT, fusion: str = "gated",
                        config: RunConfig | None = None, checkout=None, log=None, extra_args=()) -> dict:
    """Run test.py on ``checkpoint`` against ``split``'s list of ``data_dir``, in ``workdir``
    (prepared here); returns {"eer", "auc", "accuracy"} as test.py prints them.

    ``config`` must match the one the checkpoint was trained with (SimAM² on or off: the state
    dict of a learnable ζ gate only loads into a model that has one). ``log``: a text file that
    receives the script's output (default: kept in memory only).
    """
    work = prepare_workdir(data_dir, workdir, split)
    argv = ["--ckpt", str(Path(checkpoint).resolve()), "--fusion", fusion, *extra_args]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        run_script(ADAPTER, argv, config or RunConfig(), checkout=checkout, cwd=work, script=EVAL_SCRIPT)
    if log is not None:
        with open(log, "a", encoding="utf-8") as f:
            f.write(buf.getvalue())
    return parse_test_output(buf.getvalue())


def best_checkpoint(workdir, fusion: str = "gated", save_dir: str = "model", alpha: float = 1.0) -> Path:
    """main.py's best checkpoint (lowest online EER, the latest of equals): the newest file it
    saved under ``best_<fusion>_<save_dir>_alpha_<alpha>``."""
    folder = Path(workdir) / ("best_%s_%s_alpha_%0.2f" % (fusion, save_dir, alpha))
    found = sorted(folder.glob("checkpoint_*.pth.tar"))
    if not found:
        raise AdapterError(f"main.py saved no best checkpoint in {folder}")
    return found[-1]


#: Table 3 of the paper (VoxCeleb1, % ), for reference beside the synthetic numbers.
PAPER_TABLE3 = {"FOP": (19.3, 89.3, 24.9, 83.5), "FOP + SimAM²": (18.5, 89.8, 24.6, 83.7)}
TABLE3_CELLS = {"FOP": RunConfig(simam2=False), "FOP + SimAM²": RunConfig(simam2=True, zeta="given")}


def run_table(out_dir, data_dir=None, epochs: int = 6, seeds: Sequence[int] = (0, 1, 2), lr: float = 1e-3,
              batch_size: int = 32, checkout=None, progress=print) -> str:
    """Table 3 on a synthetic face–voice set: EER and AUC (%) on Seen-Heard and Unseen-Unheard for
    FOP's gated fusion and for SimAM² with FOP's gate as ζ, mean ± std over ``seeds``.

    Each cell trains with FOP's own main.py for ``epochs`` epochs (``--max_num_epoch epochs + 1``)
    and evaluates main.py's best checkpoint with FOP's own test.py on both lists. Runs, logs and
    records go to ``out_dir``; the synthetic set is written there unless ``data_dir`` is given.
    """
    out = Path(out_dir)
    data = Path(data_dir) if data_dir is not None else write_fop(out / "data", seed=0)
    results: dict[str, list[list[float]]] = {}
    for name, base_config in TABLE3_CELLS.items():
        slug = "simam2" if base_config.simam2 else "fop"
        for seed in seeds:
            run_dir = out / slug / f"seed{seed}"
            config = RunConfig(**{**base_config.__dict__, "seed": seed, "record": run_dir / "records.jsonl"})
            if config.record.exists():
                config.record.unlink()
            work = prepare_workdir(data, run_dir / "train")
            log = run_dir / "log.txt"
            progress(f"fop table: {name}, seed {seed}: main.py, {epochs} epochs")
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                run_script(ADAPTER, ["--batch_size", str(batch_size), "--max_num_epoch", str(epochs + 1),
                                     "--lr", str(lr), "--seed", str(seed), "--fusion", "gated"],
                           config, checkout=checkout, cwd=work)
            log.write_text(buf.getvalue(), encoding="utf-8")
            ckpt = best_checkpoint(work)
            row = []
            for split in ("seenheard", "unseenunheard"):
                m = evaluate_checkpoint(ckpt, data, run_dir / f"test_{split}", split,
                                        config=RunConfig(simam2=config.simam2, zeta=config.zeta),
                                        checkout=checkout, log=log)
                row += [100 * m["eer"], 100 * m["auc"]]
            progress(f"  best {ckpt.name}: Seen-Heard EER {row[0]:.1f} AUC {row[1]:.1f}, "
                     f"Unseen-Unheard EER {row[2]:.1f} AUC {row[3]:.1f}")
            results.setdefault(name, []).append(row)
    return format_table3(results, epochs=epochs, seeds=seeds)


def format_table3(results: dict[str, list[list[float]]], epochs: int, seeds: Sequence[int]) -> str:
    """Table 3's layout: one row per method, EER ↓ and AUC ↑ (%) per split, the paper's beside."""
    import numpy as np

    head = f"{'':<16}{'Seen-Heard':^24}{'Unseen-Unheard':^24}"
    sub = f"{'Method':<16}" + f"{'EER ↓':^12}{'AUC ↑':^12}" * 2
    lines = [f"Table 3: face-voice association (FOP), synthetic VoxCeleb-format features, "
             f"{epochs} epochs, mean ± std over seeds {', '.join(map(str, seeds))}", head, sub]
    for name, rows in results.items():
        a = np.asarray(rows, dtype=float)
        cells = [f"{m:.1f} ± {s:.1f}" for m, s in zip(a.mean(0), a.std(0))]
        lines.append(f"{name:<16}" + "".join(f"{c:^12}" for c in cells))
    lines.append("paper (VoxCeleb1):")
    for name, vals in PAPER_TABLE3.items():
        lines.append(f"{name:<16}" + "".join(f"{v:^12.1f}" for v in vals))
    return "\n".join(lines)
