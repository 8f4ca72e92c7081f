"""What every adapter shares, once: the run options (:mod:`.config`), the record schema
(:mod:`.records`), the declaration of an upstream (:mod:`.spec`), installing and running it
(:mod:`.install`), the per-run probe (:mod:`.probe`), the layers' helpers (:mod:`.layers`) and the
statistics of tables (:mod:`.stats`)."""

from .config import ConfigError, Modulation, RunConfig, add_run_options, config_from_args
from .install import AdapterError, Replacement, RunContext, current_context, installed, option_value, run_script
from .records import RecordsError, RecordWriter, read_records, runs
from .spec import Spec, groups_by_prefix

__all__ = [
    "AdapterError", "ConfigError", "Modulation", "RecordWriter", "RecordsError", "Replacement", "RunConfig", "RunContext", "Spec",
    "add_run_options", "config_from_args", "current_context", "groups_by_prefix", "installed", "option_value",
    "read_records", "run_script", "runs",
]
