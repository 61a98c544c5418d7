"""Per-area default config trees.

Each module adds one area's keys to a :class:`~detlab.config.CfgNode` and documents them where
they are declared. :func:`detlab.config.get_cfg` calls them in order; nothing else happens on
import. Add a key to the module of the area that reads it.
"""

from detlab.config.defaults.data import add_data_defaults
from detlab.config.defaults.logging import add_logging_defaults
from detlab.config.defaults.model import add_model_defaults
from detlab.config.defaults.output import add_output_defaults
from detlab.config.defaults.solver import add_solver_defaults
from detlab.config.defaults.test import add_test_defaults

ALL_DEFAULTS = (
    add_model_defaults,
    add_data_defaults,
    add_solver_defaults,
    add_test_defaults,
    add_output_defaults,
    add_logging_defaults,
)

__all__ = [
    "ALL_DEFAULTS",
    "add_data_defaults",
    "add_logging_defaults",
    "add_model_defaults",
    "add_output_defaults",
    "add_solver_defaults",
    "add_test_defaults",
]
