"""The ``study:`` section of a sweep spec: where the Optuna study lives and how it prunes.

::

    method: tpe                      # grid | random | tpe | cmaes
    num_trials: 24
    study:
      name: sar_lr_clip              # default: the spec file's stem
      storage: sqlite                # sqlite (default: <output_root>/study.db), journal[:PATH],
                                     # or any SQLAlchemy URL, e.g. postgresql://u:${PW}@db/detlab
      pruner: asha                   # none | median | asha | hyperband, or {type: asha, ...}
      max_retries: 3                 # resumes of a trial whose process or worker died
      heartbeat_s: 30                # how often a worker marks its trial as alive
      stale_after_s: 180             # a running trial without a heartbeat for this long is dead
      wait: true                     # idle workers stay while trials run, to take over dead ones
      sampler_options: {n_startup_trials: 5}   # keyword arguments of the Optuna sampler

Parsing only: nothing here imports Optuna. Every mistake is a one-sentence
:class:`~detlab.utils.errors.UserError` naming the spec file.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from detlab.utils.errors import UserError

__all__ = [
    "PRUNER_OPTIONS",
    "SAMPLED_METHODS",
    "STUDY_KEYS",
    "StudySettings",
    "parse_pruner",
    "parse_study_section",
]

#: Keys of the ``study:`` section.
STUDY_KEYS = (
    "name",
    "storage",
    "pruner",
    "max_retries",
    "heartbeat_s",
    "stale_after_s",
    "wait",
    "sampler_options",
)
#: Methods whose trials Optuna samples one at a time (grid and random trials are planned).
SAMPLED_METHODS = ("tpe", "cmaes")
#: Pruner types and the options each accepts (Optuna's argument names).
PRUNER_OPTIONS: dict[str, tuple[str, ...]] = {
    "none": (),
    "median": ("n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials"),
    "asha": ("min_resource", "reduction_factor", "min_early_stopping_rate", "bootstrap_count"),
    "hyperband": ("min_resource", "max_resource", "reduction_factor", "bootstrap_count"),
}
_PRUNER_ALIASES = {"successive_halving": "asha", "sha": "asha", "nop": "none"}


@dataclass
class StudySettings:
    """The parsed ``study:`` section (defaults where a key is absent)."""

    name: str
    storage: str | None = None  # None = sqlite:///<output_root>/study.db
    pruner: dict[str, Any] = field(default_factory=lambda: {"type": "none"})
    max_retries: int = 3
    heartbeat_s: float = 30.0
    stale_after_s: float = 180.0
    wait: bool = True
    sampler_options: dict[str, Any] = field(default_factory=dict)

    @property
    def pruner_type(self) -> str:
        return str(self.pruner["type"])


def _error(path: str, message: str) -> UserError:
    return UserError(f"Sweep spec {path}: {message}")


def _positive_number(path: str, key: str, value: Any, integer: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0 or integer and float(value) != int(value):
        kind = "a whole number" if integer else "a number"
        raise _error(path, f"study {key} must be {kind} above 0, got {value!r}.")
    return int(value) if integer else float(value)


def parse_pruner(path: str, value: Any) -> dict[str, Any]:
    """``asha`` or ``{type: asha, reduction_factor: 3}`` -> ``{"type": "asha", ...}``."""
    if value is None:
        return {"type": "none"}
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, Mapping) or not isinstance(value.get("type"), str):
        raise _error(
            path,
            f"study pruner must be a name ({'/'.join(PRUNER_OPTIONS)}) or a mapping with a "
            f"type, got {value!r}.",
        )
    kind = _PRUNER_ALIASES.get(value["type"].lower(), value["type"].lower())
    if kind not in PRUNER_OPTIONS:
        hint = difflib.get_close_matches(kind, list(PRUNER_OPTIONS), n=1)
        extra = f"; did you mean {hint[0]}?" if hint else f"; use {'/'.join(PRUNER_OPTIONS)}."
        raise _error(path, f"unknown pruner {value['type']!r}{extra}")
    out: dict[str, Any] = {"type": kind}
    for key, option in value.items():
        if key == "type":
            continue
        if key not in PRUNER_OPTIONS[kind]:
            known = ", ".join(PRUNER_OPTIONS[kind]) or "none"
            raise _error(path, f"pruner {kind} has no option {key!r}; its options: {known}.")
        if key == "min_resource" and option == "auto" or key == "max_resource" and option == "auto":
            out[key] = "auto"
            continue
        if isinstance(option, bool) or not isinstance(option, int) or option < 0:
            raise _error(path, f"pruner option {key} must be a whole number >= 0, got {option!r}.")
        if key in ("reduction_factor",) and option < 2:
            raise _error(path, f"pruner option {key} must be at least 2, got {option}.")
        out[key] = option
    return out


def parse_study_section(
    path: str, data: Any, default_name: str, n_objectives: int
) -> StudySettings:
    """Check the ``study:`` mapping of the spec at ``path``."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise _error(path, f"study must be a mapping ({', '.join(STUDY_KEYS)}), got {data!r}.")
    for key in data:
        if key not in STUDY_KEYS:
            hint = difflib.get_close_matches(str(key), STUDY_KEYS, n=1)
            extra = f"; did you mean {hint[0]}?" if hint else f"; use {', '.join(STUDY_KEYS)}."
            raise _error(path, f"unknown study key {key!r}{extra}")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise _error(path, f"study name must be text, got {name!r}.")
    storage = data.get("storage")
    if storage is not None and (not isinstance(storage, str) or not storage.strip()):
        raise _error(
            path,
            f"study storage must be sqlite, journal[:PATH] or a database URL, got {storage!r}.",
        )
    pruner = parse_pruner(path, data.get("pruner"))
    if pruner["type"] != "none" and n_objectives > 1:
        raise _error(
            path,
            "pruning needs a single metric (Optuna cannot prune multi-objective studies); "
            "set pruner: none or rank by one metric.",
        )
    retries = data.get("max_retries", 3)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise _error(path, f"study max_retries must be a whole number >= 0, got {retries!r}.")
    heartbeat = _positive_number(path, "heartbeat_s", data.get("heartbeat_s", 30.0))
    stale = _positive_number(path, "stale_after_s", data.get("stale_after_s", 180.0))
    if stale < 2 * heartbeat:
        raise _error(
            path,
            f"study stale_after_s ({stale:g}) must be at least twice heartbeat_s ({heartbeat:g}), "
            "or live trials would be taken for dead ones.",
        )
    wait = data.get("wait", True)
    if not isinstance(wait, bool):
        raise _error(path, f"study wait must be true or false, got {wait!r}.")
    options = data.get("sampler_options") or {}
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise _error(path, f"study sampler_options must be a mapping, got {options!r}.")
    return StudySettings(
        name=name.strip(),
        storage=storage.strip() if storage else None,
        pruner=pruner,
        max_retries=retries,
        heartbeat_s=heartbeat,
        stale_after_s=stale,
        wait=wait,
        sampler_options=dict(options),
    )
