"""Adapters that put SimAM² into upstream research code at run time (see :mod:`.base`).

``ADAPTERS`` maps each CLI name to the module that defines its ``ADAPTER``; ``TABLES`` maps each
table name to the module whose ``run_table`` reproduces one of the paper's tables on synthetic data.
Modules are imported on first use, so that one upstream's optional dependencies never burden another.
"""

from __future__ import annotations

import importlib

from .base import (
    Adapter,
    AdapterError,
    Recorder,
    Replacement,
    RunConfig,
    RunContext,
    current_context,
    installed,
    run_script,
)

ADAPTERS = {
    "ogm-ge": "simam2.adapters.ogm_ge",
    "avga": "simam2.adapters.avga",
    "psp": "simam2.adapters.psp",
    "fop": "simam2.adapters.fop",
}

TABLES = {
    "ogm-ge": ("simam2.adapters.ogm_ge", "Table 1: CREMA-D, Top-1 / mAP"),
    "ave": ("simam2.adapters.ave", "Table 2: AVE localization accuracy, AVGA and PSP"),
    "fop": ("simam2.adapters.fop", "Table 3: face-voice association, EER / AUC"),
}


def get_adapter(name: str) -> Adapter:
    """The adapter registered as ``name``; a clear error for an unknown one."""
    if name not in ADAPTERS:
        raise AdapterError(f"unknown adapter {name!r}; known: {', '.join(ADAPTERS)}")
    return importlib.import_module(ADAPTERS[name]).ADAPTER


__all__ = [
    "ADAPTERS", "TABLES", "get_adapter", "Adapter", "AdapterError", "Recorder", "Replacement",
    "RunConfig", "RunContext", "current_context", "installed", "run_script",
]
