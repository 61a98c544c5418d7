"""The Optuna study behind a sweep: storage, search space, sampler and pruner.

Storage strings (``study.storage`` in the spec, or ``--storage``):

* ``sqlite`` (the default): ``sqlite:///<output_root>/study.db``, for one machine;
* any SQLAlchemy URL (``postgresql+psycopg://user:${DETLAB_DB_PASSWORD}@db/detlab``,
  ``mysql+pymysql://...``, ``sqlite:////abs/path.db``): workers on many machines share it;
  ``${VAR}`` is read from the environment, so no password needs to be written down;
* ``journal`` or ``journal:PATH``: Optuna's journal file (``<output_root>/study.journal`` by
  default), for a shared filesystem (NFS) where SQLite's locking is unsafe.

Optuna is imported only here and only when needed (the ``sweep`` extra);
:func:`require_optuna` says in one sentence how to install it.
"""

from __future__ import annotations

import difflib
import inspect
import json
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any

from detlab.sweep.spec import SweepSpec
from detlab.utils.errors import UserError

__all__ = [
    "StorageRef",
    "build_pruner",
    "build_sampler",
    "decode_params",
    "encode_params",
    "open_storage",
    "open_study",
    "quiet_optuna",
    "require_optuna",
    "resolve_pruner",
    "resolve_storage",
    "search_space",
    "storage_from_env_value",
]

INSTALL_HINT = "pip install 'detlab[sweep]'"
_ENV_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def require_optuna() -> Any:
    """The ``optuna`` module, or a one-sentence :class:`UserError` naming the extra."""
    try:
        import optuna
    except ImportError:
        raise UserError(
            "This sweep runs as an Optuna study (a study: section, method tpe/cmaes, --workers "
            f"or --storage) and needs Optuna; install it with {INSTALL_HINT}."
        ) from None
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def quiet_optuna() -> None:
    """Optuna's own INFO lines ("A new study created ...") off: for the command-line tools."""
    require_optuna().logging.set_verbosity(30)  # logging.WARNING


@dataclass(frozen=True)
class StorageRef:
    """Where a study lives. ``text`` is what the user wrote (``${VAR}`` unexpanded, safe to
    print and to pass on a command line); ``target`` is the expanded URL or journal path."""

    kind: str  # "rdb" or "journal"
    text: str
    target: str

    @property
    def shown(self) -> str:
        """``target`` with any password masked, for messages."""
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", self.text)

    @property
    def env_value(self) -> str:
        """One string a trial process turns back into this storage (:func:`resolve_storage`)."""
        return f"journal:{self.target}" if self.kind == "journal" else self.target


def _expand(text: str, what: str) -> str:
    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in os.environ:
            raise UserError(
                f"The {what} {text} uses ${{{name}}}, which is not set in the environment; "
                f"export {name} first."
            )
        return os.environ[name]

    return _ENV_VAR.sub(replace, text)


def resolve_storage(text: str | None, output_root: str) -> StorageRef:
    """The storage named by ``text`` (see the module docstring) for a sweep in ``output_root``."""
    text = (text or "sqlite").strip()
    if text == "sqlite":
        path = os.path.join(os.path.abspath(output_root), "study.db")
        return StorageRef("rdb", f"sqlite:///{path}", f"sqlite:///{path}")
    if text == "journal" or text.startswith("journal:"):
        raw = text[len("journal:") :] if text != "journal" else ""
        path = _expand(raw, "study storage") if raw else os.path.join(output_root, "study.journal")
        path = os.path.abspath(os.path.expanduser(path))
        return StorageRef("journal", f"journal:{path}", path)
    if "://" not in text:
        raise UserError(
            f"Study storage {text!r} is not sqlite, journal[:PATH] or a database URL such as "
            "postgresql://user@host/db; fix study.storage or --storage."
        )
    url = _expand(text, "study storage")
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = "sqlite:///" + os.path.abspath(url[len("sqlite:///") :])  # workers may cd elsewhere
    return StorageRef("rdb", text if "$" in text else url, url)


def storage_from_env_value(value: str) -> StorageRef:
    """The inverse of :attr:`StorageRef.env_value` (no ``${VAR}`` expansion: it is done)."""
    if value.startswith("journal:"):
        return StorageRef("journal", value, value[len("journal:") :])
    return StorageRef("rdb", value, value)


