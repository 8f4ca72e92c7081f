"""Adapters that put SimAM² into upstream research code at run time (see :mod:`.machinery`).

``ADAPTERS`` maps each CLI name to the module whose ``SPEC`` declares that upstream; ``TABLES`` maps
each table name to the module whose ``run_table`` reproduces one of the paper's tables on synthetic
data. Modules are imported on first use, so that one upstream's optional dependencies never burden
another.
"""

from __future__ import annotations

import importlib

from .machinery import (
    AdapterError,
    ConfigError,
    RecordWriter,
    Replacement,
    RunConfig,
    RunContext,
    Spec,
    current_context,
    installed,
    run_script,
)

ADAPTERS = {
    "ogm-ge": "simam2.adapters.ogm_ge.spec",
    "avga": "simam2.adapters.ave.avga",
    "psp": "simam2.adapters.ave.psp",
    "fop": "simam2.adapters.fop.spec",
    "balancemm": "simam2.adapters.balancemm.spec",
}

TABLES = {
    "ogm-ge": ("simam2.adapters.ogm_ge.table", "Table 1: CREMA-D, Top-1 / mAP"),
    "ave": ("simam2.adapters.ave.table", "Table 2: AVE localization accuracy, AVGA and PSP"),
    "fop": ("simam2.adapters.fop.table", "Table 3: face-voice association, EER / AUC"),
    "balancemm": ("simam2.adapters.balancemm.table", "BalanceMM's trainers beside +SimAM² and "
                                                     "+Decoupling-Free +SimAM², CREMA-D acc / macro-F1"),
}


def get_spec(name: str) -> Spec:
    """The spec registered as ``name``; a clear error for an unknown one."""
    if name not in ADAPTERS:
        raise AdapterError(f"unknown adapter {name!r}; known: {', '.join(ADAPTERS)}")
    return importlib.import_module(ADAPTERS[name]).SPEC


__all__ = [
    "ADAPTERS", "TABLES", "get_spec", "AdapterError", "ConfigError", "RecordWriter", "Replacement",
    "RunConfig", "RunContext", "Spec", "current_context", "installed", "run_script",
]
