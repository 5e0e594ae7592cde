"""Kaplan–Meier curves by predicted risk, and their log-rank p-values.

Split out of :mod:`healnet.evaluate` (which calls :func:`kaplan_meier_plot` for the report's KM
figure and the summary's ``logrank_p``) so that module holds the tables and this one the figure:
test cases are split at the median predicted risk of their own fold (:func:`risk_groups`), one
panel per model.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from preprocessing.io import atomic_path


def risk_groups(predictions: pd.DataFrame) -> np.ndarray:
    """High-risk flag per case: risk above the MEDIAN OF ITS OWN FOLD's test risks (each fold's
    model has its own risk scale), or of all cases when there is no ``fold`` column."""
    if "fold" not in predictions.columns:
        return (predictions["risk"] > predictions["risk"].median()).to_numpy()
    median = predictions.groupby("fold")["risk"].transform("median")
    return (predictions["risk"] > median).to_numpy()


def _survival_y(predictions: pd.DataFrame):
    return np.array(list(zip(predictions["event"].astype(bool), predictions["time"].astype(float))),
                    dtype=[("event", bool), ("time", float)])


def logrank_p(predictions: pd.DataFrame) -> float:
    """Log-rank p-value (scikit-survival ``compare_survival``) of high vs low predicted risk; NaN
    when one group is empty (all risks tied) or there is no event."""
    from sksurv.compare import compare_survival

    high = risk_groups(predictions)
    y = _survival_y(predictions)
    if not (high.any() and (~high).any() and y["event"].any()):
        return float("nan")
    return float(compare_survival(y, high)[1])


def _km_panel(ax, predictions: pd.DataFrame, title: str) -> float:
    from sksurv.nonparametric import kaplan_meier_estimator

    high, y = risk_groups(predictions), _survival_y(predictions)
    p_value = logrank_p(predictions)
    for group, label, colour in ((~high, "low risk", "tab:blue"), (high, "high risk", "tab:red")):
        if not group.any():  # all risks tied: one group only
            continue
        t, s = kaplan_meier_estimator(y["event"][group], y["time"][group])
        ax.step(np.r_[0.0, t], np.r_[1.0, s], where="post", label=f"{label} (n={int(group.sum())})", color=colour)
    ax.set_xlabel("days")
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{title} log-rank p = {p_value:.3g}".strip())
    ax.legend(loc="lower left")
    return p_value


def kaplan_meier_plot(predictions, out_png: str | os.PathLike, title: str = ""):
    """KM curves of test cases split at the per-fold median predicted risk (:func:`risk_groups`).

    ``predictions`` is one table (returns its log-rank p) or a dict model -> table (one panel per
    model, returns a dict of p-values)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    single = isinstance(predictions, pd.DataFrame)
    tables = {title: predictions} if single else dict(predictions)
    if not tables:
        raise ValueError("kaplan_meier_plot: no predictions")
    n = len(tables)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.8 * rows), squeeze=False)
    p_values = {}
    for ax, (name, table) in zip(axes.flat, tables.items()):
        p_values[name] = _km_panel(ax, table, f"{name}:" if (name and not single) else name)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if not single and title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return p_values[title] if single else p_values
