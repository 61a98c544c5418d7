"""Sweep specs: a YAML file that expands into a list of training trials.

A spec names a base config, fixed overrides, and the parameters to vary::

    base_config: ../quickstart/sar_ships_cpu.yaml   # relative to the spec file
    fixed: {SOLVER.MAX_ITER: 2000}                 # dotted keys or nested mappings
    method: grid                                   # or "random"
    parameters:                                    # grid: a list of values per key
      SOLVER.BASE_LR: [1.0e-4, 2.0e-4]
      SOLVER.CLIP_GRADIENTS.CLIP_VALUE: [0.5, 1.0]
    metric: bbox/APs                               # ranks the leaderboard
    mode: max
    output_root: output/sweeps/sar_lr_clip         # relative to the working directory
    name_template: "lr{BASE_LR}_clip{CLIP_VALUE}"

Random search replaces the lists with distributions (``{uniform: [lo, hi]}``,
``{loguniform: [lo, hi]}``, ``{randint: [lo, hi]}``, ``{choice: [a, b, ...]}``) and adds
``num_trials`` and ``seed``; the same seed always gives the same trials. ``method: tpe`` and
``method: cmaes`` (numeric parameters only) use the same distributions, with Optuna choosing each
trial from the results so far; they and a ``study:`` section (storage, pruner; see
:mod:`detlab.sweep.study_settings`) run the sweep as an Optuna study. ``metric`` may be a list
(multi-objective; ``mode`` then one value or one per metric). Files are read with
``yaml.safe_load``; every mistake raises :class:`~detlab.utils.errors.UserError` in one sentence.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detlab.sweep.study_settings import SAMPLED_METHODS, StudySettings, parse_study_section
from detlab.utils.errors import UserError
from detlab.utils.file_io import read_yaml

__all__ = [
    "METHODS",
    "SLURM_KEYS",
    "SPEC_KEYS",
    "SweepSpec",
    "add_fixed_overrides",
    "load_spec",
    "parse_gpus",
]

#: Top-level keys a spec may hold.
SPEC_KEYS = (
    "base_config",
    "fixed",
    "method",
    "parameters",
    "num_trials",
    "seed",
    "metric",
    "mode",
    "output_root",
    "name_template",
    "train_script",
    "python",
    "parallel",
    "gpus",
    "gpus_per_trial",
    "env",
    "slurm",
    "study",
)
#: Sweep methods: planned (grid, random) and sampled by Optuna (tpe, cmaes).
METHODS = ("grid", "random", *SAMPLED_METHODS)
#: Keys of the ``slurm:`` section (submitit's names; ``timeout_min`` in minutes).
SLURM_KEYS = (
    "partition",
    "gpus_per_node",
    "cpus_per_task",
    "mem_gb",
    "timeout_min",
    "account",
    "qos",
    "constraint",
    "additional_parameters",
    "max_parallel",
)
_SLURM_NUMBERS = ("gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min", "max_parallel")
_DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")


@dataclass
class SweepSpec:
    """A parsed, checked sweep spec. Paths are absolute."""

    path: str
    base_config: str
    output_root: str
    fixed: dict[str, Any] = field(default_factory=dict)
    method: str = "grid"
    parameters: dict[str, Any] = field(default_factory=dict)
    num_trials: int | None = None
    seed: int = 0
    metric: str = "bbox/AP"
    mode: str = "max"
    name_template: str | None = None
    train_script: str | None = None
    python: str | None = None
    parallel: int | None = None
    gpus: list[str] | None = None
    gpus_per_trial: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    slurm: dict[str, Any] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)  # all objectives; metrics[0] == metric
    modes: list[str] = field(default_factory=list)
    study: StudySettings | None = None  # set: the sweep runs as an Optuna study

    def __post_init__(self) -> None:
        self.metrics = list(self.metrics) or [self.metric]
        self.modes = list(self.modes) or [self.mode]

    @property
    def metric_key(self) -> tuple[str, str]:
        """``("bbox", "APs")`` for ``bbox/APs``; a bare ``APs`` means the ``bbox`` task."""
        return split_metric(self.metric)

    @property
    def sampled(self) -> bool:
        """True when Optuna samples the trials one by one (``tpe``, ``cmaes``)."""
        return self.method in SAMPLED_METHODS


def split_metric(metric: str) -> tuple[str, str]:
    """``bbox/APs`` -> ``("bbox", "APs")``; a bare ``APs`` means the ``bbox`` task."""
    task, _, key = metric.rpartition("/")
    return (task or "bbox", key)


def spec_error(path: str, message: str) -> UserError:
    return UserError(f"Sweep spec {path}: {message}")


def _flatten(data: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"SOLVER": {"BASE_LR": 1}}`` and ``{"SOLVER.BASE_LR": 1}`` both -> dotted keys."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, full + "."))
        else:
            out[full] = value
    return out


def _flatten_parameters(data: Mapping, prefix: str = "") -> dict[str, Any]:
    """Like :func:`_flatten` for nested config groups (upper-case keys, ``SOLVER: {BASE_LR:
    [...]}``); a mapping with lower-case keys is a value (a distribution such as ``uniform``)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        nested = (
            isinstance(value, Mapping)
            and value
            and all(isinstance(k, str) and k.isupper() for k in value)
        )
        if nested:
            out.update(_flatten_parameters(value, full + "."))
        else:
            out[full] = value
    return out


