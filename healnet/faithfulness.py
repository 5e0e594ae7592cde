"""Does a model's attention point at what drives its prediction, and at what is truly there?

Attention weights are not explanations by construction: a token may be attended and still change
nothing.  So, for the trained model of each cross-validation fold (its ``model.pt`` rebuilt on its
own test cases), this module measures:

* **Faithfulness (any cohort): deletion curves.**  Per test case and modality, remove the top
  k % of its units (WSI patches; omics genes), ranked by a score, and record the change in
  predicted risk ``|risk(removed) - risk(full)|``.  Scores: ``attention`` (the mean over layers,
  heads and latents of the modality's cross-attention, as ``attention.npz`` holds it); ``ig``,
  Integrated Gradients of the risk (a post-hoc attribution of the same model; per unit, summed
  over its channels), oriented along the case's own prediction: removing a unit moves the risk by
  about minus its attribution, so the units that moved this case's risk away from the baseline
  input come first (by |IG| alone, raising and lowering units would be removed together and cancel);
  and ``random`` orders (the floor).  The area under each curve (over the removed fraction,
  divided by the largest fraction: a mean ``|Δ risk|``) is ``deletion_auc``; ``deletion_auc_ratio``
  is it over random's.  A faithful score removes what matters first: its curve rises faster than
  random's.  Attention has no sign, which is part of what is measured.
* **Plausibility (the generated demo, whose truth is known):** ``tumour_auc``, the AUC of a
  score for the patches that lie on the planted tumour texture (tumour share of the patch's
  tissue >= 0.5; per case, averaged over cases with both kinds of patch), and
  ``planted_gene_mean_rank`` / ``planted_gene_auc``, where the planted signal genes fall in the
  ranking of genes by their mean score over the fold's test cases (rank 1 = top).  Scores:
  ``attention``, ``ig`` (signed: towards higher risk) and ``ig_abs`` (its magnitude).  The
  ``random`` rows of these metrics hold their chance values (0.5, and (n + 1) / 2).

Removing a unit and IG's baseline are those of :mod:`healnet.fold_model`; the attribution
primitives live in :mod:`healnet.attribution`, the planted truth in :mod:`healnet.planted_truth`.
Each fold's model is rebuilt by :func:`healnet.fold_rebuild.load_fold`, whose rebuilt risks must
match ``predictions.tsv``: a fold whose inputs changed since training is an error, not a figure.

Entry points: :func:`fold_faithfulness` (one fold directory, from Python), :func:`faithfulness_report`
(several models' folds -> ``faithfulness.tsv``, per-fold values, deletion curves and a plot), and
:func:`faithfulness_from_files` (the same from a cohort's pipeline files; the Snakemake rule).
"""
from __future__ import annotations

import logging
import os
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from preprocessing.io import atomic_path

from .attribution import deletion_auc, rank_auc, removal_order
from .fold_model import FoldModel, case_attention, case_deletion, case_ig, case_risks
from .fold_rebuild import load_fold
from .planted_truth import PlantedTruth, case_tumour_labels

log = logging.getLogger(__name__)

FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.5)  # shares of a case's units removed, most important first
METHODS = ("attention", "ig", "random")  # rankings of the deletion curves


# ---------------------------------------------------------------------------------------------
# one fold


