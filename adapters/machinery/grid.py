"""The table runner under its former name: every public name of :mod:`.tables` (declare, run with
resume, aggregate, render, executors), so that ``from ..machinery.grid import ...`` keeps working."""

from .tables import *  # noqa: F401,F403 — a compatibility module re-exports
from .tables import __all__  # noqa: F401
from .tables.aggregate import all_runs as _all_runs, last_run as _last_run  # noqa: F401
from .tables.declare import MODALITY_SUFFIXES, PICKS, cell_seeds, signature as _signature  # noqa: F401