def _check_number(path: str, what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise spec_error(path, f"{what} must be a finite number, got {value!r}.")
    return float(value)


def _check_parameter(path: str, method: str, key: str, value: Any) -> Any:
    if method == "grid":
        if not isinstance(value, list) or not value:
            raise spec_error(
                path,
                f"grid parameter {key} must be a non-empty list of values, got {value!r}; "
                "write e.g. [0.1, 0.2].",
            )
        return value
    if isinstance(value, list):  # a bare list in a random search means `choice`
        value = {"choice": value}
    if not isinstance(value, Mapping) or len(value) != 1:
        raise spec_error(
            path,
            f"{method} parameter {key} must be one of {{uniform|loguniform|randint: [lo, hi]}} "
            f"or {{choice: [...]}}, got {value!r}.",
        )
    ((kind, args),) = value.items()
    if kind not in _DISTRIBUTIONS:
        hint = difflib.get_close_matches(str(kind), _DISTRIBUTIONS, n=1)
        extra = (
            f"; did you mean {hint[0]}?" if hint else f"; use one of {'/'.join(_DISTRIBUTIONS)}."
        )
        raise spec_error(path, f"parameter {key} has unknown distribution {kind!r}{extra}")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise spec_error(path, f"parameter {key}: choice needs a non-empty list, got {args!r}.")
        return {kind: args}
    if not isinstance(args, list) or len(args) != 2:
        raise spec_error(path, f"parameter {key}: {kind} needs [low, high], got {args!r}.")
    lo = _check_number(path, f"parameter {key} ({kind} low)", args[0])
    hi = _check_number(path, f"parameter {key} ({kind} high)", args[1])
    if lo > hi:
        raise spec_error(path, f"parameter {key}: {kind} low {args[0]} is above high {args[1]}.")
    if kind == "loguniform" and lo <= 0:
        raise spec_error(
            path, f"parameter {key}: loguniform bounds must be positive, got {args!r}."
        )
    if kind == "randint":
        if not (lo.is_integer() and hi.is_integer()):
            raise spec_error(
                path, f"parameter {key}: randint bounds must be integers, got {args!r}."
            )
        return {kind: [int(lo), int(hi)]}
    return {kind: [lo, hi]}


def load_spec(path: str | os.PathLike, output_root: str | None = None) -> SweepSpec:
    """Read and check a sweep spec file (``yaml.safe_load``); ``output_root`` overrides it."""
    path = os.path.abspath(os.fspath(path))
    data = read_yaml(path, "Sweep spec")
    if not isinstance(data, dict):
        raise spec_error(path, "must be a mapping of keys (base_config, parameters, ...).")
    for key in data:
        if key not in SPEC_KEYS:
            hint = difflib.get_close_matches(str(key), SPEC_KEYS, n=1)
            extra = f"; did you mean {hint[0]}?" if hint else f"; valid: {', '.join(SPEC_KEYS)}."
            raise spec_error(path, f"unknown key {key!r}{extra}")
    spec_dir = os.path.dirname(path)

    base = data.get("base_config")
    if not isinstance(base, str) or not base:
        raise spec_error(path, "needs base_config, the config file the trials start from.")
    base = os.path.normpath(os.path.join(spec_dir, os.path.expanduser(base)))
    if not os.path.isfile(base):
        raise spec_error(
            path, f"base_config {base} does not exist; paths are relative to the spec."
        )

    fixed = data.get("fixed") or {}
    if not isinstance(fixed, Mapping):
        raise spec_error(path, f"fixed must be a mapping of config keys to values, got {fixed!r}.")
    fixed = _flatten(fixed)

    method = data.get("method", "grid")
    if method not in METHODS:
        raise spec_error(path, f"method must be one of {', '.join(METHODS)}, got {method!r}.")
    params = data.get("parameters")
    if not isinstance(params, Mapping) or not params:
        raise spec_error(path, "needs parameters, a mapping of config keys to values to try.")
    params = _flatten_parameters(params)
    params = {k: _check_parameter(path, method, k, v) for k, v in params.items()}
    if method == "cmaes":
        for key, dist in params.items():
            if "choice" in dist:
                raise spec_error(
                    path,
                    f"CMA-ES searches numeric parameters only and {key} is a choice; give it a "
                    "uniform/loguniform/randint range or use method: tpe.",
                )
    for key in params:
        if key in fixed:
            raise spec_error(path, f"{key} is both fixed and a parameter; keep it in one place.")
    for key in (*fixed, *params):
        if key.upper() == "OUTPUT_DIR":
            raise spec_error(
                path, "OUTPUT_DIR is set per trial by the sweep; set output_root instead."
            )

    num_trials = data.get("num_trials")
    if method != "grid":
        if isinstance(num_trials, bool) or not isinstance(num_trials, int) or num_trials < 1:
            raise spec_error(path, f"{method} search needs num_trials >= 1, got {num_trials!r}.")
    elif num_trials is not None:
        raise spec_error(path, "num_trials does not apply to a grid; remove it.")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise spec_error(path, f"seed must be an integer, got {seed!r}.")

    metrics, modes = _check_objectives(path, data.get("metric", "bbox/AP"), data.get("mode", "max"))

    root = output_root or data.get("output_root")
    if not root:
        stem = Path(path).stem
        root = os.path.join("output", "sweeps", stem)
    if not isinstance(root, str):
        raise spec_error(path, f"output_root must be a path, got {root!r}.")
    template = data.get("name_template")
    if template is not None and (not isinstance(template, str) or not template.strip()):
        raise spec_error(
            path, f"name_template must be text like 'lr{{BASE_LR}}', got {template!r}."
        )
    if template is not None and method in SAMPLED_METHODS and "{index" not in template:
        raise spec_error(
            path,
            f"name_template of a {method} search must hold {{index}} (sampled values can repeat), "
            f"got {template!r}.",
        )

    script = data.get("train_script")
    if script is not None:
        if not isinstance(script, str):
            raise spec_error(path, f"train_script must be a path, got {script!r}.")
        script = os.path.normpath(os.path.join(spec_dir, os.path.expanduser(script)))
    python = data.get("python")
    if python is not None and not isinstance(python, str):
        raise spec_error(path, f"python must be the path of an interpreter, got {python!r}.")
    parallel = data.get("parallel")
    if parallel is not None and (
        isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1
    ):
        raise spec_error(path, f"parallel must be an integer >= 1, got {parallel!r}.")
    gpus = data.get("gpus")
    if gpus is not None:
        gpus = parse_gpus(gpus, where=f"Sweep spec {path}")
    per_trial = data.get("gpus_per_trial")
    if per_trial is not None and (
        isinstance(per_trial, bool) or not isinstance(per_trial, int) or per_trial < 1
    ):
        raise spec_error(path, f"gpus_per_trial must be an integer >= 1, got {per_trial!r}.")
    env = data.get("env") or {}
    if not isinstance(env, Mapping) or not all(
        isinstance(k, str) and isinstance(v, (str, int, float)) and not isinstance(v, bool)
        for k, v in env.items()
    ):
        raise spec_error(path, f"env must map variable names to text or numbers, got {env!r}.")
    slurm = data.get("slurm") or {}
    if not isinstance(slurm, Mapping):
        raise spec_error(path, f"slurm must be a mapping ({', '.join(SLURM_KEYS)}), got {slurm!r}.")
    for key, value in slurm.items():
        if key not in SLURM_KEYS:
            hint = difflib.get_close_matches(str(key), SLURM_KEYS, n=1)
            extra = f"; did you mean {hint[0]}?" if hint else f"; use {', '.join(SLURM_KEYS)}."
            raise spec_error(path, f"unknown slurm key {key!r}{extra}")
        if key in _SLURM_NUMBERS and value is not None:
            number = _check_number(path, f"slurm {key}", value)
            if number < 0 or (key != "mem_gb" and not number.is_integer()):
                raise spec_error(
                    path, f"slurm {key} must be a non-negative whole number, got {value!r}."
                )
        if key == "additional_parameters" and not isinstance(value, Mapping):
            raise spec_error(path, f"slurm additional_parameters must be a mapping, got {value!r}.")

    study = None
    if "study" in data or method in SAMPLED_METHODS:
        study = parse_study_section(path, data.get("study"), Path(path).stem, len(metrics))

    return SweepSpec(
        path=path,
        base_config=base,
        output_root=os.path.abspath(os.path.expanduser(root)),
        fixed=dict(fixed),
        method=method,
        parameters=params,
        num_trials=num_trials,
        seed=seed,
        metric=metrics[0],
        mode=modes[0],
        metrics=metrics,
        modes=modes,
        study=study,
        name_template=template,
        train_script=script,
        python=python,
        parallel=parallel,
        gpus=gpus,
        gpus_per_trial=per_trial,
        env={k: str(v) for k, v in env.items()},
        slurm=dict(slurm),
    )


def _check_objectives(path: str, metric: Any, mode: Any) -> tuple[list[str], list[str]]:
    """``metric`` (text or a list: multi-objective) and ``mode`` (one, or one per metric)."""
    metrics = metric if isinstance(metric, list) else [metric]
    if not metrics or not all(isinstance(m, str) and m.strip("/") for m in metrics):
        raise spec_error(
            path, f"metric must be text like 'bbox/APs' or a list of such, got {metric!r}."
        )
    metrics = [m.strip("/") for m in metrics]
    if len(set(metrics)) != len(metrics):
        raise spec_error(path, f"metric lists {metric!r} with a repeat; name each metric once.")
    modes = mode if isinstance(mode, list) else [mode] * len(metrics)
    if len(modes) != len(metrics) or not all(m in ("max", "min") for m in modes):
        raise spec_error(
            path, f"mode must be 'max' or 'min' (or one per metric), got {mode!r} for {metrics}."
        )
    return metrics, modes


def add_fixed_overrides(spec: SweepSpec, opts: list[str]) -> SweepSpec:
    """``spec`` with command-line ``KEY VALUE`` / ``KEY=VALUE`` tokens added to its fixed
    overrides (they win over the spec's own), e.g. ``MODEL.DEVICE cpu SOLVER.MAX_ITER 100``."""
    from detlab.config import parse_literal, parse_overrides

    fixed = dict(spec.fixed)
    for key, raw in parse_overrides(opts):
        if key in spec.parameters:
            raise UserError(
                f"{key} is a parameter of sweep spec {spec.path}; it cannot also be fixed on the "
                "command line."
            )
        if key.upper() == "OUTPUT_DIR":
            raise UserError("OUTPUT_DIR is set per trial by the sweep; use --output-root instead.")
        fixed[key] = parse_literal(raw)
    return dataclasses.replace(spec, fixed=fixed)


def parse_gpus(value: Any, where: str = "--gpus") -> list[str]:
    """``"0,1"``, ``[0, 1]`` or ``""`` (CPU) -> ``["0", "1"]`` / ``[]``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) or isinstance(v, str) and v.isdigit()
        for v in value
    ):
        raise UserError(f"{where}: gpus must be GPU indices like 0,1 (or empty for CPU).")
    return [str(v) for v in value]
