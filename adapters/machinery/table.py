"""What the reproduced tables share: a row (method) with its run configuration, and the command line.

Every table is a :class:`~.grid.Table` (rows × columns × seeds, resume, statistics, outputs); a row
is a :class:`Method`, which says how its cells are configured.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from simam2.core.fusion import U_READINGS

from .config import RunConfig
from .grid import CellSeed, Row


@dataclass(frozen=True)
class Method(Row):
    """One row of a reproduced table: its label, SimAM² on or off, ``RunConfig.modulation`` and ζ.

    ζ follows the paper's tables (Table 1's footnote): learnable only where decoupling-free
    modulation needs it (its ratio, Eq. 11, is Σζ / Σ(1 − ζ)); every other SimAM² row fuses with
    the fixed ζ = 0.5; FOP's rows take FOP's own gate as ζ (``given``).
    """

    simam2: bool = False
    modulation: str = "none"
    zeta: str = "fixed"

    def run_config(self, cs: CellSeed, u: str = "eq4", **kwargs) -> RunConfig:
        """This row's RunConfig for one cell-seed: its seed, its records file, its TensorBoard folder;
        ``u`` (SPEC §2's reading of U) applies to the rows with SimAM²."""
        return RunConfig(simam2=self.simam2, zeta=self.zeta, modulation=self.modulation, seed=cs.seed,
                         record=cs.records, tensorboard=cs.tensorboard, u=u if self.simam2 else "eq4", **kwargs)


def add_table_options(parser: argparse.ArgumentParser) -> None:
    """``simam2 table``'s options that every table shares (the runner's)."""
    g = parser.add_argument_group("seeds and resume")
    g.add_argument("--seeds", type=int, default=None, help="seeds per cell, 0 … N−1 (default 1; balancemm 2): the "
                                                           "table shows mean ± std and paired differences to the baseline")
    g.add_argument("--fresh", action="store_true", help="rerun every cell, also those whose records are complete")
    g.add_argument("--tensorboard", type=Path, default=None,
                   help="write each run's TensorBoard curves under this folder (<cell>/seed<k>)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    g.add_argument("--u", choices=U_READINGS, default=None,
                   help="SPEC §2's reading of U in the SimAM² rows with fixed ζ (Tables 1 and 2): eq4 (default) "
                        "or vanilla; a folder holds one reading (another is run anew, never averaged in)")


__all__ = ["Method", "add_table_options"]
