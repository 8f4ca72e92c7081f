"""The machinery every adapter shares: replace upstream attributes, run the upstream script, undo.

An adapter is data plus a few functions (see :class:`Adapter`): which upstream module attributes it
replaces and with what (:class:`Replacement`), which script is the entry point, and how a run is
configured (:class:`RunConfig`). :func:`installed` puts the replacements in place for the length of a
``with`` block and restores every attribute afterwards; :func:`run_script` runs the upstream's own
script, unchanged, through :mod:`runpy` inside that block.

Replacement classes find the run they belong to through :func:`current_context`: they register the
models and fusion modules the script builds, read the configuration, and write records.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import runpy
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

ZETA_CHOICES = ("fixed", "learnable", "given")
MODULATION_CHOICES = ("none", "ogm-ge", "df")


class AdapterError(RuntimeError):
    """A run cannot start or did not finish: bad input, a missing file, a failing upstream script."""


@dataclass(frozen=True)
class Replacement:
    """One upstream attribute, ``module.attribute``, replaced by ``value`` while installed."""

    module: str
    attribute: str
    value: Any


@dataclass
class RunConfig:
    """How one run is configured, whatever the upstream.

    simam2: SimAM² fusion on (the upstream's vanilla fusion when off).
    zeta: ``fixed`` (ζ = 0.5), ``learnable`` (SPEC §2's gate) or ``given`` (the upstream's own gate).
    modulation: ``none``; ``ogm-ge`` — OGM-GE with its own decoupled ratio (SPEC §6): the upstream's
        own implementation where it has one (OGM-GE's main.py), else core's GradientModulator with
        ``ratio="decoupled"``; ``df`` — decoupling-free modulation (Eq. 11) through core's
        GradientModulator with ``ratio="zeta"``.
    ge: add OGM-GE's Gaussian noise (OGM-GE) or not (plain OGM), for ``ogm-ge`` and ``df``.
    alpha, modulation_start, modulation_end: OGM-GE's α and epoch window (inclusive).
    lam, s: λ and s of Eq. 6–7.
    seed: seeds Python, NumPy and torch when the run starts (None: leave the upstream's seeding).
    record: a JSON-lines file for per-step and per-evaluation records (None: kept in memory).
    """

    simam2: bool = False
    zeta: str = "fixed"
    modulation: str = "none"
    ge: bool = True
    alpha: float = 0.1
    modulation_start: int = 0
    modulation_end: int = 50
    lam: float = 1e-6
    s: float = 2.5
    seed: int | None = None
    record: Path | None = None

    def __post_init__(self) -> None:
        if self.zeta not in ZETA_CHOICES:
            raise ValueError(f"zeta must be one of {ZETA_CHOICES}, got {self.zeta!r}")
        if self.modulation not in MODULATION_CHOICES:
            raise ValueError(f"modulation must be one of {MODULATION_CHOICES}, got {self.modulation!r}")
        if self.modulation == "df" and self.zeta == "fixed":
            raise ValueError(
                "decoupling-free modulation needs a learnable (or given) ζ: with ζ fixed at 0.5 its "
                "ratio (Eq. 11) is 1 at every step; use zeta='learnable'"
            )
        if self.modulation == "df" and not self.simam2:
            raise ValueError("decoupling-free modulation reads ζ from the SimAM² fusion: turn simam2 on")
        if self.record is not None:
            self.record = Path(self.record)


class Recorder:
    """Append-only JSON-lines records of a run (``event`` plus fields; tensors become numbers).

    With no path, records stay in :attr:`events`, for tests and short runs.
    """

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else None
        self.events: list[dict] = []
        self._file = None

    def write(self, event: str, **fields: Any) -> None:
        row = {"event": event, **{k: _plain(v) for k, v in fields.items()}}
        if self.path is None:
            self.events.append(row)
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def read(self) -> list[dict]:
        """Every record so far, from memory or from the file."""
        if self.path is None:
            return list(self.events)
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _plain(value: Any) -> Any:
    """JSON-friendly: tensors and NumPy values become Python numbers or lists; NaN becomes None."""
    if torch.is_tensor(value):
        value = value.detach().cpu()
        value = value.item() if value.numel() == 1 else value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    elif isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, Path):
        value = str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class RunContext:
    """What replacement classes see of the run they belong to."""

    adapter: "Adapter"
    config: RunConfig
    checkout: Path
    recorder: Recorder
    epoch: int = 0
    script: str | None = None  # the entry script run_script is running (None inside a bare installed())
    models: list = field(default_factory=list)
    fusions: list = field(default_factory=list)
    state: dict = field(default_factory=dict)
    _cleanups: list = field(default_factory=list)

    def register_model(self, model) -> None:
        """A replacement model class calls this once built; the adapter's ``on_model`` runs then."""
        if not any(m is model for m in self.models):
            self.models.append(model)
            self.adapter.on_model(self, model)

    def register_fusion(self, fusion) -> None:
        if not any(f is fusion for f in self.fusions):
            self.fusions.append(fusion)

    def add_cleanup(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` when the adapter is uninstalled (e.g. a hook handle's ``remove``)."""
        self._cleanups.append(fn)


class Adapter:
    """Base of every upstream adapter: subclasses are mostly data.

    Class attributes: ``name`` (the CLI name), ``upstream`` (the key in ``vendor_fetch.UPSTREAMS``),
    ``script`` (the entry script, relative to the checkout). Override :meth:`replacements`; the other
    hooks are optional.
    """

    name: str = ""
    upstream: str = ""
    script: str = ""

    def replacements(self, config: RunConfig) -> list[Replacement]:
        """The upstream attributes to replace for ``config``."""
        return []

    def on_start(self, ctx: RunContext) -> None:
        """Called once the replacements are in place."""

    def on_model(self, ctx: RunContext, model) -> None:
        """Called when a replacement model registers itself (attach modulators here)."""

    def on_end(self, ctx: RunContext) -> None:
        """Called before the replacements are undone (also after a failed run)."""

    def add_arguments(self, parser) -> None:
        """Add this adapter's options to ``simam2 run NAME``."""

    def config_from_args(self, ns) -> RunConfig:
        """The RunConfig for parsed ``simam2 run`` options (the CLI's shared ones by default)."""
        return RunConfig(
            simam2=ns.simam2, zeta=ns.zeta, modulation=ns.modulation, ge=not ns.no_ge, alpha=ns.alpha,
            modulation_start=ns.modulation_start, modulation_end=ns.modulation_end,
            lam=ns.lam, s=ns.s, seed=ns.seed, record=ns.record,
        )

    def upstream_args(self, ns) -> list[str]:
        """Upstream arguments implied by this adapter's own options (put before the user's)."""
        return []

    def validate(self, argv: Sequence[str], cwd: Path) -> None:
        """Check the run's inputs before the script starts; raise AdapterError naming what is wrong.

        ``current_context().script`` says which entry script is about to run."""

    def script_for(self, ns) -> str | None:
        """The entry script for parsed ``simam2 run`` options (None: :attr:`script`)."""
        return None

    def workdir_for(self, ns) -> Path | None:
        """The working directory for parsed ``simam2 run`` options (``--workdir`` by default); an
        adapter may prepare it here."""
        return ns.workdir

    def synth(self, out_dir: Path, **kwargs) -> Path:
        raise NotImplementedError(f"{self.name} has no synthetic data generator")


def option_value(argv: Sequence[str], option: str, default):
    """The value argparse would keep for ``option`` in ``argv`` (the last one given), else ``default``.

    Adapters read the upstream's own arguments with it, before the script parses them.
    """
    value = default
    argv = list(argv)
    for i, a in enumerate(argv):
        if a == option and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith(option + "="):
            value = a.split("=", 1)[1]
    return value


@dataclass(frozen=True)
class Method:
    """One row of a reproduced table: its label, SimAM² on or off, and ``RunConfig.modulation``."""

    label: str
    simam2: bool
    modulation: str

    def run_config(self, cell: Path, **kwargs) -> RunConfig:
        """This row's RunConfig for one table cell: SimAM² rows learn ζ, records go to a fresh
        ``cell/records.jsonl``."""
        cell.mkdir(parents=True, exist_ok=True)
        record = cell / "records.jsonl"
        record.unlink(missing_ok=True)
        return RunConfig(simam2=self.simam2, zeta="learnable" if self.simam2 else "fixed",
                         modulation=self.modulation, record=record, **kwargs)


# -- installing -----------------------------------------------------------------------------------

_ACTIVE: list[RunContext] = []
_MISSING = object()


def current_context() -> RunContext | None:
    """The innermost installed adapter's context, or None outside any run."""
    return _ACTIVE[-1] if _ACTIVE else None


def _top_level_names(checkout: Path) -> set[str]:
    """Module names the checkout provides at its root (they shadow same-named modules elsewhere)."""
    names = set()
    for p in checkout.iterdir():
        if p.suffix == ".py":
            names.add(p.stem)
        elif p.is_dir() and any(p.glob("*.py")):
            names.add(p.name)
    return names


def _owned(mod_name: str, names: set[str]) -> bool:
    return mod_name.split(".", 1)[0] in names


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def installed(adapter: Adapter, config: RunConfig | None = None, checkout: Path | str | None = None
              ) -> Iterator[RunContext]:
    """Replace ``adapter``'s upstream attributes for the length of the block; undo everything after.

    The checkout goes first on ``sys.path``; modules of the same top-level names imported from
    elsewhere (upstreams share names such as ``models`` and ``utils``) are set aside and put back
    afterwards, and the checkout's own modules are dropped from ``sys.modules``. Installing the same
    adapter on the same checkout again inside the block is a no-op that yields the same context.
    """
    config = config or RunConfig()
    checkout = Path(checkout) if checkout is not None else _fetch(adapter)
    checkout = checkout.resolve()
    if not checkout.is_dir():
        raise AdapterError(f"no upstream checkout at {checkout}")
    for ctx in _ACTIVE:
        if ctx.adapter is adapter and ctx.checkout == checkout:
            yield ctx
            return

    names = _top_level_names(checkout)
    shadowed = {k: sys.modules.pop(k) for k in list(sys.modules) if _owned(k, names)}
    _forget_module_files(names)
    # the checkout is a shared cache: no __pycache__ written into it
    wrote_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    sys.path.insert(0, str(checkout))
    ctx = RunContext(adapter, config, checkout, Recorder(config.record))
    originals: list[tuple[Any, str, Any]] = []
    _ACTIVE.append(ctx)
    try:
        if config.seed is not None:
            _seed_everything(config.seed)
        for rep in adapter.replacements(config):
            module = _import_upstream(rep.module, checkout)
            originals.append((module, rep.attribute, module.__dict__.get(rep.attribute, _MISSING)))
            setattr(module, rep.attribute, rep.value)
        adapter.on_start(ctx)
        yield ctx
    finally:
        try:
            adapter.on_end(ctx)
        finally:
            for fn in reversed(ctx._cleanups):
                fn()
            for module, attribute, value in reversed(originals):
                if value is _MISSING:
                    delattr(module, attribute)
                else:
                    setattr(module, attribute, value)
            _ACTIVE.remove(ctx)
            ctx.recorder.close()
            with contextlib.suppress(ValueError):
                sys.path.remove(str(checkout))
            sys.dont_write_bytecode = wrote_bytecode
            for k in [k for k in sys.modules if _owned(k, names)]:
                del sys.modules[k]
            sys.modules.update(shadowed)
            _forget_module_files(names)


def _forget_module_files(names: set[str]) -> None:
    """Drop ``inspect``'s per-name file cache for the swapped module names.

    ``inspect.getmodule`` remembers each module name's file. When one upstream's ``models.py`` is
    followed by another's namespace package ``models`` (no ``__init__``, so no file), the stale entry
    makes Python 3.11's ``inspect.stack()`` raise TypeError, as librosa's lazy loader calls it.
    """
    import inspect

    cache = getattr(inspect, "_filesbymodname", None)
    if isinstance(cache, dict):
        for k in [k for k in cache if _owned(k, names)]:
            del cache[k]


def _import_upstream(name: str, checkout: Path):
    import importlib

    try:
        module = importlib.import_module(name)
    except ImportError as e:
        raise AdapterError(f"cannot import upstream module {name!r} from {checkout}: {e}") from e
    origin = getattr(module, "__file__", None)
    if origin is None or checkout not in Path(origin).resolve().parents:
        raise AdapterError(f"module {name!r} resolved to {origin}, outside the checkout {checkout}")
    return module


def _fetch(adapter: Adapter) -> Path:
    import vendor_fetch

    try:
        return vendor_fetch.fetch(adapter.upstream)
    except vendor_fetch.FetchError as e:
        raise AdapterError(str(e)) from e


# -- running --------------------------------------------------------------------------------------

def run_script(
    adapter: Adapter,
    argv: Sequence[str] = (),
    config: RunConfig | None = None,
    checkout: Path | str | None = None,
    cwd: Path | str | None = None,
    script: str | None = None,
) -> RunContext:
    """Run the upstream's own ``script`` (default ``adapter.script``) unchanged, as ``__main__``.

    ``sys.argv`` is ``[script, *argv]``, as the script expects; the working directory is ``cwd``
    (default: the current one) for the length of the run. A non-zero ``SystemExit`` becomes an
    :class:`AdapterError`. Returns the run's context (its records, models, fusions).
    """
    script = script or adapter.script
    cwd = Path(cwd) if cwd is not None else Path.cwd()
    with installed(adapter, config, checkout) as ctx:
        path = ctx.checkout / script
        if not path.is_file():
            raise AdapterError(f"{adapter.name}: no script {script} in {ctx.checkout}")
        ctx.script = script
        adapter.validate(list(argv), cwd)
        old_argv, old_cwd = sys.argv, os.getcwd()
        sys.argv = [str(path), *map(str, argv)]
        os.chdir(cwd)
        try:
            runpy.run_path(str(path), run_name="__main__")
        except SystemExit as e:
            if e.code not in (None, 0):
                raise AdapterError(f"{adapter.name}: {script} exited with status {e.code}") from e
        finally:
            sys.argv = old_argv
            os.chdir(old_cwd)
        return ctx


def config_dict(config: RunConfig) -> dict:
    """The config as plain data, for records and table headers."""
    return {k: _plain(v) for k, v in asdict(config).items()}
