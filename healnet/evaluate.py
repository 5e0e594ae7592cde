"""Cross-validation results: per-fold and summary metrics, missing-modality scenarios, and
Kaplan–Meier curves by predicted risk.

Inputs are the per-fold outputs of training, ``.../models/<model>/fold<k>/``:

* ``metrics.json``: at least ``fold`` and ``bin_edges`` (optional: ``best_epoch``);
* ``predictions.tsv``: case_id, fold, risk, time, event (optional: ``surv_0..surv_{K-1}``,
  the predicted survival at the end of each bin, for the integrated Brier score);
* ``missing.tsv`` (optional): case_id, fold, scenario, risk, time, event (other columns are
  ignored); the scenarios as training names them (``healnet.train``: ``full``, ``no_<modality>``,
  ``mixed``).

The model and fold of each file are read from its path, so the tables hold whatever models'
folds are given.  Metrics are recomputed from the predictions (see :mod:`healnet.metrics`); Uno's
c-index and the integrated Brier score need the fold's training cases (``splits``) and their
survival (``survival``), else they are NaN with a reason.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import defaultdict

import numpy as np
import pandas as pd

from preprocessing.io import atomic_path

from .data import Cohort, load_bags
from .metrics import fold_metrics, harrell

log = logging.getLogger(__name__)

METRICS = ("harrell", "uno", "ibs")
_FOLD_DIR = re.compile(r"(?:^|/)models/([^/]+)/fold(\d+)/[^/]+$")


def load_cohort(clinical: str | os.PathLike, feature_stores: list[str], omics: dict[str, str | os.PathLike]) -> Cohort:
    """Cases with a valid survival time and at least one usable modality, with their data."""
    surv = pd.read_parquet(clinical).set_index("case_id")
    surv = surv[surv["status"] == "ok"]
    bags, positions, _ = load_bags(feature_stores)
    tables = {m: pd.read_parquet(p) for m, p in omics.items()}
    usable = surv.index.isin(list(bags)) | np.any([surv.index.isin(t.index) for t in tables.values()] or [False], axis=0)
    return Cohort(survival=surv.loc[usable, ["time", "event"]], bags=bags, positions=positions, omics=tables)


def model_fold(path: str | os.PathLike) -> tuple[str, int]:
    """(model, fold) of a file ``.../models/<model>/fold<k>/<name>``."""
    match = _FOLD_DIR.search(str(path).replace(os.sep, "/"))
    if match is None:
        raise ValueError(f"{path}: not inside a models/<model>/fold<k>/ folder")
    return match.group(1), int(match.group(2))


def _by_model_fold(paths) -> dict[tuple[str, int], str]:
    out = {}
    for p in paths:
        key = model_fold(p)
        if key in out:
            raise ValueError(f"two files for model {key[0]} fold {key[1]}: {out[key]} and {p}")
        out[key] = str(p)
    return out


def _train_survival(survival: pd.DataFrame | None, splits: list[dict] | None, fold: int):
    if survival is None or splits is None or fold >= len(splits):
        return None, None
    ids = [c for c in splits[fold]["train"] if c in survival.index]
    return survival.loc[ids, "time"].to_numpy(float), survival.loc[ids, "event"].to_numpy(int)


def metrics_table(fold_metrics_files, fold_predictions, *, survival: pd.DataFrame | None = None,
                  splits: list[dict] | None = None) -> pd.DataFrame:
    """One row per model and fold: harrell, uno, ibs (and ``*_reason`` where NaN), n_test, events,
    best_epoch; ``c_index`` repeats ``harrell`` for older readers."""
    meta = _by_model_fold(fold_metrics_files)
    preds = _by_model_fold(fold_predictions)
    if set(meta) != set(preds):
        raise ValueError(f"metrics.json and predictions.tsv do not pair up: only metrics for "
                         f"{sorted(set(meta) - set(preds))}, only predictions for {sorted(set(preds) - set(meta))}")
    rows = []
    for (model, fold), path in sorted(meta.items()):
        with open(path) as f:
            info = json.load(f)
        predictions = pd.read_csv(preds[model, fold], sep="\t")
        edges = info.get("bin_edges")
        edges = np.array([float(e) for e in edges]) if edges is not None else None
        train_time, train_event = _train_survival(survival, splits, fold)
        row = {"model": model, "fold": fold, **fold_metrics(train_time, train_event, predictions, edges),
               "best_epoch": info.get("best_epoch", -1)}
        row["c_index"] = row["harrell"]
        rows.append(row)
    columns = ["model", "fold", *METRICS, "c_index", "n_test", "events", "best_epoch", *(f"{m}_reason" for m in METRICS)]
    return pd.DataFrame(rows, columns=columns)


def summary_table(metrics: pd.DataFrame, oracle_c_index: float | None = None,
                  logrank: dict[str, float] | None = None) -> pd.DataFrame:
    """Per model: mean and standard deviation (ddof 1) over folds of each metric (NaN folds left
    out; ``<metric>_folds`` counts the folds that have it); ``c_index_mean``/``c_index_std``
    repeat Harrell's; the oracle c-index and the KM log-rank p when given."""
    rows = []
    for model, group in metrics.groupby("model", sort=True):
        row = {"model": model, "n_folds": len(group)}
        for m in METRICS:
            values = group[m].dropna()
            row[f"{m}_mean"] = values.mean() if len(values) else float("nan")
            row[f"{m}_std"] = values.std(ddof=1) if len(values) > 1 else float("nan")
            row[f"{m}_folds"] = len(values)
        row["c_index_mean"], row["c_index_std"] = row["harrell_mean"], row["harrell_std"]
        if logrank is not None:
            row["logrank_p"] = logrank.get(model, float("nan"))
        if oracle_c_index is not None:
            row["oracle_c_index"] = oracle_c_index
        rows.append(row)
    return pd.DataFrame(rows)