def open_storage(ref: StorageRef) -> Any:
    """An Optuna storage object for ``ref``; unreachable databases fail in one sentence."""
    optuna = require_optuna()
    if ref.kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        os.makedirs(os.path.dirname(ref.target), exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(ref.target))
    if ref.target.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(ref.target[len("sqlite:///") :]) or ".", exist_ok=True)
        kwargs: dict[str, Any] = {"connect_args": {"timeout": 120}}  # wait out other writers
    else:
        kwargs = {"pool_pre_ping": True}
    try:
        storage = optuna.storages.RDBStorage(ref.target, engine_kwargs=kwargs)
    except ImportError as err:  # the database driver, e.g. psycopg
        missing = f" ({err.name})" if err.name else ""
        raise UserError(
            f"The study storage {ref.shown} needs a database driver that is not installed"
            f"{missing}; install it (PostgreSQL: pip install 'psycopg[binary]' for "
            "postgresql+psycopg:// URLs, psycopg2-binary for postgresql+psycopg2://; MySQL: "
            "pip install pymysql)."
        ) from None
    except Exception as err:  # sqlalchemy errors: bad URL, server down, wrong password
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"Cannot open the study storage {ref.shown} ({first}); check the URL and that the "
            "database server is up."
        ) from None
    if ref.target.startswith("sqlite:///"):
        _serialise_sqlite(storage.engine)
    return storage


def _serialise_sqlite(engine: Any) -> None:
    """Make every SQLite transaction take the write lock when it begins (``BEGIN IMMEDIATE``).

    Python's sqlite3 driver runs a ``SELECT`` outside any transaction and opens one only at the
    first write, so two processes can both read a trial as WAITING and both switch it to
    RUNNING (Optuna's ``SELECT ... FOR UPDATE`` is a no-op on SQLite): a trial would run twice.
    With the lock taken at ``BEGIN``, read-then-write is atomic across processes; others wait
    for it (the ``timeout`` connect argument).
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy, not the driver, begins

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the listeners are dropped


def _encode(value: Any) -> Any:
    """Optuna choices are None/bool/int/float/str; lists (``[2, 3, 4]``) become JSON text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value)


def search_space(spec: SweepSpec) -> dict[str, Any]:
    """Optuna distributions of the spec's parameters (grid lists become categorical)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    space: dict[str, Any] = {}
    for key, value in spec.parameters.items():
        if spec.method == "grid":
            space[key] = CategoricalDistribution(_unique([_encode(v) for v in value]))
            continue
        ((kind, args),) = value.items()
        if kind == "choice":
            space[key] = CategoricalDistribution(_unique([_encode(v) for v in args]))
        elif kind == "randint":
            space[key] = IntDistribution(int(args[0]), int(args[1]))
        else:
            space[key] = FloatDistribution(args[0], args[1], log=kind == "loguniform")
    return space


def _unique(values: list) -> list:
    out: list = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def encode_params(spec: SweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    """detlab parameter values -> Optuna parameter values."""
    return {k: _encode(v) for k, v in params.items()}


def decode_params(spec: SweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    """Optuna parameter values -> detlab values (JSON text of a list choice back to the list)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        choices = spec.parameters.get(key)
        if isinstance(choices, dict):
            choices = choices.get("choice")
        if isinstance(choices, list):
            value = next((c for c in choices if _encode(c) == value), value)
        out[key] = value
    return out


_SAMPLERS = {"grid": "RandomSampler", "random": "RandomSampler", "tpe": "TPESampler"}


def build_sampler(spec: SweepSpec, seed_offset: int = 0) -> Any:
    """The sampler of ``spec.method`` seeded with ``seed + seed_offset`` (one offset per worker,
    so parallel workers do not propose the same point). Grid and random trials are planned
    and enqueued, so their sampler never draws."""
    optuna = require_optuna()
    seed = spec.seed + seed_offset
    options = dict(spec.study.sampler_options) if spec.study else {}
    if spec.method == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise UserError(
                f"method: cmaes needs the cmaes package; install it with {INSTALL_HINT}."
            ) from None
        cls = optuna.samplers.CmaEsSampler
    else:
        cls = getattr(optuna.samplers, _SAMPLERS[spec.method])
        if spec.method == "tpe":
            options.setdefault("constant_liar", True)  # running trials count while in flight
    allowed = [p for p in inspect.signature(cls).parameters if p not in ("self", "seed")]
    for key in options:
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            extra = f"; did you mean {hint[0]}?" if hint else "."
            raise UserError(f"Sweep spec {spec.path}: {cls.__name__} has no option {key!r}{extra}")
    try:
        return cls(seed=seed, **options)
    except (TypeError, ValueError) as err:
        raise UserError(f"Sweep spec {spec.path}: sampler_options rejected ({err}).") from None


