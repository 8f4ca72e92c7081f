"""What the AVE adapters (AVGA, PSP) share: per-run state, records, gradient modulation, input checks.

Both upstreams localise events in AVE: 10 one-second segments per video, 29 classes (28 events and
background), two streams (audio, visual) of per-segment embeddings that a late fusion combines before
a two-layer head. The adapters (:mod:`.avga`, :mod:`.psp`) replace the upstream model classes by
subclasses that call into an :class:`AveRun`, kept in the run context, which

- counts epochs (each adapter says how: AVGA from its training set's first batch, PSP from
  ``model.train()``);
- keeps the two streams of the last training forward, so that at the loss (a global module forward
  pre-hook on the upstream's criterion, which also gives the segment labels) it can compute OGM-GE's
  decoupled ratio (SPEC §6) from per-modality logits;
- drives core's :class:`~simam2.core.GradientModulator` for ``modulation="ogm-ge"`` (ratio
  ``"decoupled"``, from those logits) and ``modulation="df"`` (ratio ``"zeta"``, Eq. 11, from the
  SimAM² fusion's ζ), on the parameter groups the adapter names as each modality's encoder;
- records, per optimizer step, both ratios and the applied coefficients, and per evaluation (the
  scripts' ``val()`` / ``test()``) the segment accuracy exactly as the scripts' ``compute_acc``.

Modality 1 is audio throughout: ζ is audio's weight, ``rho_df`` = Σζ / Σ(1 − ζ),
``rho_decoupled`` = score_audio / score_visual.

``run_table`` (Table 2 on a synthetic AVE) lives in :mod:`.ave_table`; the data in :mod:`.ave_synth`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.optim.optimizer import register_optimizer_step_pre_hook

from simam2.core import GradientModulator, decoupled_scores

from .ave_synth import EVAL_BATCH, AveInputError, check_inputs, write_synthetic_ave
from .base import Adapter, AdapterError, RunConfig, RunContext, current_context, option_value

STATE_KEY = "ave_run"


class InitShim:
    """Sits between a replacement model class and the upstream class in the MRO.

    The upstreams call ``super(ClassName, self).__init__()``, looking ``ClassName`` up in their module
    at call time, where it now finds the replacement: the call lands here (no arguments) and does what
    the upstream meant, ``nn.Module.__init__``.
    """

    def __init__(self):
        nn.Module.__init__(self)


def publish(cls: type, module_name: str, name: str) -> type:
    """Make a run-time subclass picklable by reference as ``module_name.name``.

    Both upstreams ``torch.save`` the whole model; pickle stores its class by module and name, so the
    class must be reachable there (also when a later run ``torch.load``s the checkpoint).
    """
    import sys

    cls.__module__, cls.__qualname__, cls.__name__ = module_name, name, name
    setattr(sys.modules[module_name], name, cls)
    return cls


def active_run(adapter_cls: type | None = None) -> "AveRun | None":
    """The AveRun of the innermost installed run (of ``adapter_cls`` if given), else None."""
    ctx = current_context()
    if ctx is None or (adapter_cls is not None and not isinstance(ctx.adapter, adapter_cls)):
        return None
    return ctx.state.get(STATE_KEY)


def segment_accuracy(outputs: np.ndarray, labels: np.ndarray, n: int) -> float:
    """The scripts' ``compute_acc``: the fraction of the first ``n`` videos' segments whose argmax
    over classes agrees with the one-hot label's."""
    pred = outputs[:n].argmax(-1)
    true = labels[:n].argmax(-1)
    return float((pred == true).mean())


