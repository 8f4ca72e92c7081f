"""Installing a spec's replacements for the length of a run, and running the upstream's own script.

:func:`installed` puts a spec's replacements in place for the length of a ``with`` block and
restores every attribute afterwards (also after an exception); :func:`run_script` runs the
upstream's own entry point, unchanged, through :mod:`runpy` inside that block. Each run has one
:class:`RunContext`: its spec, config, argv and working directory, its records and its
:class:`~.probe.RunProbe`. Installing is reversible and idempotent: installing the same spec with
the same config again inside the block yields the same context; with another config it is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import random
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import torch

from .config import RunConfig
from . import tensorboard
from .records import RecordWriter, status_of

from .context import AdapterError, Replacement, RunContext, RunRefused  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from .spec import Spec


# -- replacing attributes, reversibly ---------------------------------------------------------------

def _swap(replacements: Sequence[Replacement], importer: Callable[[str], Any], originals: list) -> None:
    """Set each replacement, appending ``(module, attribute, old value)`` to ``originals`` first, so
    that :func:`_restore` undoes exactly what was done even when a later one fails."""
    for rep in replacements:
        module = importer(rep.module)
        originals.append((module, rep.attribute, module.__dict__.get(rep.attribute, _MISSING)))
        setattr(module, rep.attribute, rep.value)


def _restore(originals: list) -> None:
    """Undo :func:`_swap`, last first (an attribute replaced twice gets its first value back)."""
    for module, attribute, value in reversed(originals):
        if value is _MISSING:
            delattr(module, attribute)
        else:
            setattr(module, attribute, value)
    originals.clear()


def _import_any(name: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise AdapterError(f"cannot import module {name!r} to patch it: {e}") from e


@contextlib.contextmanager
def patched(replacements: Sequence[Replacement]) -> Iterator[None]:
    """Replace attributes of importable modules (third-party or standard library) for the length of
    the block, and put every original back afterwards, also after an exception.

    The one mechanism for layers that wrap a run from outside the upstream (a spec's own
    replacements go through :func:`installed`, which also checks they come from the checkout).
    Modules that did ``from module import attribute`` before the block keep the original: the
    replacement is seen by code that looks the attribute up inside the block, as an upstream script
    run by :func:`run_script` does at its imports.
    """
    originals: list = []
    try:
        _swap(replacements, _import_any, originals)
        yield
    finally:
        _restore(originals)


# -- installing -----------------------------------------------------------------------------------

_ACTIVE: list[RunContext] = []
_MISSING = object()


def current_context() -> RunContext | None:
    """The innermost installed run's context, or None outside any run."""
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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def checkout_of(spec: "Spec") -> Path:
    """The patched checkout of ``spec``'s upstream, from the cache (fetched there if need be)."""
    import vendor_fetch

    try:
        return vendor_fetch.fetch(spec.upstream)
    except vendor_fetch.FetchError as e:
        raise AdapterError(str(e)) from e


@contextlib.contextmanager
def installed(spec: "Spec", config: RunConfig | None = None, checkout: Path | str | None = None,
              argv: Sequence[str] = (), script: str | None = None, cwd: Path | str | None = None,
              start_extra: dict | None = None, options: dict | None = None) -> Iterator[RunContext]:
    """Replace ``spec``'s upstream attributes for the length of the block; undo everything after.
    ``options``: the spec's own options for the run (``RunContext.options``).

    The checkout goes first on ``sys.path``; modules of the same top-level names imported from
    elsewhere (upstreams share names such as ``models`` and ``utils``) are set aside and put back
    afterwards, and the checkout's own modules are dropped from ``sys.modules``. The run's records
    end with an ``end`` record saying how the block was left (completed, interrupted, failed).
    """
    from .probe import RunProbe

    config = config or RunConfig()
    checkout = Path(checkout) if checkout is not None else checkout_of(spec)
    checkout = checkout.resolve()
    if not checkout.is_dir():
        raise AdapterError(f"no upstream checkout at {checkout}")
    for ctx in _ACTIVE:
        if ctx.spec is spec and ctx.checkout == checkout:
            if ctx.config != config:
                raise AdapterError(f"{spec.name} is already installed with another configuration; a nested "
                                   "install would silently use the outer one: leave the outer block first")
            yield ctx
            return

    recorder = RecordWriter(config.record, append=config.append, sinks=spec.record_sinks(config))
    # after the records file was accepted: a refused run leaves no TensorBoard folder behind
    recorder.sinks += tensorboard.sinks_for(config.tensorboard)
    names = _top_level_names(checkout)
    shadowed = {k: sys.modules.pop(k) for k in list(sys.modules) if _owned(k, names)}
    _forget_module_files(names)
    # the checkout is a shared cache: no __pycache__ written into it
    wrote_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    sys.path.insert(0, str(checkout))
    ctx = RunContext(spec, config, checkout, recorder, tuple(map(str, argv)), script,
                     Path(cwd) if cwd is not None else None, start_extra=dict(start_extra or {}),
                     options=dict(options or {}))
    ctx.probe = RunProbe(ctx)
    originals: list = []
    _ACTIVE.append(ctx)
    failure: BaseException | None = None
    try:
        if config.seed is not None:
            seed_everything(config.seed)
        try:
            reps = spec.replacements(ctx)
        except ImportError as e:
            raise AdapterError(f"{checkout} is not a {spec.upstream} checkout ({e}); point --checkout at one, "
                               f"or leave it out to use the cache") from None
        _swap(reps, lambda name: _import_upstream(name, checkout), originals)
        ctx.probe.install()
        spec.on_start(ctx)
        yield ctx
    except BaseException as e:
        failure = e
        raise
    finally:
        try:
            try:
                spec.on_end(ctx)
            finally:
                ctx.probe.finish()
        finally:
            for fn in reversed(ctx._cleanups):
                fn()
            _restore(originals)
            _ACTIVE.remove(ctx)
            if isinstance(failure, RunRefused) and ctx.probe.model is None:
                recorder.discard()  # nothing ran: nothing to record, nothing to refuse a rerun with
            else:
                status, error = status_of(failure)
                ctx.probe.end(status, error)
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


