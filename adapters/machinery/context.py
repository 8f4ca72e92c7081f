"""What a run is, below everything that acts on one: the error an adapter raises, one attribute
replacement, and the run's context. :mod:`.install`, :mod:`.spec` and :mod:`.probe` all import this
module and it imports none of them (no import circle); the context names its spec and probe by
annotation only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import RunConfig
from .records import RecordWriter


class AdapterError(RuntimeError):
    """A run cannot start or did not finish: bad input, a missing file, a failing upstream script."""


class RunRefused(AdapterError):
    """A run refused before its script began: its input failed the spec's checks, or the script's
    own argument parser rejected its arguments. Such a run leaves no records (and no working
    directory that it made): the corrected rerun starts clean."""


@dataclass(frozen=True)
class Replacement:
    """One attribute, ``module.attribute``, replaced by ``value`` while installed.

    A spec's replacements name upstream modules (imported from the checkout, refused elsewhere);
    :func:`patched` takes replacements of any importable module (``torch.nn``, ``os``) for the
    layers that wrap a run from outside, such as the distributed one.
    """

    module: str
    attribute: str
    value: Any


@dataclass
class RunContext:
    """One run: what the spec's layers and the probe see of it."""

    spec: Any  # the run's Spec
    config: RunConfig
    checkout: Path
    recorder: RecordWriter
    argv: tuple[str, ...] = ()
    script: str | None = None  # the entry script run_script is running (None inside a bare installed())
    cwd: Path | None = None
    models: list = field(default_factory=list)
    probe: Any = None  # the run's RunProbe, once installed
    #: extra fields of the run's ``start`` record (e.g. the distributed layer's world size)
    start_extra: dict = field(default_factory=dict)
    #: the spec's own options for this run, which the upstream's command line cannot take
    #: (:meth:`Spec.run_options` of ``simam2 run``'s options, or given from Python)
    options: dict = field(default_factory=dict)
    _cleanups: list = field(default_factory=list)

    @property
    def epoch(self) -> int:
        return self.probe.epoch if self.probe is not None else 0

    def register_model(self, model) -> None:
        """A replacement model class calls this once built; the probe takes the first as the run's."""
        if not any(m is model for m in self.models):
            self.models.append(model)
            self.probe.on_model(model)

    def add_cleanup(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` when the spec is uninstalled (e.g. a hook handle's ``remove``)."""
        self._cleanups.append(fn)
