"""Expanding a sweep spec into trials: grid products, seeded random draws, safe trial names.

Grid trials are the product of the parameter lists in spec order; random trials are drawn
with ``random.Random(seed)`` so the same seed always gives the same trials. Each trial gets a
name from ``name_template``, made safe for file names. :func:`override_tokens` turns values into
``KEY VALUE`` command-line tokens that ``CfgNode.merge_from_list`` parses back exactly.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from detlab.sweep.spec import SweepSpec, spec_error

__all__ = [
    "Trial",
    "expand_trials",
    "format_value",
    "override_tokens",
    "parameter_combinations",
    "short_keys",
    "trial_name",
]

_PLACEHOLDER = re.compile(r"\{([^{}:]+)(?::([^{}]*))?\}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


@dataclass
class Trial:
    """One training run of a sweep: its name, index and parameter values (dotted keys)."""

    index: int
    name: str
    params: dict[str, Any]


def _sample(rng: random.Random, dist: Mapping[str, Any]) -> Any:
    ((kind, args),) = dist.items()
    if kind == "uniform":
        return rng.uniform(args[0], args[1])
    if kind == "loguniform":
        return math.exp(rng.uniform(math.log(args[0]), math.log(args[1])))
    if kind == "randint":
        return rng.randint(args[0], args[1])
    return args[rng.randrange(len(args))]


def short_keys(keys: list[str]) -> dict[str, str]:
    """Shortest dotted suffix of each key that is unique among ``keys`` (for names, columns)."""
    out: dict[str, str] = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            clash = [k for k in keys if k != key and (k == suffix or k.endswith("." + suffix))]
            if not clash:
                out[key] = suffix
                break
        else:
            out[key] = key
    return out


def format_value(value: Any) -> str:
    """Compact text for a parameter value: ``0.0001`` -> ``0.0001``, ``[2, 3]`` -> ``2-3``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "-".join(format_value(v) for v in value)
    return str(value)


def _render_name(template: str, trial_index: int, params: dict[str, Any], path: str) -> str:
    short = {v: k for k, v in short_keys(list(params)).items()}

    def lookup(field_name: str) -> Any:
        name = field_name.strip()
        if name == "index":
            return trial_index
        if name in params:
            return params[name]
        if name in short:
            return params[short[name]]
        matches = [k for k in params if k.endswith("." + name)]
        if len(matches) == 1:
            return params[matches[0]]
        known = ", ".join(["index", *short])
        raise spec_error(
            path, f"name_template field {{{name}}} names no parameter; use one of {known}."
        )

    def replace(match: re.Match) -> str:
        value = lookup(match.group(1))
        fmt = match.group(2)
        if fmt:
            try:
                return format(value, fmt)
            except (ValueError, TypeError):
                raise spec_error(
                    path, f"name_template format {{{match.group(0)[1:-1]}}} does not fit {value!r}."
                ) from None
        return format_value(value)

    name = _PLACEHOLDER.sub(replace, template)
    name = _UNSAFE.sub("_", name).strip("._-")
    return name[:150]


def _default_template(params: dict[str, Any]) -> str:
    short = short_keys(list(params))
    return "_".join(["t{index:03d}", *(f"{short[k]}={{{short[k]}}}" for k in params)])


def trial_name(spec: SweepSpec, index: int, params: dict[str, Any]) -> str:
    """The name of trial ``index`` with ``params``, from ``name_template`` (or the default)."""
    template = spec.name_template or _default_template(spec.parameters)
    name = _render_name(template, index, params, spec.path)
    if not name:
        raise spec_error(spec.path, f"name_template {template!r} gives an empty trial name.")
    return name


def parameter_combinations(spec: SweepSpec) -> list[dict[str, Any]]:
    """Parameter values of every planned trial (grid: product in spec order; random: drawn by
    seed). Sampled methods (``tpe``, ``cmaes``) have no plan: Optuna picks their values."""
    if spec.sampled:
        return []
    keys = list(spec.parameters)
    combos: list[dict[str, Any]] = []
    if spec.method == "grid":
        for values in itertools.product(*(spec.parameters[k] for k in keys)):
            combos.append(dict(zip(keys, values, strict=True)))
    else:
        rng = random.Random(spec.seed)
        for _ in range(spec.num_trials or 0):
            combos.append({k: _sample(rng, spec.parameters[k]) for k in keys})
    return combos


def expand_trials(spec: SweepSpec) -> list[Trial]:
    """All trials of a spec in a fixed order (see :func:`parameter_combinations`).

    Names are rendered from ``name_template`` (default ``t000_BASE_LR=0.0001_...``), made safe
    for file names (anything but letters, digits and ``._=+-`` becomes ``_``) and must be unique.
    """
    combos = parameter_combinations(spec)
    trials: list[Trial] = []
    seen: dict[str, int] = {}
    for i, params in enumerate(combos):
        name = trial_name(spec, i, params)
        if name in seen:
            raise spec_error(
                spec.path,
                f"trials {seen[name]} and {i} are both named {name!r}; add {{index}} or more "
                "parameters to name_template.",
            )
        seen[name] = i
        trials.append(Trial(index=i, name=name, params=params))
    return trials


def override_tokens(values: Mapping[str, Any]) -> list[str]:
    """``KEY VALUE`` command-line tokens that ``CfgNode.merge_from_list`` parses back exactly."""
    from detlab.config import parse_literal

    tokens: list[str] = []
    for key, value in values.items():
        text = str(value)
        if (
            isinstance(value, bool)
            or parse_literal(text) != value
            or type(parse_literal(text)) is not type(value)
        ):
            text = repr(value)
        tokens += [key, text]
    return tokens