# -- running --------------------------------------------------------------------------------------

def run_script(
    spec: "Spec",
    argv: Sequence[str] = (),
    config: RunConfig | None = None,
    checkout: Path | str | None = None,
    cwd: Path | str | None = None,
    script: str | None = None,
    start_extra: dict | None = None,
    options: dict | None = None,
) -> RunContext:
    """Run the upstream's own ``script`` (default ``spec.script``) unchanged, as ``__main__``.

    ``script`` is a path relative to the checkout, or ``-m package`` for a module entry point
    (``python -m package``). ``sys.argv`` is ``[script, *argv]``, as the script expects; the
    working directory is ``cwd`` (default: the current one) for the length of the run. A non-zero
    ``SystemExit`` becomes an :class:`AdapterError`. ``start_extra``: more fields of the ``start``
    record; ``options``: the spec's own options for the run (``RunContext.options``). Returns the
    run's context.
    """
    script = script or spec.script
    cwd = Path(cwd) if cwd is not None else Path.cwd()
    argv = [str(a) for a in argv]
    with installed(spec, config, checkout, argv=argv, script=script, cwd=cwd, start_extra=start_extra,
                   options=options) as ctx:
        module = script[3:].strip() if script.startswith("-m ") else None
        path = ctx.checkout / script if module is None else None
        if path is not None and not path.is_file():
            raise RunRefused(f"{spec.name}: no script {script} in {ctx.checkout}")
        resolved = cwd.resolve()
        if resolved == ctx.checkout or ctx.checkout in resolved.parents:
            raise RunRefused(f"{spec.name}: run in a folder of your own, not inside the upstream checkout "
                             f"{ctx.checkout} (a shared cache; the script writes to its working directory)")
        try:
            spec.validate(ctx, argv, cwd)
        except AdapterError as e:
            raise RunRefused(str(e)) from None
        cwd.mkdir(parents=True, exist_ok=True)
        old_argv, old_cwd = sys.argv, os.getcwd()
        sys.argv = [str(path) if path is not None else module, *argv]
        os.chdir(cwd)
        usage: list[str] = []  # what the script's argument parser refused, before any model was built
        real_error = argparse.ArgumentParser.error

        def parser_error(parser, message):
            if ctx.probe.model is None:
                usage.append(message)
            real_error(parser, message)

        argparse.ArgumentParser.error = parser_error
        try:
            if module is not None:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(str(path), run_name="__main__")
        except SystemExit as e:
            if usage and e.code == 2:
                raise RunRefused(f"{spec.name}: {script} refused its arguments: {usage[0]}") from None
            if e.code not in (None, 0):
                raise AdapterError(f"{spec.name}: {script} exited with status {e.code}") from e
        except pickle.UnpicklingError as e:
            lines = [l for l in str(e).splitlines() if "Unsupported global" in l or "Unsupported operand" in l]
            first = lines[0].strip() if lines else (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise AdapterError(f"{spec.name}: refused to load a checkpoint that holds more than the model's "
                               f"classes (it could run code): {first}") from None
        finally:
            argparse.ArgumentParser.error = real_error
            sys.argv = old_argv
            os.chdir(old_cwd)
        return ctx


def option_value(argv: Sequence[str], option: str, default):
    """The value argparse would keep for ``option`` in ``argv`` (the last one given), else ``default``.

    Specs read the upstream's own arguments with it, before the script parses them.
    """
    value = default
    argv = list(argv)
    for i, a in enumerate(argv):
        if a == option and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith(option + "="):
            value = a.split("=", 1)[1]
    return value