def fold_faithfulness(fold: FoldModel | str | os.PathLike, cohort=None, *, truth: PlantedTruth | None = None,
                      patch_sizes: Mapping[str, int] | None = None, fractions: Sequence[float] = FRACTIONS,
                      ig_steps: int = 16, n_random: int = 3, max_cases: int | None = 16,
                      seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Deletion curves, IG and (with ``truth``) plausibility for one fold (a :class:`FoldModel`, or
    a fold directory rebuilt on ``cohort`` with :func:`load_fold`).

    Returns (metrics, curves).  metrics: fold, architecture, modality, method, metric, value,
    n_cases (metrics: ``deletion_auc``, ``deletion_auc_ratio``, ``tumour_auc``,
    ``planted_gene_mean_rank``, ``planted_gene_auc``, ``n_genes``, ``n_planted_genes``,
    ``rebuild_error``; see the module docstring).  curves:
    fold, architecture, modality, method, fraction, delta_risk (mean over the cases), n_cases.
    Deterministic for a fixed ``seed``."""
    fm = fold if isinstance(fold, FoldModel) else load_fold(fold, cohort, max_cases=max_cases)
    fractions = tuple(float(f) for f in fractions)
    if not fractions or any(not 0 < f <= 1 for f in fractions) or list(fractions) != sorted(fractions):
        raise ValueError(f"fractions must increase within (0, 1], got {list(fractions)}")
    cases = fm.cases[: max_cases if max_cases is not None else None]
    names = fm.modalities
    deltas: dict[tuple[int, str], list[np.ndarray]] = {}
    tumour_aucs: dict[str, list[float]] = {}
    gene_scores: dict[tuple[int, str], list[np.ndarray]] = {}
    for i, case in enumerate(cases):
        full = float(case_risks(fm, case, [case.x])[0])
        att = case_attention(fm, case)
        ig = case_ig(fm, case, ig_steps)
        for m, x in enumerate(case.x):
            if x is None or m not in ig:
                continue
            n = len(x) if fm.units_are_tokens(m) else x.shape[1]
            direction = 1.0 if ig[m].sum() >= 0 else -1.0  # where the modality moved the risk from the baseline
            scores = {"ig": direction * ig[m]}
            if m in att:
                scores = {"attention": att[m], **scores}
            rng = np.random.default_rng([seed, fm.fold, i, m])
            if n >= 2:
                orders = {k: [removal_order(v)] for k, v in scores.items()}
                orders["random"] = [rng.permutation(n) for _ in range(n_random)]
                for method, d in case_deletion(fm, case, m, orders, fractions, full).items():
                    deltas.setdefault((m, method), []).append(d)
            ranked = {"ig": ig[m], "ig_abs": np.abs(ig[m])}
            if m in att:
                ranked = {"attention": att[m], **ranked}
            if names[m] == "wsi" and truth is not None:
                labels = case_tumour_labels(case, truth, patch_sizes)
                if labels is not None:
                    for method, s in ranked.items():
                        tumour_aucs.setdefault(method, []).append(rank_auc(s, labels))
            elif names[m] != "wsi":
                for method, s in ranked.items():
                    gene_scores.setdefault((m, method), []).append(np.asarray(s, float))
    rows, curves = [], []

    def row(modality, method, metric, value, n):
        rows.append({"fold": fm.fold, "architecture": fm.architecture, "modality": modality, "method": method,
                     "metric": metric, "value": float(value), "n_cases": int(n)})

    for m, name in enumerate(names):
        aucs = {}
        for method in METHODS:
            per_case = deltas.get((m, method))
            if not per_case:
                continue
            curve = np.mean(per_case, axis=0)
            for f, d in zip(fractions, curve):
                curves.append({"fold": fm.fold, "architecture": fm.architecture, "modality": name, "method": method,
                               "fraction": f, "delta_risk": float(d), "n_cases": len(per_case)})
            aucs[method] = deletion_auc(fractions, curve)
            row(name, method, "deletion_auc", aucs[method], len(per_case))
        for method, auc in aucs.items():
            if "random" in aucs and aucs["random"] > 0:
                row(name, method, "deletion_auc_ratio", auc / aucs["random"], len(deltas[(m, method)]))
        if name == "wsi":
            scored = 0  # cases with tumour and other patches
            for method, values in tumour_aucs.items():
                ok = [v for v in values if np.isfinite(v)]
                if ok:
                    row(name, method, "tumour_auc", np.mean(ok), len(ok))
                    scored = max(scored, len(ok))
            if scored:
                row(name, "random", "tumour_auc", 0.5, scored)
        elif truth is not None and truth.genes and name in fm.features:
            genes = np.array([g.split(".")[0] for g in fm.features[name]])
            planted = np.isin(genes, list(truth.genes))
            if planted.any():
                from scipy.stats import rankdata

                n_cases = 0
                for method in ("attention", "ig", "ig_abs"):
                    per_case = gene_scores.get((m, method))
                    if not per_case:
                        continue
                    mean = np.mean(per_case, axis=0)
                    rank = rankdata(-mean)  # 1 = the highest mean score
                    n_cases = len(per_case)
                    row(name, method, "planted_gene_mean_rank", rank[planted].mean(), n_cases)
                    row(name, method, "planted_gene_auc", rank_auc(mean, planted), n_cases)
                if n_cases:
                    row(name, "random", "planted_gene_mean_rank", (len(genes) + 1) / 2, n_cases)
                    row(name, "random", "planted_gene_auc", 0.5, n_cases)
                    row(name, "-", "n_genes", len(genes), n_cases)
                    row(name, "-", "n_planted_genes", int(planted.sum()), n_cases)
    row("-", "-", "rebuild_error", fm.rebuild_error, len(cases))
    return pd.DataFrame(rows), pd.DataFrame(curves)


# ---------------------------------------------------------------------------------------------
# all folds of several models -> tables and plot


def summarise(per_fold: pd.DataFrame) -> pd.DataFrame:
    """Mean and SD over folds per (model, modality, method, metric); n_cases summed over folds."""
    columns = ["model", "modality", "method", "metric", "mean", "std", "n_folds", "n_cases"]
    if per_fold.empty:
        return pd.DataFrame(columns=columns)
    out = (per_fold.groupby(["model", "modality", "method", "metric"], sort=False)
           .agg(mean=("value", "mean"), std=("value", "std"), n_folds=("fold", "nunique"), n_cases=("n_cases", "sum"))
           .reset_index())
    return out[columns]


def plot_faithfulness(curves: pd.DataFrame, summary: pd.DataFrame, out_png: str | os.PathLike) -> None:
    """One row per model: a deletion-curve panel per modality (mean over folds, band = min-max over
    folds, AUC in the legend), then the plausibility against the planted truth where there is one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"attention": "tab:red", "ig": "tab:blue", "random": "grey", "ig_abs": "tab:purple"}
    models = list(dict.fromkeys(curves["model"])) if len(curves) else []
    plaus = summary[summary["metric"].isin(["tumour_auc", "planted_gene_auc"])] if len(summary) else summary
    ncols = max([curves.loc[curves["model"] == m, "modality"].nunique() for m in models] + [1]) + 1
    fig, axes = plt.subplots(max(len(models), 1), ncols, figsize=(4.2 * ncols, 3.4 * max(len(models), 1)),
                             squeeze=False)
    if not models:
        axes[0, 0].text(0.5, 0.5, "no deletion curves (no torch model with test cases)", ha="center")
    for r, model in enumerate(models):
        mine = curves[curves["model"] == model]
        for c, modality in enumerate(dict.fromkeys(mine["modality"])):
            ax = axes[r, c]
            for method in METHODS:
                d = mine[(mine["modality"] == modality) & (mine["method"] == method)]
                if d.empty:
                    continue
                g = d.groupby("fraction")["delta_risk"]
                x = np.concatenate([[0.0], g.mean().index.to_numpy()])
                mean, lo, hi = (np.concatenate([[0.0], s.to_numpy()]) for s in (g.mean(), g.min(), g.max()))
                auc = summary[(summary["model"] == model) & (summary["modality"] == modality)
                              & (summary["method"] == method) & (summary["metric"] == "deletion_auc")]["mean"]
                label = {"ig": "IG (post-hoc)"}.get(method, method)
                label += f" (AUC {auc.iloc[0]:.3g})" if len(auc) else ""
                ax.plot(x * 100, mean, "o-", ms=3, color=colours[method], label=label)
                ax.fill_between(x * 100, lo, hi, color=colours[method], alpha=0.15, lw=0)
            unit = "patches" if modality == "wsi" else "genes"
            ax.set_title(f"{model}: {modality}", fontsize=9)
            ax.set_xlabel(f"top {unit} removed (%)")
            ax.set_ylabel("mean |Δ risk|")
            ax.legend(fontsize=7)
        ax = axes[r, ncols - 1]
        p = plaus[plaus["model"] == model] if len(plaus) else plaus
        if len(p):
            labels = [f"{row.modality} {row.method}\n{'tumour' if row.metric == 'tumour_auc' else 'genes'}"
                      for row in p.itertuples()]
            ax.barh(range(len(p)), p["mean"], xerr=p["std"].fillna(0), color=[colours.get(mm, "grey")
                                                                                for mm in p["method"]])
            ax.set_yticks(range(len(p)), labels, fontsize=6)
            ax.axvline(0.5, color="k", lw=0.8, ls="--")
            ax.set_xlim(0, 1)
            ax.set_xlabel("AUC for the planted truth")
            ax.set_title(f"{model}: plausibility", fontsize=9)
        else:
            ax.axis("off")
            ax.text(0.5, 0.5, "no planted truth\n(the generated demo has one)", ha="center", va="center", fontsize=8)
        for c in range(mine["modality"].nunique(), ncols - 1):
            axes[r, c].axis("off")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def faithfulness_report(fold_dirs: Mapping[str, Sequence[str | os.PathLike]], cohort, out_table, out_folds,
                        out_curves, out_png, *, truth: PlantedTruth | None = None,
                        patch_sizes: Mapping[str, int] | None = None, fractions: Sequence[float] = FRACTIONS,
                        ig_steps: int = 16, n_random: int = 3, max_cases: int | None = 16,
                        seed: int = 0) -> pd.DataFrame:
    """:func:`fold_faithfulness` of every fold of every model (``{model: [fold dirs]}``) into
    ``out_table`` (:func:`summarise`), ``out_folds`` (per fold), ``out_curves`` and ``out_png``
    (:func:`plot_faithfulness`); every file written atomically.  Returns the summary.  A model that
    is not a torch model (coxnet) is skipped with a log line."""
    per_fold, curves = [], []
    for model, dirs in fold_dirs.items():
        for d in dirs:
            try:
                fm = load_fold(d, cohort, max_cases=max_cases)
            except ValueError as e:
                if "not a torch model" not in str(e):
                    raise
                log.info("%s: %s", model, e)
                continue
            metrics, curve = fold_faithfulness(fm, truth=truth, patch_sizes=patch_sizes, fractions=fractions,
                                               ig_steps=ig_steps, n_random=n_random, max_cases=max_cases, seed=seed)
            per_fold.append(metrics.assign(model=model))
            curves.append(curve.assign(model=model))
    per_fold = pd.concat(per_fold, ignore_index=True) if per_fold else pd.DataFrame(
        columns=["fold", "architecture", "modality", "method", "metric", "value", "n_cases", "model"])
    curves = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(
        columns=["fold", "architecture", "modality", "method", "fraction", "delta_risk", "n_cases", "model"])
    summary = summarise(per_fold)
    lead = ["model", "fold"]
    def led(t: pd.DataFrame) -> pd.DataFrame:
        return t[lead + [c for c in t.columns if c not in lead]]

    for table, path in ((summary, out_table), (led(per_fold), out_folds), (led(curves), out_curves)):
        with atomic_path(path) as tmp:
            table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    plot_faithfulness(curves, summary, out_png)
    log.info("faithfulness: %d models, %d folds", len(fold_dirs), per_fold["fold"].nunique() if len(per_fold) else 0)
    return summary


