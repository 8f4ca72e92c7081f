"""What the reproduced tables share: a row (method) and the folder name of a cell."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import RunConfig


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


def cell_name(method: Method, column: str) -> str:
    """``column__method`` as a folder name: ASCII, no separators."""
    slug = method.label.lower().replace("²", "2").replace("+", "").replace(" ", "_").replace("-", "")
    return f"{column}__{slug}"