def missing_table(fold_missing) -> pd.DataFrame:
    """Harrell's c-index per model and missing-modality scenario, mean ± std over folds, from the
    per-fold ``missing.tsv`` files.  Columns: model, scenario, harrell_mean, harrell_std, n_folds
    (folds where it is defined), n_cases; the complete-data scenario (``full`` or ``all``) first,
    then the single-modality removals (``no_<m>`` / ``no-<m>``), then the rest (``mixed``...)."""
    rows = []
    for (model, fold), path in sorted(_by_model_fold(fold_missing).items()):
        table = pd.read_csv(path, sep="\t")
        missing = {"scenario", "risk", "time", "event"} - set(table.columns)
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        for scenario, group in table.groupby("scenario", sort=False):
            m = harrell(group["time"], group["event"], group["risk"])
            rows.append({"model": model, "fold": fold, "scenario": scenario, "harrell": m.value, "n": len(group)})
    columns = ["model", "scenario", "harrell_mean", "harrell_std", "n_folds", "n_cases"]
    if not rows:
        return pd.DataFrame(columns=columns)
    per_fold = pd.DataFrame(rows)
    out = (per_fold.groupby(["model", "scenario"], sort=False)
           .agg(harrell_mean=("harrell", "mean"), harrell_std=("harrell", "std"), n_folds=("harrell", "count"),
                n_cases=("n", "sum")).reset_index())

    def order(s: str) -> tuple[int, str]:
        return (0 if s in ("all", "full") else 1 if s.startswith(("no-", "no_")) else 2, s)

    out["_o"] = out["scenario"].map(order)
    return out.sort_values(["model", "_o"]).drop(columns="_o").reset_index(drop=True)[columns]


# ---------------------------------------------------------------------------------------------
# Kaplan–Meier


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


# ---------------------------------------------------------------------------------------------


def _write_tsv(table: pd.DataFrame, path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.4f")


def read_survival(clinical: str | os.PathLike) -> pd.DataFrame:
    """time and event of the cases with status ok, indexed by case_id, from the clinical parquet."""
    table = pd.read_parquet(clinical)
    if "status" in table.columns:
        table = table[table["status"] == "ok"]
    return table.set_index("case_id")[["time", "event"]]


def evaluate_cohort(fold_metrics_files, fold_predictions, *, metrics_out, summary_out, km_out,
                    missing_out=None, fold_missing=(), survival: pd.DataFrame | None = None,
                    splits: list[dict] | None = None, oracle: str | os.PathLike | None = None,
                    title: str = "") -> pd.DataFrame:
    """Write ``metrics.tsv`` (per model and fold), ``metrics_summary.tsv`` (mean ± std per model,
    with the KM log-rank p and the oracle c-index when the cohort has one), the KM figure (one
    panel per model) and, with ``missing_out``, ``missing_modalities.tsv``; returns the summary."""
    metrics = metrics_table(fold_metrics_files, fold_predictions, survival=survival, splits=splits)
    if metrics.empty:
        raise ValueError("evaluate_cohort: no fold results given")
    for row in metrics.itertuples():
        for m in METRICS:
            reason = getattr(row, f"{m}_reason")
            if reason:
                log.info("%s fold %d: %s undefined (%s)", row.model, row.fold, m, reason)
    by_model = defaultdict(list)
    for (model, _), path in sorted(_by_model_fold(fold_predictions).items()):
        by_model[model].append(pd.read_csv(path, sep="\t"))
    predictions = {m: pd.concat(tables, ignore_index=True) for m, tables in by_model.items()}
    p_values = kaplan_meier_plot(predictions, km_out, title=title)
    oracle_c = None
    if oracle and os.path.exists(oracle):
        with open(oracle) as f:
            oracle_c = json.load(f)["c_index"]
    summary = summary_table(metrics, oracle_c, p_values)
    _write_tsv(metrics, metrics_out)
    _write_tsv(summary, summary_out)
    if missing_out is not None:
        _write_tsv(missing_table(fold_missing), missing_out)
    return summary
