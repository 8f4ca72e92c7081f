"""RunConfig: the one source of every run option, for the Python API and the command line alike.

Each field carries its command-line flag and help text (``field(metadata=...)``);
:func:`add_run_options` builds ``simam2 run``'s and the tables' options from the fields, and
:func:`config_from_args` reads them back. An option exists once, here.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from simam2.core.fusion import U_READINGS, ZETA_MODES

#: ``--modulation``'s words; ``ogm`` is ``ogm-ge`` without GE noise (``ogm-ge --no-ge``)
MODULATION_CHOICES = ("none", "ogm", "ogm-ge", "df")


@dataclass(frozen=True)
class Modulation:
    """A run's gradient modulation, the one word every layer uses: which ratio drives OGM's
    coefficient rule (SPEC §5) and whether OGM-GE's Gaussian noise is added.

    ``ratio``: None (no modulation), ``"decoupled"`` (OGM-GE's decoupled score ratio, SPEC §6) or
    ``"zeta"`` (ζ's ratio, Eq. 11: decoupling-free). ``noise``: GE's noise (never without a ratio).
    Named ``none``, ``ogm``, ``ogm-ge`` and ``df`` (with or without noise); an upstream spec
    declares its own words for these as a table keyed by them.
    """

    ratio: str | None = None
    noise: bool = False

    def __post_init__(self) -> None:
        if self.ratio not in (None, "decoupled", "zeta"):
            raise ValueError(f"a modulation's ratio is None, 'decoupled' or 'zeta', got {self.ratio!r}")
        if self.ratio is None and self.noise:
            raise ValueError("GE noise needs a ratio to modulate with")

    @classmethod
    def of(cls, config: "RunConfig") -> "Modulation":
        """The modulation a config's ``modulation`` and ``ge`` options ask for."""
        return cls.named(config.modulation, config.ge)

    @classmethod
    def named(cls, word: str, ge: bool = True) -> "Modulation":
        """``--modulation WORD`` (``none``, ``ogm``, ``ogm-ge``, ``df``) with ``ge`` False for ``--no-ge``."""
        if word not in MODULATION_CHOICES:
            raise ConfigError(f"--modulation must be one of {', '.join(MODULATION_CHOICES)}, got {word!r}")
        ratio = {"none": None, "ogm": "decoupled", "ogm-ge": "decoupled", "df": "zeta"}[word]
        return cls(ratio, ratio is not None and ge and word != "ogm")

    @property
    def name(self) -> str:
        if self.ratio is None:
            return "none"
        return "df" if self.ratio == "zeta" else "ogm-ge" if self.noise else "ogm"

    @property
    def on(self) -> bool:
        return self.ratio is not None

    @property
    def decoupled(self) -> bool:
        """OGM-GE's own ratio drives it (OGM or OGM-GE proper)."""
        return self.ratio == "decoupled"

    @property
    def decoupling_free(self) -> bool:
        """ζ drives it (Eq. 11)."""
        return self.ratio == "zeta"


class ConfigError(ValueError):
    """A run's options contradict each other or are out of range (one line, names the option)."""


def _opt(default, help: str, flag: str | None = None, **argparse_kwargs):
    return field(default=default, metadata={"help": help, "flag": flag, "argparse": argparse_kwargs})


@dataclass
class RunConfig:
    """How one run is configured, whatever the upstream (every field is also a ``simam2 run`` option).

    modulation: ``none``; ``ogm-ge`` — OGM-GE with its own decoupled ratio (SPEC §6): the upstream's
    own implementation where it has one (OGM-GE's main.py), else core's GradientModulator with
    ``ratio="decoupled"``; ``ogm`` — the same without GE's noise, kept as ``ogm-ge`` with ``ge``
    False (records keep one spelling); ``df`` — decoupling-free modulation (Eq. 11) through core's
    GradientModulator with ``ratio="zeta"``. ``Modulation.of(config)`` reads ``modulation`` and
    ``ge`` as one :class:`Modulation`.
    """

    simam2: bool = _opt(False, "replace the upstream's fusion with SimAM²")
    zeta: str = _opt("fixed", "ζ: fixed 0.5, a learnable gate, or the upstream's own gate "
                              "(default: fixed; FOP: its own gate); needs --simam2", choices=ZETA_MODES)
    modulation: str = _opt("none", "gradient modulation: none, OGM-GE's decoupled ratio (ogm-ge; ogm: "
                                   "without its noise), or decoupling-free (Eq. 11)", choices=MODULATION_CHOICES)
    ge: bool = _opt(True, "modulate without OGM-GE's Gaussian noise (plain OGM)", flag="--no-ge")
    alpha: float = _opt(0.1, "OGM-GE's alpha, >= 0 (default 0.1)")
    modulation_start: int = _opt(0, "first modulated epoch (default 0)")
    modulation_end: int = _opt(50, "last modulated epoch (default 50)")
    lam: float = _opt(1e-6, "λ of Eq. 6-7, >= 0 (default 1e-6)")
    s: float = _opt(2.5, "s of Eq. 6, >= 0 (default 2.5)")
    u: str = _opt("eq4", "the reading of U that Eq. 8 multiplies when ζ is fixed (SPEC §2): eq4, "
                         "ζ X1 + (1 - ζ) X2 as written (half the vanilla sum), or vanilla, the vanilla "
                         "fusion's own output (default eq4); needs --simam2", choices=U_READINGS)
    seed: int | None = _opt(None, "seed Python, NumPy and torch before the run")
    record: Path | None = _opt(None, "JSON-lines records of the run (docs/records.md)")
    append: bool = _opt(False, "add this run to an existing --record file instead of refusing")
    tensorboard: Path | None = _opt(None, "write TensorBoard curves of the run into this folder")
    per_modality: bool = _opt(True, "skip the metric of each modality alone at evaluations (mean ablation at "
                                    "the fusion input, docs/instruments.md)", flag="--no-per-modality")

    def __post_init__(self) -> None:
        if self.zeta not in ZETA_MODES:
            raise ConfigError(f"--zeta must be one of {', '.join(ZETA_MODES)}, got {self.zeta!r}")
        modulation = Modulation.of(self)  # refuses an unknown word
        if self.modulation == "ogm":
            self.modulation, self.ge = "ogm-ge", False
        if self.zeta != "fixed" and not self.simam2:
            raise ConfigError(f"--zeta {self.zeta} chooses SimAM²'s fusion weights: add --simam2 "
                              "(without it the upstream's own fusion runs and ζ means nothing)")
        if self.u not in U_READINGS:
            raise ConfigError(f"--u must be one of {', '.join(U_READINGS)}, got {self.u!r}")
        if self.u != "eq4" and not self.simam2:
            raise ConfigError(f"--u {self.u} chooses how SimAM² reads U: add --simam2")
        if modulation.decoupling_free and not self.simam2:
            raise ConfigError("--modulation df reads ζ from the SimAM² fusion: add --simam2 --zeta learnable")
        if modulation.decoupling_free and self.zeta == "fixed":
            raise ConfigError("--modulation df needs a learnable (or given) ζ: with ζ fixed at 0.5 its ratio "
                              "(Eq. 11) is 1 at every step; add --zeta learnable")
        for name in ("alpha", "lam", "s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"--{name} must be a finite number >= 0, got {value!r}")
        for name in ("modulation_start", "modulation_end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be an epoch >= 0 (epochs count from 0), got {value!r}: a window "
                                  "before epoch 0 never opens and modulation would be silently off")
        if self.modulation_end < self.modulation_start:
            raise ConfigError(f"--modulation-end {self.modulation_end} is before --modulation-start "
                              f"{self.modulation_start}")
        for name in ("record", "tensorboard"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))

    def plain(self) -> dict[str, Any]:
        """The config as JSON-friendly data (for ``start`` records and table headers)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    def argv(self) -> list[str]:
        """The ``simam2 run`` options that give this config back (:func:`config_from_args` of them is
        equal to it): how a table hands a cell to ``simam2 run --nproc-per-node`` in a new process."""
        out: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            if isinstance(value, bool):
                out.append(_flag(f))  # a bool differs from its default only by its flag
            else:
                out += [_flag(f), str(value)]
        if self.simam2 and "--zeta" not in out:
            out += ["--zeta", self.zeta]  # an unset --zeta is the upstream's default gate with --simam2
        return out

    def but(self, **changes) -> "RunConfig":
        """A copy with ``changes`` (validated again)."""
        return RunConfig(**{**asdict(self), **changes})


def _flag(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_run_options(parser: argparse.ArgumentParser, title: str = "SimAM² and modulation",
                    exclude: tuple[str, ...] = ()) -> None:
    """Add one option per :class:`RunConfig` field (help text from the field) to ``parser``."""
    g = parser.add_argument_group(title)
    for f in fields(RunConfig):
        if f.name in exclude:
            continue
        kwargs = dict(f.metadata.get("argparse", {}))
        if f.type in ("bool", bool):
            kwargs["action"] = "store_false" if f.default else "store_true"
        else:
            kwargs["type"] = {"float": float, "int": int, "str": str}.get(
                f.type, Path if "Path" in str(f.type) else int if "int" in str(f.type) else str)
            kwargs["default"] = None if f.name == "zeta" else f.default  # zeta: None = the upstream's default
        g.add_argument(_flag(f), dest=f.name, help=f.metadata["help"], **kwargs)


def config_from_args(ns: argparse.Namespace, default_zeta: str = "fixed", **overrides) -> RunConfig:
    """The RunConfig of parsed options. An unset ``--zeta`` is ``default_zeta`` with --simam2 (the
    upstream's own gate for FOP) and ``fixed`` without."""
    values = {f.name: getattr(ns, f.name) for f in fields(RunConfig) if hasattr(ns, f.name)}
    if values.get("zeta") is None:
        values["zeta"] = default_zeta if values.get("simam2") else "fixed"
    values.update(overrides)
    return RunConfig(**values)


def __getattr__(name: str):
    if name == "ZETA_CHOICES":  # the set of ζ modes has one name, the core's (kept for one release)
        import warnings

        warnings.warn("simam2.adapters.machinery.config.ZETA_CHOICES is deprecated: use ZETA_MODES",
                      DeprecationWarning, stacklevel=2)
        return ZETA_MODES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["RunConfig", "ConfigError", "Modulation", "ZETA_MODES", "MODULATION_CHOICES", "add_run_options",
           "config_from_args"]