def faithfulness_from_files(fold_dirs: Mapping[str, Sequence[str]], clinical: str, feature_stores: Sequence[str],
                            omics: Mapping[str, str], outputs: Mapping[str, str], *,
                            patch_files: Mapping[str, str] | None = None, truth_tumour: str | None = None,
                            truth_genes: str | None = None, **kwargs) -> pd.DataFrame:
    """:func:`faithfulness_report` on a cohort's pipeline files (the Snakemake rule calls this).
    ``outputs``: table, folds, curves, png.  ``patch_files`` (slide id -> patches h5) give the
    patch sizes for the planted truth; ``truth_*`` are the demo's truth files (absent: no
    plausibility)."""
    from .data import open_cohort
    from preprocessing.tiling import read_coords

    cohort = open_cohort(clinical, list(feature_stores), dict(omics))
    sizes = {}
    for sid, path in (patch_files or {}).items():
        sizes[sid] = int(read_coords(path)[1]["patch_size_level0"])
    truth = PlantedTruth.read(truth_tumour, truth_genes) if (truth_tumour or truth_genes) else None
    return faithfulness_report(fold_dirs, cohort, outputs["table"], outputs["folds"], outputs["curves"],
                               outputs["png"], truth=truth, patch_sizes=sizes, **kwargs)
