"""The declaration of one upstream: what is replaced, which parameters are whose, where things come from.

A spec is data plus a few small functions, in the manner of a tuner's config in PEFT: the shared
machinery (:mod:`.install` injects and unloads, :mod:`.probe` records and modulates) reads it and
does everything else. Adding an upstream is one :class:`Spec` subclass and its layers.

=========================  ==================================================================
declaration                meaning
=========================  ==================================================================
``name``, ``upstream``     the CLI name; the key in ``vendor_fetch.UPSTREAMS``
``script``                 the entry script (relative to the checkout, or ``-m package``)
``modalities``             modality 1 first — the one whose weight is ζ (Eq. 4)
``metrics``, ``primary``   the upstream's own metric names in ``eval`` records; the table's one
``higher_is_better``       for ``primary``
``zeta_modes``             the ζ modes (core's ``ZETA_MODES``) this upstream supports (``given``
                           needs a gate of its own)
``default_zeta``           ζ with ``--simam2`` and no ``--zeta`` (FOP: its own gate)
``epoch_source``           ``train_calls`` (epoch = the model's ``train()`` calls − 1),
                           ``evaluations`` (epoch = evaluations so far) or ``explicit``
                           (the spec's layers call ``probe.set_epoch``)
``criterion``              the loss class whose call ``(logits, labels)`` ends a training forward
``own_ogm_ge``             the upstream implements OGM-GE itself (its own flag runs it)
``replacements(run)``      the upstream attributes to replace, and with what
``groups(model)``          each modality's encoder parameters, in ``modalities`` order
``fusion(model)``          the SimAM² module (``weight_sums``, ``weights``, ``r``), or None
``zeta_sums(model)``       Σζ and Σ(1 − ζ) of the last training forward (default: the fusion's)
``modality_logits``        per-modality logits from the fusion inputs (OGM-GE's decoupling)
``head(model, x1, x2)``    the model's output from the two fusion inputs (the fusion and what
                           follows it): per-modality metrics by mean ablation (SPEC §8)
``labels(probe, args)``    the class indices from the criterion's positional arguments
``upstream_argv(config)``  our options in the upstream script's own vocabulary
``run_options(ns)``        this spec's options that the script's command line cannot take
                           (``RunContext.options``)
``distributed``            None where the script runs under torchrun (``--nproc-per-node``),
                           else the one-line reason it does not (docs/distributed.md)
=========================  ==================================================================
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

from .config import RunConfig
from .context import AdapterError, Replacement

if TYPE_CHECKING:
    from .context import RunContext


class Spec:
    """Base of every upstream declaration; subclasses set the attributes and override what differs."""

    name: str = ""
    upstream: str = ""
    script: str = ""
    modalities: tuple[str, str] = ("m1", "m2")
    metrics: tuple[str, ...] = ()
    primary: str | None = None
    higher_is_better: bool = True
    zeta_modes: tuple[str, ...] = ("fixed", "learnable")
    default_zeta: str = "fixed"
    epoch_source: str = "train_calls"
    criterion: type | None = None
    own_ogm_ge: bool = False
    #: None: the script runs under torchrun (it wraps its model in nn.DataParallel and trains from a
    #: shuffling DataLoader, the two places the distributed layer takes over); else why it does not
    distributed: str | None = "its script has no nn.DataParallel and DataLoader for DDP to take over"
    #: None where the spec's ``head`` gives each evaluation the metric of each modality alone (mean
    #: ablation, SPEC §8); else why this upstream's evaluations cannot have it, said once per run in a
    #: ``per_modality_skipped`` note (docs/records.md)
    no_mean_ablation: str | None = None
    #: None: ``--workdir`` is optional; else why the script needs one (checked before any fetch)
    workdir_required: str | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "zeta_sources" in vars(cls):  # the set of ζ modes has one name (kept for one release)
            warnings.warn(f"{cls.__name__}.zeta_sources is deprecated: declare zeta_modes", DeprecationWarning,
                          stacklevel=2)
            cls.zeta_modes = tuple(cls.zeta_sources)

    # -- what is replaced ------------------------------------------------------------------------

    def replacements(self, run: "RunContext") -> list[Replacement]:
        """The upstream attributes to replace for this run (``run.config``, ``run.argv``, ``run.probe``)."""
        return []

    def check_zeta(self, config: RunConfig, where: str) -> None:
        """Refuse a ζ mode this upstream does not have (e.g. ``given`` without a gate of its own)."""
        if config.simam2 and config.zeta not in self.zeta_modes:
            raise AdapterError(f"{where} has no gate of its own to give ζ: use --zeta "
                               f"{' or '.join(self.zeta_modes)}")

    # -- where things are ------------------------------------------------------------------------

    def modalities_of(self, model: nn.Module) -> tuple[str, str]:
        """The run's modalities, ζ's first (a spec whose ζ can weigh either modality overrides this)."""
        return self.modalities

    def groups(self, model: nn.Module) -> dict[str, list[nn.Parameter]]:
        """Each modality's encoder parameters (the ones modulation scales), in modality order."""
        raise NotImplementedError(f"{self.name}: groups")

    def fusion(self, model: nn.Module):
        """The model's SimAM² fusion module, or None (vanilla fusion)."""
        return None

    def zeta_sums(self, model: nn.Module) -> torch.Tensor | None:
        """(Σζ, Σ(1 − ζ)) of the last training forward, on the device; None without a ζ."""
        fusion = self.fusion(model)
        return getattr(fusion, "weight_sums", None) if fusion is not None else None

    def zeta(self, model: nn.Module) -> torch.Tensor | None:
        """ζ of the last forward (for its per-epoch histogram); None without a ζ."""
        return getattr(self.fusion(model), "zeta", None)

    def modality_logits(self, model: nn.Module, x1: torch.Tensor, x2: torch.Tensor):
        """Per-modality logits ``(out_1, out_2)`` from the fusion inputs, as OGM-GE splits the fusion
        classifier (SPEC §6); None where the classifier does not split."""
        return None

    def head(self, model: nn.Module, x1: torch.Tensor, x2: torch.Tensor):
        """The model's output from the fusion inputs, modality 1 first (everything from the fusion to
        the output the upstream scores); the probe calls it with one input replaced by its mean for
        the metric of each modality alone (SPEC §8). None: this upstream has no such evaluation."""
        return None

    def labels(self, probe, args: tuple) -> torch.Tensor | None:
        """Class indices from the criterion's positional arguments (``probe``: the run's RunProbe), one
        per sample of the fusion inputs (their shape without the feature dim; flattened with the logits); None when this
        criterion call is not the fused loss of a training step."""
        return None

    # -- a run's life ----------------------------------------------------------------------------

    def on_start(self, run: "RunContext") -> None:
        """Called once the replacements and the probe are in place."""

    def on_end(self, run: "RunContext") -> None:
        """Called before the probe's last flush and the replacements are undone (also after a failure)."""

    def upstream_options(self, run: "RunContext", model: nn.Module) -> dict:
        """The upstream's own options that the ``start`` record keeps."""
        return {}

    def record_sinks(self, config: RunConfig) -> list:
        """Callables that receive every record row of a run (none by default)."""
        return []

    def validate(self, run: "RunContext", argv: Sequence[str], cwd: Path) -> None:
        """Check the run's inputs before the script starts; raise AdapterError naming what is wrong."""

    # -- the command line ------------------------------------------------------------------------

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """This upstream's own options of ``simam2 run NAME``."""

    def upstream_argv(self, config: RunConfig, ns: argparse.Namespace | None = None) -> list[str]:
        """The upstream script's arguments implied by ``config`` (and this spec's options in ``ns``);
        put before the user's, so that arguments after ``--`` win."""
        return []

    def run_options(self, ns: argparse.Namespace) -> dict:
        """This spec's options for the run, from its parsed ``simam2 run`` options, that the upstream's
        own command line cannot take; the layers read them as ``run.options``."""
        return {}

    def script_for(self, ns: argparse.Namespace) -> str:
        """The entry script for parsed ``simam2 run`` options."""
        return self.script

    def workdir_for(self, ns: argparse.Namespace) -> Path | None:
        """The working directory for parsed ``simam2 run`` options (``--workdir`` by default)."""
        return ns.workdir

    def synth(self, out_dir: Path, **kwargs) -> Path:
        raise AdapterError(f"{self.name} has no synthetic data generator")


def groups_by_prefix(model: nn.Module, prefixes: dict[str, tuple[str, ...]]) -> dict[str, list[nn.Parameter]]:
    """{modality: the model's parameters whose names start with one of its prefixes}, in ``prefixes`` order."""
    named = list(model.named_parameters())
    return {m: [p for n, p in named if n.startswith(pre)] for m, pre in prefixes.items()}
