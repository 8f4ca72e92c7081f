"""BalanceMM (GeWu-Lab/BalanceBenchmark) declared: SimAM² in its fusion modules, a decoupling-free
trainer beside its trainers, its own metrics in the one record schema.

The upstream's own entry point, ``python -m balancemm``, runs unchanged (after ``patches/balancemm``;
see docs/adapters-balancemm.md). Installing the spec replaces, in ``balancemm.train`` (names that
``train_and_test`` looks up when it runs):

- ``train_and_test`` by one that applies the run's :class:`~.seam.Overrides` to the resolved config
  (data paths, epochs, batch size, workers, fusion, the output folder = the run's working directory,
  the trainer block's α and window), seeds with ``--seed`` (their own ``set_seed``; else their
  config's 42 stands) and removes the 257 MB checkpoint afterwards unless kept;
- ``create_model`` by one that registers the first model built with the run (its ζ, its groups) and
  hands the two modality features of each training forward to the probe;
- ``create_optimizer`` by one whose ``step(closure)`` evaluates the closure first and then steps: the
  trainers pass their whole forward and backward as the closure, which the optimizer calls *inside*
  ``step``, after every step pre-hook — so the modulator and the step recorder would see the previous
  step's gradients. Calling it first is what ``step`` does anyway (AdamW and SGD evaluate the closure
  once, under ``enable_grad``, before updating); the numbers stay bitwise the same;
- ``create_trainer`` by one that follows the trainer: its epoch (``current_epoch``) and every full
  evaluation (``val_loop``), recorded with their accuracy and macro-F1, fused and per modality
  (the per-modality heads of their split classifier: ``acc_head_m1``, ``f1_head_m1``, …);
- ``Calculate_Shapley`` by one that keeps the Shapley values (``shapley_m1``, ``shapley_m2`` in the
  test's eval record) and keeps its partial evaluations out of the records;

and, with ``--simam2``, ``ConcatFusion_N``, ``SumFusion`` and ``FiLM`` in
``balancemm.models.avclassify_model`` by the SimAM² subclasses of :mod:`.layers`. The trainer
``OGMTrainerDF`` is appended to ``balancemm.trainer._trainer_modules``, which ``create_trainer``
searches by name; no upstream file is edited.

Modulation (:data:`TRAINERS`, :data:`OGM_METHODS`): ``--modulation ogm-ge`` runs their own
``OGMTrainer`` (``method: OGM_GE``, or ``OGM`` with ``--modulation ogm`` / ``--no-ge``: their OGM
branch raises KeyError at the pin, so that one is refused);
``--modulation df`` runs ``OGMTrainerDF`` and the probe attaches core's GradientModulator (Eq. 11).
"""

from __future__ import annotations

import argparse
import contextlib
import types
from pathlib import Path
from typing import Sequence

from torch import nn

from ..machinery import AdapterError, Replacement, RunConfig, Spec, option_value
from ..machinery.config import Modulation
from . import layers, synth
from .seam import FUSIONS

#: BalanceMM's words for our modulations: the ``--trainer`` that runs each (the decoupling-free one
#: is their OGM trainer without its own modulation, beside which the probe runs core's)
TRAINERS = {"none": "baselineTrainer", "ogm": "OGMTrainer", "ogm-ge": "OGMTrainer", "df": layers.DF_TRAINER}
#: and their OGMTrainer's ``method`` for OGM-GE's own ratio, with and without its noise
OGM_METHODS = {"ogm": "OGM", "ogm-ge": "OGM_GE"}