class AveRun:
    """The per-run state the replacement classes and hooks share (``ctx.state["ave_run"]``)."""

    def __init__(self, ctx: RunContext, adapter: "AveAdapter"):
        self.ctx, self.adapter = ctx, adapter
        self.model: nn.Module | None = None
        self.streams: tuple[torch.Tensor, torch.Tensor] | None = None  # (audio, visual) of the last training forward
        self.rho_decoupled: float | None = None
        self.modulator: GradientModulator | None = None
        self.step = 0
        self.pending_eval: tuple[str, np.ndarray, int] | None = None  # (split, one-hot labels, videos)

    # epochs
    def set_epoch(self, epoch: int) -> None:
        if epoch != self.ctx.epoch:
            self.step = 0
        self.ctx.epoch = epoch

    def current_epoch(self) -> int:
        return self.ctx.epoch

    # training forward, loss, step
    def on_streams(self, audio: torch.Tensor, visual: torch.Tensor) -> None:
        """The two per-segment streams entering the fusion in a training forward."""
        self.streams = (audio.detach(), visual.detach())

    @torch.no_grad()
    def on_loss(self, segment_labels: torch.Tensor) -> None:
        """At the criterion of a training step: OGM-GE's decoupled ratio from per-modality logits."""
        if self.streams is None or self.model is None:
            return
        a, v = self.streams
        if segment_labels.shape != a.shape[:-1]:
            return
        logits_a, logits_v = self.adapter.modality_logits(self.model, a, v)
        labels = segment_labels.reshape(-1)
        la, lv = logits_a.reshape(labels.shape[0], -1), logits_v.reshape(labels.shape[0], -1)
        if self.modulator is not None and self.modulator.ratio == "decoupled":
            rho = self.modulator.observe_logits(la, lv, labels)
        else:
            s = decoupled_scores(la, lv, labels)
            rho = s[0] / s[1]
        self.rho_decoupled = float(rho)

    @torch.no_grad()
    def on_step(self) -> None:
        """Before ``optimizer.step()`` (after the modulator's own hook): one step record."""
        if self.streams is None:
            return
        fusion = self.adapter.fusion(self.model) if self.model is not None else None
        sums = getattr(fusion, "weight_sums", None)
        rho_df = float(sums[0] / sums[1]) if sums is not None else None
        r = float(fusion.r) if fusion is not None and fusion.r is not None else None
        k_a = k_v = None
        m = self.modulator
        if m is not None and m.last.get("applied"):
            k_a, k_v = float(m.last["k1"]), float(m.last["k2"])
        self.ctx.recorder.write("step", epoch=self.ctx.epoch, step=self.step, rho_df=rho_df,
                                rho_decoupled=self.rho_decoupled, k_audio=k_a, k_visual=k_v, r=r)
        self.step += 1
        self.streams, self.rho_decoupled = None, None

    # evaluation
    def expect_eval(self, split: str, labels: np.ndarray, n_videos: int) -> None:
        """An evaluation set handed out its batch: the next eval-mode forward is scored against it."""
        self.pending_eval = (split, np.array(labels, copy=True), n_videos)

    def on_eval_output(self, outputs: torch.Tensor) -> None:
        if self.pending_eval is None:
            return
        split, labels, n = self.pending_eval
        self.pending_eval = None
        acc = segment_accuracy(outputs.detach().float().cpu().numpy(), labels, n)
        self.ctx.recorder.write("eval", split=split, epoch=self.ctx.epoch, acc=acc, n=n)


# -- the shared adapter ------------------------------------------------------------------------------

