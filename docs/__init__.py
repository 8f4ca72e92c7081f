"""The documentation pages, as package data: an installed ``simam2`` carries the pages its
command line names (``simam2.docs.page("results.md")``)."""

from importlib.resources import files
from pathlib import Path


def page(name: str) -> Path:
    """The path of the documentation page ``name`` (e.g. ``"results.md"``) in this install."""
    path = Path(str(files(__name__))) / name
    if not path.is_file():
        raise FileNotFoundError(f"no documentation page {name!r} in {path.parent}")
    return path
