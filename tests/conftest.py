"""Shared fixtures for the test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# No test reaches the network: fetches take local mirrors ($SIMAM2_SOURCE) or cached checkouts only,
# and pip (the study's cached wheels) no package index; what cannot be had so skips with one line.
os.environ.setdefault("SIMAM2_OFFLINE", "1")
os.environ["PIP_NO_INDEX"] = "1"

#: The core's tests run on this device (``SIMAM2_TEST_DEVICE=cuda``; default cpu): each of them runs
#: with it as torch's default device, so that every tensor they make lands there.
TEST_DEVICE = os.environ.get("SIMAM2_TEST_DEVICE", "cpu")
CORE_TEST_MODULES = {"test_energy", "test_fused", "test_fusion", "test_forms", "test_modulation",
                     "test_autocast_compile"}


@pytest.fixture(autouse=True)
def _core_test_device(request):
    if TEST_DEVICE == "cpu" or request.module.__name__.rpartition(".")[2] not in CORE_TEST_MODULES:
        yield
        return
    if TEST_DEVICE.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip(f"SIMAM2_TEST_DEVICE={TEST_DEVICE} but torch sees no CUDA device")
    torch.set_default_device(TEST_DEVICE)
    try:
        yield
    finally:
        torch.set_default_device(None)


@pytest.fixture(scope="session")
def upstream_checkout():
    """Factory: ``upstream_checkout("ogm-ge")`` -> the patched checkout Path of that upstream.

    Uses the cached checkout when it is up to date, else fetches it from ``$SIMAM2_SOURCE`` (local
    mirrors only: tests are offline) into ``$SIMAM2_HOME``; when neither works the test is skipped
    with one line saying why.
    Each name is resolved once per session, so a warm cache costs one verification per upstream.
    """
    import vendor_fetch

    resolved: dict[str, Path | str] = {}  # name -> checkout, or the reason there is none

    def get(name: str) -> Path:
        if name not in vendor_fetch.UPSTREAMS:
            raise KeyError(f"unknown upstream {name!r}; known: {', '.join(vendor_fetch.UPSTREAMS)}")
        if name not in resolved:
            try:
                resolved[name] = vendor_fetch.fetch(name)
            except vendor_fetch.FetchError as e:
                resolved[name] = str(e)
        found = resolved[name]
        if isinstance(found, str):
            pytest.skip(f"no {name} checkout: {found}; "
                        f"run `python vendor_fetch.py {name}` with SIMAM2_SOURCE set")
        return found

    return get