class BalanceMMSpec(Spec):
    """BalanceMM's ``python -m balancemm`` on CREMA-D (two ResNet-18s, audio and visual)."""

    name = "balancemm"
    upstream = "balancemm"
    script = "-m balancemm"
    modalities = ("audio", "visual")
    metrics = ("acc", "f1")
    primary = "acc"
    epoch_source = "explicit"
    criterion = nn.CrossEntropyLoss
    own_ogm_ge = True
    no_mean_ablation = ("BalanceMM's val_loop scores the whole evaluation set inside the upstream and returns only "
                        "its accuracy and macro-F1, so the outputs and labels that a metric of each modality alone "
                        "(mean ablation) would be scored from never reach the adapter; its own per-modality heads "
                        "are recorded instead (acc_head_m1/_m2, f1_head_m1/_m2)")
    workdir_required = "BalanceMM writes its training.log, logs and checkpoint there"

    # -- what is replaced ------------------------------------------------------------------------

    def replacements(self, run) -> list[Replacement]:
        import balancemm.models.avclassify_model as avclassify
        import balancemm.models.fusion_arch as fusion_arch
        import balancemm.train as train

        self.check_zeta(run.config, "BalanceMM")
        options = dict(run.options)  # the trainer block is taken out of this copy when the run starts
        state = types.SimpleNamespace(split="val", in_shapley=False, shapley=None, model=None)
        reps = [
            Replacement("balancemm.train", "train_and_test",
                        layers.train_and_test_with_overrides(run, train.train_and_test, options, OGM_METHODS)),
            Replacement("balancemm.train", "create_model",
                        layers.registering_create_model(run, train.create_model, state, self.modalities_of)),
            Replacement("balancemm.train", "create_optimizer", layers.closure_first(train.create_optimizer)),
            Replacement("balancemm.train", "create_trainer",
                        layers.following_create_trainer(run, train.create_trainer, state, self.modalities_of)),
            Replacement("balancemm.train", "Calculate_Shapley", layers.keeping_shapley(train.Calculate_Shapley, state)),
        ]
        if run.config.simam2:
            classes = layers.simam2_fusion_classes(fusion_arch, run.config.zeta, run.config.lam, run.config.s,
                                                   run.config.u)
            reps += [Replacement("balancemm.models.avclassify_model", n, c) for n, c in classes.items()
                     if hasattr(avclassify, n)]
        return reps

    def on_start(self, run) -> None:
        import balancemm.trainer as trainers
        from balancemm.trainer.OGM_trainer import OGMTrainer

        module = types.ModuleType("simam2_balancemm_trainers")
        setattr(module, layers.DF_TRAINER, layers.decoupling_free_trainer(OGMTrainer))
        trainers._trainer_modules.append(module)
        run.add_cleanup(lambda: trainers._trainer_modules.remove(module))

    # -- where things are ------------------------------------------------------------------------

    def modalities_of(self, model):
        first = layers.x1_modality(model.fusion_module, self.modalities)
        return (first, "visual" if first == "audio" else "audio")

    def groups(self, model):
        groups = layers.ogm_groups(model, self.modalities)
        return {m: groups[m] for m in self.modalities_of(model)}

    def fusion(self, model):
        return getattr(model.fusion_module, "simam2", None)

    def modality_logits(self, model, x1, x2):
        """Their own split of the fusion classifier (``unimodal_result``), in modality order."""
        first, second = self.modalities_of(model)
        result = getattr(model, "unimodal_result", {})
        if first in result and second in result:
            return result[first], result[second]
        return None

    def labels(self, probe, args):
        model = probe.model
        if len(args) >= 2 and model is not None and args[0] is getattr(model, "unimodal_result", {}).get("output"):
            return args[1]
        return None

    def upstream_options(self, run, model):
        return {"fusion": model.fusion, "device": str(model.device), "argv": list(run.argv)}

    def validate(self, run, argv: Sequence[str], cwd: Path) -> None:
        data = run.options.get("data")
        if data is not None:
            missing = [p for p in synth.dataset_paths(data).values() if not Path(p).exists()]
            if missing:
                raise AdapterError(f"--data {data} is not a CREMA-D in BalanceMM's layout: no {', '.join(missing)} "
                                   "(simam2 synth balancemm DIR writes one)")
        elif _config_paths_unset(run.checkout):
            raise AdapterError("BalanceMM's dataset_config.yaml leaves CREMA-D's paths at None: give --data DIR")
        trainer = option_value(argv, "--trainer", None)
        modulation = Modulation.of(run.config)
        if modulation.decoupling_free and trainer != layers.DF_TRAINER:
            raise AdapterError(f"--modulation df runs with --trainer {layers.DF_TRAINER} (their OGM trainer without "
                               f"its own modulation), got {trainer}")
        if trainer == layers.DF_TRAINER and not modulation.decoupling_free:
            raise AdapterError(f"--trainer {layers.DF_TRAINER} modulates only with --modulation df "
                               "--simam2 --zeta learnable")
        if modulation.decoupled and trainer != TRAINERS[modulation.name]:
            raise AdapterError(f"--modulation ogm-ge runs their own --trainer {TRAINERS[modulation.name]}, got {trainer}")
        if modulation.decoupled and not modulation.noise:
            raise AdapterError("--no-ge: their OGMTrainer's plain OGM branch raises KeyError at the pin; "
                               "BalanceMM runs OGM-GE only")

    # -- the command line ------------------------------------------------------------------------

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("BalanceMM (set in its resolved config; outputs go to --workdir)")
        g.add_argument("--data", type=Path, default=None, help="a synthetic CREMA-D (simam2 synth balancemm DIR)")
        g.add_argument("--epochs", type=int, default=None, help="the trainer's max_epochs (default: its config, 30)")
        g.add_argument("--batch-size", type=int, default=None, help="batch per device (default: its config, 32)")
        g.add_argument("--workers", type=int, default=0, help="loader processes (default 0: in-process)")
        g.add_argument("--fusion", choices=FUSIONS, default=None, help="BaseClassifier's fusion (default: concat)")
        g.add_argument("--keep-checkpoint", action="store_true",
                       help="keep the best model's checkpoint (257 MB) in --workdir/checkpoints")

    def run_options(self, ns: argparse.Namespace) -> dict:
        """The :class:`~.seam.Overrides` that ``simam2 run balancemm``'s own options set."""
        return {"data": ns.data, "epochs": ns.epochs, "batch_size": ns.batch_size, "workers": ns.workers,
                "fusion": ns.fusion, "keep_checkpoint": ns.keep_checkpoint}

    def upstream_argv(self, config: RunConfig, ns: argparse.Namespace | None = None) -> list[str]:
        modulation = Modulation.of(config)
        argv = ["--dataset", "CREMAD", "--model", "BaseClassifier", "--device", "cpu",
                "--trainer", TRAINERS[modulation.name]]
        if modulation.on:
            argv += ["--alpha", str(config.alpha)]
        return argv

    def synth(self, out_dir, **kwargs) -> Path:
        """Write a tiny synthetic CREMA-D in BalanceMM's layout to ``out_dir``."""
        return synth.write_cremad(out_dir, **kwargs)


def _config_paths_unset(checkout: Path) -> bool:
    try:
        text = (Path(checkout) / "configs" / "dataset_config.yaml").read_text()
    except OSError:
        return False  # no config to read: nothing to say (and no PyYAML needed)
    import yaml

    with contextlib.suppress(yaml.YAMLError, KeyError, TypeError):
        cremad = yaml.safe_load(text)["dataset"]["CREMAD"]
        return str(cremad.get("train_txt")) == "None"
    return False


def run(argv: Sequence[str], config: RunConfig | None = None, workdir: Path | str = ".",
        checkout: Path | str | None = None, **overrides):
    """``python -m balancemm ARGV`` through the spec, from Python: ``overrides`` are
    :class:`~.seam.Overrides`' fields (``data``, ``epochs``, ``batch_size``, ``workers``, ``fusion``,
    ``trainer``, ``keep_checkpoint``); outputs go to ``workdir``. Returns the run's context."""
    from ..machinery import run_script

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    return run_script(SPEC, list(argv), config, checkout=checkout, cwd=workdir, options=overrides)


SPEC = BalanceMMSpec()
