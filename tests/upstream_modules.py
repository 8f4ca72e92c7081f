"""Upstream source files as modules of their own, for tests that compare against the pinned code."""

import importlib.util
import subprocess
from pathlib import Path


def load_module(path: Path, name: str):
    """The file at ``path`` executed as a fresh module called ``name`` (no sys.modules entry)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pristine_module(upstream: str, checkout: Path, relpath: str, into: Path):
    """``relpath`` exactly as at ``upstream``'s pin, before any patch, as a module.

    The text comes from ``git show`` of the checkout's pinned commit and is written under ``into``
    (a test's temporary folder); nothing of it is kept in the repository.
    """
    import vendor_fetch

    sha = vendor_fetch.UPSTREAMS[upstream].sha
    text = subprocess.run(["git", "-C", str(checkout), "show", f"{sha}:{relpath}"],
                          check=True, capture_output=True, text=True).stdout
    name = "pristine_" + upstream.replace("-", "_") + "_" + Path(relpath).stem
    path = Path(into) / f"{name}.py"
    path.write_text(text)
    return load_module(path, name)