def resolve_pruner(spec: SweepSpec) -> dict[str, Any]:
    """The spec's pruner with its resources in iterations filled in from the trial config:
    ``min_resource`` = ``TEST.EVAL_PERIOD`` (the first evaluation), Hyperband's
    ``max_resource`` = ``SOLVER.MAX_ITER``. Pruning needs periodic evaluation."""
    pruner = dict(spec.study.pruner if spec.study else {"type": "none"})
    if pruner["type"] == "none":
        return pruner
    from detlab.config import load_config
    from detlab.sweep.trials import override_tokens

    cfg = load_config(spec.base_config, override_tokens(spec.fixed))
    period, max_iter = int(cfg.TEST.EVAL_PERIOD), int(cfg.SOLVER.MAX_ITER)
    if period <= 0 or not len(cfg.DATASETS.TEST):
        raise UserError(
            f"Sweep spec {spec.path}: the {pruner['type']} pruner acts at periodic evaluations; "
            "set DATASETS.TEST and TEST.EVAL_PERIOD > 0 (e.g. fixed: {TEST.EVAL_PERIOD: 500})."
        )
    if pruner["type"] in ("asha", "hyperband") and pruner.get("min_resource") is None:
        pruner["min_resource"] = period
    if pruner["type"] == "hyperband" and pruner.get("max_resource") is None:
        pruner["max_resource"] = max_iter
    return pruner


def build_pruner(resolved: dict[str, Any]) -> Any:
    """An Optuna pruner from :func:`resolve_pruner`'s dict (steps are iterations done)."""
    optuna = require_optuna()
    options = {k: v for k, v in resolved.items() if k != "type"}
    kind = resolved["type"]
    if kind == "median":
        return optuna.pruners.MedianPruner(**options)
    if kind == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(**options)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(**options)
    return optuna.pruners.NopPruner()


def _directions(spec: SweepSpec) -> list[str]:
    return ["maximize" if m == "max" else "minimize" for m in spec.modes]


def _settings_fingerprint(spec: SweepSpec) -> dict[str, Any]:
    """What a study is tied to: changing any of it needs a new study."""
    return {
        "detlab_base_config": spec.base_config,
        "detlab_fixed": json.loads(json.dumps(spec.fixed, sort_keys=True, default=str)),
        "detlab_method": spec.method,
        "detlab_metrics": list(spec.metrics),
        "detlab_parameters": json.loads(json.dumps(spec.parameters, sort_keys=True, default=str)),
    }


def open_study(
    spec: SweepSpec,
    ref: StorageRef,
    name: str,
    *,
    create: bool = True,
    seed_offset: int = 0,
    pruner: Any = None,
    storage: Any = None,
) -> Any:
    """Create or load the study ``name`` in ``ref`` and check it belongs to this spec.

    A study keeps its base config, fixed overrides, method, metrics and parameter space (Optuna
    ties each parameter to one distribution): a run with other ones is refused in one sentence
    (start a new study with ``--study-name`` or another root). ``num_trials`` may grow.
    ``storage`` is an already opened storage of ``ref``.
    """
    optuna = require_optuna()
    storage = storage if storage is not None else open_storage(ref)
    sampler = build_sampler(spec, seed_offset)
    try:
        if create:
            study = optuna.create_study(
                storage=storage,
                study_name=name,
                directions=_directions(spec),
                sampler=sampler,
                pruner=pruner,
                load_if_exists=True,
            )
        else:
            study = optuna.load_study(
                study_name=name, storage=storage, sampler=sampler, pruner=pruner
            )
    except KeyError:
        raise UserError(
            f"There is no study {name!r} in {ref.shown}; run the sweep first or check --study-name."
        ) from None
    want = [d.upper() for d in _directions(spec)]
    have = [d.name for d in study.directions]
    if have != want:
        raise UserError(
            f"Study {name!r} in {ref.shown} optimises {have} but the spec asks for {want}; use "
            "another --study-name for other metrics or modes."
        )
    attrs = study.user_attrs
    fingerprint = _settings_fingerprint(spec)
    if "detlab_method" not in attrs:
        if create:
            for key, value in fingerprint.items():
                study.set_user_attr(key, value)
            study.set_user_attr("detlab_spec", spec.path)
        return study
    changed = [k[len("detlab_") :] for k, v in fingerprint.items() if attrs.get(k) != v]
    if changed:
        raise UserError(
            f"Study {name!r} in {ref.shown} was made with another {', '.join(changed)}; a study "
            "keeps its settings, so use another --study-name or output_root for this one."
        )
    return study
