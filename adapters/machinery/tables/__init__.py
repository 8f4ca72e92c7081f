"""The table runner every ``simam2 table`` uses: rows (methods) × columns (networks, fusions) × seeds.

``declare`` (Row, Column, Table, the cell × seed key), ``run`` (resume, the folder lock, failures,
progress), ``executors`` (serial, local worker processes, Slurm), ``aggregate`` (records → Result),
``render`` (text, Markdown, CSV, JSON, each written atomically).
"""

from .aggregate import CellResult, Result, aggregate, pick_evaluation
from .declare import CellSeed, Column, GridError, Row, Table, cell_name, seed_list, slug
from .executors import EXECUTORS, Local, Serial, Slurm, make_executor
from .render import render_markdown, render_text, to_csv, to_json, write_outputs
from .run import folder_lock, is_done, run_table

__all__ = ["Table", "Row", "Column", "CellSeed", "Result", "CellResult", "GridError", "run_table", "aggregate",
           "pick_evaluation", "render_text", "render_markdown", "to_csv", "to_json", "write_outputs",
           "cell_name", "slug", "seed_list", "is_done", "folder_lock", "Serial", "Local", "Slurm",
           "make_executor", "EXECUTORS"]
