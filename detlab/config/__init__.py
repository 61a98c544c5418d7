"""Configuration: ``get_cfg()`` default trees, YAML files with ``_BASE_``, CLI overrides.

>>> from detlab.config import get_cfg
>>> cfg = get_cfg()
>>> cfg.merge_from_list(["SOLVER.BASE_LR", "0.001", "SOLVER.MAX_ITER=100"])
"""

from detlab.config.checks import check_config
from detlab.config.config import (
    CfgNode,
    get_cfg,
    load_config,
    load_yaml_with_base,
    parse_literal,
    parse_overrides,
    suggest_keys,
)
from detlab.utils.errors import ConfigError

__all__ = [
    "CfgNode",
    "ConfigError",
    "check_config",
    "get_cfg",
    "load_config",
    "load_yaml_with_base",
    "parse_literal",
    "parse_overrides",
    "suggest_keys",
]
