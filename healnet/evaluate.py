"""Cross-validation results: per-fold and summary metrics, and Kaplan–Meier curves by predicted risk."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from preprocessing.io import atomic_path

from .data import Cohort, load_bags


def load_cohort(clinical: str | os.PathLike, feature_stores: list[str], omics: dict[str, str | os.PathLike]) -> Cohort:
    """Cases with a valid survival time and at least one usable modality, with their data."""
    surv = pd.read_parquet(clinical).set_index("case_id")
    surv = surv[surv["status"] == "ok"]
    bags, positions, _ = load_bags(feature_stores)
    tables = {m: pd.read_parquet(p) for m, p in omics.items()}
    usable = surv.index.isin(list(bags)) | np.any([surv.index.isin(t.index) for t in tables.values()] or [False], axis=0)
    return Cohort(survival=surv.loc[usable, ["time", "event"]], bags=bags, positions=positions, omics=tables)


def metrics_table(fold_metrics: dict[str, list[str | os.PathLike]]) -> pd.DataFrame:
    """Per model and fold: c-index and counts, from each fold's ``metrics.json``."""
    rows = []
    for model, paths in fold_metrics.items():
        for path in paths:
            with open(path) as f:
                m = json.load(f)
            rows.append({"model": model, "fold": m["fold"], "c_index": m["c_index"], "n_test": m["n_test"],
                         "n_test_events": m["n_test_events"], "best_epoch": m["best_epoch"]})
    return pd.DataFrame(rows).sort_values(["model", "fold"]).reset_index(drop=True)


def summary_table(metrics: pd.DataFrame, oracle_c_index: float | None = None) -> pd.DataFrame:
    """Mean ± std of the c-index over folds per model (and the oracle's, when the cohort has one)."""
    summary = metrics.groupby("model")["c_index"].agg(["mean", "std", "count"]).reset_index()
    summary = summary.rename(columns={"mean": "c_index_mean", "std": "c_index_std", "count": "n_folds"})
    if oracle_c_index is not None:
        summary["oracle_c_index"] = oracle_c_index
    return summary


def kaplan_meier_plot(predictions: pd.DataFrame, out_png: str | os.PathLike, title: str = "") -> float:
    """KM curves of test cases split at the median predicted risk; returns the log-rank p-value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sksurv.compare import compare_survival
    from sksurv.nonparametric import kaplan_meier_estimator

    high = predictions["risk"] > predictions["risk"].median()
    y = np.array(list(zip(predictions["event"].astype(bool), predictions["time"].astype(float))),
                 dtype=[("event", bool), ("time", float)])
    p_value = float(compare_survival(y, high.to_numpy())[1]) if high.any() and (~high).any() else float("nan")
    fig, ax = plt.subplots(figsize=(5, 4))
    for group, label, colour in ((~high, "low risk", "tab:blue"), (high, "high risk", "tab:red")):
        if not group.any():  # all risks tied: one group only
            continue
        t, s = kaplan_meier_estimator(y["event"][group.to_numpy()], y["time"][group.to_numpy()])
        ax.step(t, s, where="post", label=f"{label} (n={int(group.sum())})", color=colour)
    ax.set_xlabel("days")
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{title} log-rank p = {p_value:.3g}".strip())
    ax.legend()
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return p_value


def evaluate_cohort(fold_metrics: list[str], fold_predictions: list[str], models: list[str],
                    metrics_out, summary_out, km_out, oracle: str | os.PathLike | None = None,
                    title: str = "") -> pd.DataFrame:
    """Write ``metrics.tsv`` (per model and fold), its summary and the KM plot of the first model."""
    def of(model: str, paths: list[str]) -> list[str]:
        return [p for p in paths if f"/models/{model}/" in p.replace(os.sep, "/")]

    metrics = metrics_table({m: of(m, fold_metrics) for m in models})
    oracle_c = None
    if oracle and os.path.exists(oracle):
        with open(oracle) as f:
            oracle_c = json.load(f)["c_index"]
    summary = summary_table(metrics, oracle_c)
    for table, path in ((metrics, metrics_out), (summary, summary_out)):
        with atomic_path(path) as tmp:
            table.to_csv(tmp, sep="\t", index=False, float_format="%.4f")
    predictions = pd.concat(pd.read_csv(p, sep="\t") for p in of(models[0], fold_predictions))
    kaplan_meier_plot(predictions, km_out, title=f"{title} {models[0]}:".strip())
    return summary