class AveAdapter(Adapter):
    """Common run-time behaviour of the AVGA and PSP adapters; subclasses supply the specifics.

    Subclass attributes: ``criterion`` (the loss class whose call gives the labels), ``label_option``
    and ``label_default`` (the script's label file option), ``model_names`` (--model_name values the
    SimAM² replacement covers). Subclass methods: :meth:`modality_groups`, :meth:`modality_logits`,
    :meth:`segment_labels`, :meth:`needed_orders`, :meth:`train_minimum`.
    """

    criterion: type = nn.Module
    label_option = "--dir_labels"
    label_default = "data/labels.h5"
    model_default = ""
    model_names: tuple[str, ...] = ()

    # -- what subclasses define ------------------------------------------------------------------

    def fusion(self, model: nn.Module):
        """The model's SimAM² fusion module, or None (vanilla fusion)."""
        return getattr(model, "simam2", None)

    def modality_groups(self, model: nn.Module) -> dict[str, list[nn.Parameter]]:
        """{"audio": [...], "visual": [...]}: each modality's encoder parameters."""
        raise NotImplementedError

    def modality_logits(self, model: nn.Module, audio: torch.Tensor, visual: torch.Tensor):
        """Per-modality logits (…, 29) from the head split per modality (OGM-GE's decoupling)."""
        raise NotImplementedError

    def segment_labels(self, args: tuple) -> torch.Tensor | None:
        """The (B, 10) class indices from the criterion's positional arguments."""
        raise NotImplementedError

    def needed_orders(self, train: bool) -> list[str]:
        raise NotImplementedError

    # -- install hooks ---------------------------------------------------------------------------

    def on_start(self, ctx: RunContext) -> None:
        run = ctx.state[STATE_KEY] = AveRun(ctx, self)

        def loss_hook(module, args):
            if isinstance(module, self.criterion) and run.streams is not None and len(args) >= 2:
                labels = self.segment_labels(args)
                if labels is not None:
                    run.on_loss(labels)

        ctx.add_cleanup(register_module_forward_pre_hook(loss_hook).remove)

    def on_model(self, ctx: RunContext, model) -> None:
        """The script's model is built: make it the run's, attach the modulator, then the recorder."""
        run: AveRun = ctx.state[STATE_KEY]
        if run.model is not None:
            return
        run.model = model
        config = ctx.config
        groups = self.modality_groups(model)
        ctx.recorder.write("start", adapter=self.name, simam2=config.simam2, zeta=config.zeta,
                           modulation=config.modulation, ge=config.ge, alpha=config.alpha,
                           audio_params=sum(p.numel() for p in groups["audio"]),
                           visual_params=sum(p.numel() for p in groups["visual"]))
        if config.modulation != "none":
            fusion = self.fusion(model)
            if config.modulation == "df" and fusion is None:
                raise AdapterError("decoupling-free modulation reads ζ from the SimAM² fusion: turn simam2 on")
            run.modulator = GradientModulator(
                groups, fusion=fusion if config.modulation == "df" else None, alpha=config.alpha,
                mode="ogm_ge" if config.ge else "ogm", start_epoch=config.modulation_start,
                end_epoch=config.modulation_end, epoch_fn=run.current_epoch,
                ratio="zeta" if config.modulation == "df" else "decoupled", seed=config.seed)
            ctx.add_cleanup(run.modulator.attach(None).remove)

        own = {id(p) for p in model.parameters()}

        def step_hook(optimizer, args, kwargs):
            if any(id(p) in own for g in optimizer.param_groups for p in g["params"]):
                run.on_step()

        # registered after the modulator's hook, so that the record sees this step's coefficients
        ctx.add_cleanup(register_optimizer_step_pre_hook(step_hook).remove)

    # -- inputs ----------------------------------------------------------------------------------

    def validate(self, argv: Sequence[str], cwd: Path) -> None:
        """Check the h5 files the script will read and the working directory it will write to."""
        ctx = current_context()
        cwd = Path(cwd).resolve()
        config = ctx.config if ctx is not None else RunConfig()
        script = getattr(ctx, "script", None) or self.script
        if script != self.script:
            if config.simam2 or config.modulation != "none":
                raise AdapterError(f"{self.name}: SimAM² and modulation are wired into {self.script} only, "
                                   f"not {script}")
            return  # another script of the checkout, run as is
        if ctx is not None and (cwd == ctx.checkout or ctx.checkout in cwd.parents):
            raise AdapterError(f"{self.name}: run in an output folder of its own, not inside the upstream "
                               f"checkout {ctx.checkout} (the script writes checkpoints to its working directory)")
        model_name = option_value(argv, "--model_name", self.model_default)
        if (config.simam2 or config.modulation != "none") and model_name not in self.model_names:
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
            self.check_more(argv, cwd, train, batch, orders)
        except AveInputError as e:
            raise AdapterError(f"{self.name}: {self.script}: {e}") from None

    batch_default = 64

    def check_more(self, argv, cwd: Path, train: bool, batch: int, orders: dict) -> None:
        """Script-specific checks and preparations (subclasses)."""

    @staticmethod
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

    # -- CLI -------------------------------------------------------------------------------------

    def add_arguments(self, parser) -> None:
        g = parser.add_argument_group(self.name.upper())
        g.add_argument("--data", type=Path, default=None,
                       help="an AVE folder as `simam2 synth` writes it: sets the script's --dir_* options "
                            "(arguments after -- still win)")

    def upstream_args(self, ns) -> list[str]:
        data = getattr(ns, "data", None)
        return data_args(Path(data).absolute(), self.label_option, Path(self.label_default).name) if data else []

    def workdir_for(self, ns) -> Path | None:
        """The script writes checkpoints to its working directory: create ``--workdir`` if needed."""
        if ns.workdir is not None:
            Path(ns.workdir).mkdir(parents=True, exist_ok=True)
        return ns.workdir

    def synth(self, out_dir, **kwargs) -> Path:
        """A tiny AVE set in the upstream's format (see :func:`.ave_synth.write_synthetic_ave`)."""
        return write_synthetic_ave(out_dir, **kwargs)


def data_args(data: Path, labels_option: str, labels_file: str) -> list[str]:
    """The scripts' data options for a folder written by :func:`write_synthetic_ave`."""
    data = Path(data)
    return ["--dir_video", str(data / "visual_feature.h5"), "--dir_audio", str(data / "audio_feature.h5"),
            labels_option, str(data / labels_file),
            "--dir_order_train", str(data / "train_order.h5"), "--dir_order_val", str(data / "val_order.h5"),
            "--dir_order_test", str(data / "test_order.h5")]


def run_table(out_dir, data_dir=None, epochs: int | None = None, progress: Callable[[str], object] = print,
              **kwargs) -> str:
    """Table 2 on a synthetic AVE: see :mod:`simam2.adapters.ave_table`."""
    from .ave_table import run_table as _run_table

    return _run_table(out_dir, data_dir=data_dir, epochs=epochs, progress=progress, **kwargs)


__all__ = ["AveAdapter", "AveRun", "InitShim", "publish", "active_run", "segment_accuracy", "data_args",
           "run_table"]
