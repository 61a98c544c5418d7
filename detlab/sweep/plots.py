"""Figures of a sweep study, as PNG (matplotlib) and interactive HTML (plotly), in the sweep root.

* ``optimization_history``: each finished trial's metric and the best so far;
* ``param_importances`` (+ ``.json``): how much each parameter explains the metric, from the
  finished trials (at least 2). fANOVA when scikit-learn is installed (its random forest),
  otherwise PED-ANOVA (Optuna's default, no extra dependency); the evaluator is named in the
  title and the JSON;
* ``parallel_coordinate``: every finished trial as a line through its parameter values;
* ``intermediate_values``: the metric at each evaluation, per trial (pruned ones end early);
* ``pareto_front``: for several metrics (then the first three figures are drawn per metric,
  ``<figure>_<metric>``).

A figure whose data is not there yet (no finished trial, one parameter value) is skipped and
the reason returned; drawing never stops a sweep. HTML files share one ``plotly.min.js``
written next to them, so they open without a network.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable
from typing import Any

from detlab.sweep.spec import SweepSpec, split_metric

__all__ = ["importance_evaluator", "write_plots"]

logger = logging.getLogger("detlab")


def importance_evaluator() -> tuple[str, Any]:
    """``("fANOVA", evaluator)`` when scikit-learn is importable, else ``("PED-ANOVA", ...)``."""
    import optuna

    try:
        import sklearn.ensemble  # noqa: F401
    except ImportError:
        return "PED-ANOVA", optuna.importance.PedAnovaImportanceEvaluator()
    return "fANOVA", optuna.importance.FanovaImportanceEvaluator(seed=0)


def _pyplot() -> Any:
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # no display needed; a caller's own backend is kept otherwise
    import matplotlib.pyplot as plt

    return plt


def _safe(metric: str) -> str:
    return metric.replace("/", "-")


def write_plots(study: Any, spec: SweepSpec, root: str | None = None) -> dict[str, str]:
    """Draw the study's figures into ``root`` (default: the sweep root).

    Returns ``{figure: "written"}`` or ``{figure: "skipped: <reason>"}`` for each figure.
    """
    import optuna
    from optuna.trial import TrialState

    root = root or spec.output_root
    os.makedirs(root, exist_ok=True)
    plt = _pyplot()
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    varied = [
        k for k in spec.parameters if len({json.dumps(t.params.get(k)) for t in complete}) > 1
    ]
    results: dict[str, str] = {}

    def save(name: str, draw: Callable[[Any], Any], reason: str | None = None) -> None:
        if reason:
            results[name] = f"skipped: {reason}"
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = draw(optuna.visualization.matplotlib)
                fig = ax.ravel()[0].figure if hasattr(ax, "ravel") else ax.figure
                fig.savefig(os.path.join(root, f"{name}.png"), dpi=110, bbox_inches="tight")
                plt.close(fig)
                draw(optuna.visualization).write_html(
                    os.path.join(root, f"{name}.html"), include_plotlyjs="directory"
                )
        except Exception as err:  # a figure is a nicety; say why and go on
            results[name] = f"skipped: {type(err).__name__}: {err}"
            logger.warning(f"Sweep plot {name} not drawn ({type(err).__name__}: {err}).")
            return
        results[name] = "written"

    multi = len(spec.metrics) > 1
    which, evaluator = importance_evaluator()
    none = "no finished trial yet" if not complete else None
    for i, metric in enumerate(spec.metrics):
        suffix = f"_{_safe(metric)}" if multi else ""
        kw: dict[str, Any] = {"target_name": metric}
        if multi:
            kw["target"] = lambda t, i=i: t.values[i]

        def history(v: Any, kw: dict = kw) -> Any:
            return v.plot_optimization_history(study, **kw)

        def parallel(v: Any, kw: dict = kw) -> Any:
            return v.plot_parallel_coordinate(study, **kw)

        def importance(v: Any, kw: dict = kw, metric: str = metric) -> Any:
            fig = v.plot_param_importances(study, evaluator=evaluator, params=varied, **kw)
            title = f"Parameter importances for {split_metric(metric)[1]} ({which})"
            if hasattr(fig, "set_title"):
                fig.set_title(title, loc="left")  # replaces Optuna's own (left) title
            else:
                fig.update_layout(title=title)
            return fig

        few = none
        if few is None and len(complete) < 2:
            few = "parameter importance needs at least 2 finished trials"
        if few is None and not varied:
            few = "no parameter took two values in finished trials"
        if few is None:
            values = _importances(study, evaluator, varied, kw)
            if values is None:
                few = f"{which} gave no importances"
            else:
                path = os.path.join(root, f"param_importances{suffix}.json")
                with open(path, "w", encoding="utf-8") as f:
                    json.dump({"evaluator": which, "metric": metric, "importances": values}, f)
        save(f"optimization_history{suffix}", history, none)
        save(f"param_importances{suffix}", importance, few)
        save(f"parallel_coordinate{suffix}", parallel, none)
    if multi:
        names = list(spec.metrics)
        reason = none or (None if len(names) <= 3 else "a Pareto front is drawn for 2 or 3 metrics")
        save("pareto_front", lambda v: v.plot_pareto_front(study, target_names=names), reason)
    else:
        steps = any(t.intermediate_values for t in study.get_trials(deepcopy=False))
        reason = None if steps else "no trial reported an evaluation to the study"
        save("intermediate_values", lambda v: v.plot_intermediate_values(study), reason)
    return results


def _importances(study: Any, evaluator: Any, params: list[str], kw: dict) -> dict | None:
    import optuna

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = optuna.importance.get_param_importances(
                study, evaluator=evaluator, params=params, target=kw.get("target")
            )
    except Exception as err:
        logger.warning(f"Parameter importances not computed ({type(err).__name__}: {err}).")
        return None
    return {k: float(v) for k, v in values.items()}
