"""Missing-modality curves: how a model's c-index falls as a modality goes missing from more cases.

The paper's claim is that HEALNet skips a missing modality without the noise that imputation adds.
Each fold's ``missing.tsv`` (:func:`healnet.missing.curve_scenarios`) holds the test-case risks with
each modality, and each pair, removed from a fraction of the test cases (test time only: the model
was trained on complete data).  Here they become one row per model, removal set and fraction: the
mean Harrell c-index over folds with a 95 % t-interval over folds, and a figure with one panel per
removal set and one line per model.  Fraction 0 is the complete-data scenario (``full``).
:func:`trained_curves` measures the same with the missingness in training as well (mode
``trained``: one model trained per fraction), the costlier question of how a model learns from
incomplete cases.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
from scipy import stats

from preprocessing.io import atomic_path

from .metrics import harrell

COLUMNS = ["model", "mode", "removed", "fraction", "harrell_mean", "harrell_std", "ci_low", "ci_high", "n_folds", "n_cases"]


def curves_table(fold_missing: dict[tuple[str, int], str | os.PathLike]) -> pd.DataFrame:
    """``fold_missing``: (model, fold) -> that fold's ``missing.tsv``.  Files written before the
    curves existed (no ``fraction`` column) and models with one modality (no curve) add no rows."""
    rows = []
    for (model, fold), path in sorted(fold_missing.items()):
        table = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])
        if "fraction" not in table.columns:
            continue
        curves = table[table["fraction"].notna()]
        full = table[table["scenario"] == "full"]
        for removed, by_set in curves.groupby("removed", sort=False):
            for fraction, group in [(0.0, full), *by_set.groupby("fraction")]:
                if len(group):
                    c = harrell(group["time"], group["event"], group["risk"]).value
                    rows.append({"model": model, "fold": fold, "removed": removed, "fraction": float(fraction),
                                 "harrell": c, "n": len(group)})
    return summarise(pd.DataFrame(rows), mode="test")


def summarise(per_fold: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Per model, removal set and fraction, from one row per fold (model, fold, removed, fraction,
    harrell, n): the mean, std and 95 % t-interval over folds."""
    if per_fold.empty:
        return pd.DataFrame(columns=COLUMNS)
    out = (per_fold.groupby(["model", "removed", "fraction"], sort=True)
           .agg(harrell_mean=("harrell", "mean"), harrell_std=("harrell", "std"), n_folds=("harrell", "count"),
                n_cases=("n", "sum")).reset_index())
    half = [stats.t.ppf(0.975, k - 1) * s / math.sqrt(k) if k > 1 else np.nan
            for k, s in zip(out["n_folds"], out["harrell_std"])]
    out["ci_low"], out["ci_high"] = out["harrell_mean"] - half, out["harrell_mean"] + half
    out["mode"] = mode
    return out[COLUMNS]


def trained_curves(cohort, splits: list[dict], cfg, *, models: list[str], fractions: list[float]) -> pd.DataFrame:
    """The curves with the missingness in training too: per model, fold, removal set and fraction, a
    model trained with that share of its training cases missing the set (``cfg.train_missing``) and
    scored on test cases missing it in the same share; fraction 0 trains on complete data.  Costly:
    models × folds × sets × (fractions + 1) trainings.  Models of one modality have no curve."""
    from dataclasses import replace

    from .missing import removal_sets
    from .train import train_fold
    from .zoo import model_modalities

    rows = []
    for model in models:
        modalities = model_modalities(model, cfg.modalities)
        for k, split in enumerate(splits):
            full = None
            for removed in ("+".join(r) for r in removal_sets(modalities)):
                for fraction in [0.0, *fractions]:
                    if fraction == 0 and full is not None:
                        metrics = full
                    else:
                        setting = {"removed": removed, "fraction": fraction} if fraction else None
                        metrics = train_fold(cohort, split, replace(cfg, architecture=model, train_missing=setting),
                                             None, fold=k)
                        full = metrics if fraction == 0 else full
                    rows.append({"model": model, "fold": k, "removed": removed, "fraction": float(fraction),
                                 "harrell": metrics["c_index"], "n": metrics["n_test"]})
    return summarise(pd.DataFrame(rows), mode="trained")


def curves_plot(table: pd.DataFrame, out_png: str | os.PathLike, title: str = "") -> None:
    """One panel per removal set: c-index against the fraction of test cases missing it, one line per
    model with its 95 % band over folds; chance (0.5) dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(dict.fromkeys(zip(table["mode"], table["removed"]))) or [("", "(no curve: every model has one modality)")]
    cols = min(len(sets), 3)
    fig, axes = plt.subplots(math.ceil(len(sets) / cols), cols, figsize=(4.6 * cols, 3.6 * math.ceil(len(sets) / cols)),
                             squeeze=False)
    for ax, (mode, removed) in zip(axes.flat, sets):
        for model, line in table[(table["mode"] == mode) & (table["removed"] == removed)].groupby("model"):
            ax.plot(100 * line["fraction"], line["harrell_mean"], marker="o", ms=3, label=model)
            ax.fill_between(100 * line["fraction"], line["ci_low"], line["ci_high"], alpha=0.15)
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        where = "test cases" if mode == "test" else "training and test cases"
        ax.set(title=f"{removed} missing ({mode})", xlabel=f"{where} missing it (%)", ylabel="Harrell's c-index")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(sets):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
