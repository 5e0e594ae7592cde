"""Cross-validation results: per-fold and summary metrics, missing-modality scenarios, and
Kaplan–Meier curves by predicted risk (drawn by :mod:`healnet.kaplan_meier`; the headline and
ablation tables are formatted by :mod:`healnet.headline`).

Inputs are the per-fold outputs of training, ``.../models/<model>/fold<k>/``:

* ``metrics.json``: at least ``fold`` and ``bin_edges`` (optional: ``best_epoch``);
* ``predictions.tsv``: case_id, fold, risk, time, event (optional: ``surv_0..surv_{K-1}``,
  the predicted survival at the end of each bin, for the integrated Brier score);
* ``missing.tsv`` (optional): case_id, fold, scenario, risk, time, event (other columns are
  ignored); the scenarios as training names them (``healnet.train``: ``full``, ``no_<modality>``,
  ``mixed``, and the curves' ``<removed>@<fraction>`` rows, which have a ``fraction``).

The model and fold of each file are read from its path, so the tables hold whatever models'
folds are given.  Metrics are recomputed from the predictions (see :mod:`healnet.metrics`); Uno's
c-index and the integrated Brier score need the fold's training cases (``splits``) and their
survival (``survival``), else they are NaN with a reason.

Fair comparison: models use different modalities, so they predict different test cases.  The
primary tables (``metrics.tsv``, ``metrics_summary.tsv``, the KM figure and the headline) score
every model of a fold on the SAME cases: those every model predicted in that fold
(:func:`common_cases`).  ``metrics_all_cases.tsv`` scores each model on all the cases it
predicted, and the summary repeats those means as ``all_cases_*``.  Each model's c-index has a
bootstrap 95 % CI, and its paired difference to the reference model (HEALNet) a CI and p-value
(:mod:`healnet.paired`).  With repeated cross-validation (fold dicts of ``splits`` with a
``repeat`` key) the tables have the repeat of each fold, and means run over all folds of all
repeats.
"""
from __future__ import annotations

import json
import logging
import os
import re
from collections import defaultdict
from collections.abc import Collection

import numpy as np
import pandas as pd

from preprocessing.io import atomic_path, write_tsv_atomic

from .headline import ablation_table, headline_rst
from .kaplan_meier import kaplan_meier_plot
from .metrics import fold_metrics, harrell
from .missing_curves import curves_plot, curves_table
from .paired import paired_bootstrap

log = logging.getLogger(__name__)

METRICS = ("harrell", "uno", "ibs")
_FOLD_DIR = re.compile(r"(?:^|/)models/([^/]+)/fold(\d+)/[^/]+$")


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


def read_predictions(fold_predictions) -> dict[tuple[str, int], pd.DataFrame]:
    """``predictions.tsv`` of each (model, fold)."""
    return {key: pd.read_csv(path, sep="\t") for key, path in sorted(_by_model_fold(fold_predictions).items())}


def common_cases(predictions: dict[tuple[str, int], pd.DataFrame]) -> dict[int, list[str]]:
    """Per fold: the case_ids that every model with that fold predicted (the intersection), on
    which the models are compared."""
    per_fold: dict[int, set[str]] = {}
    for (_, fold), table in predictions.items():
        ids = set(table["case_id"].astype(str))
        per_fold[fold] = per_fold[fold] & ids if fold in per_fold else ids
    return {fold: sorted(ids) for fold, ids in sorted(per_fold.items())}


def fold_repeat(splits: list[dict] | None, fold: int) -> int:
    """The repeat of fold ``fold`` in repeated cross-validation (its ``repeat`` key), else 0."""
    if splits is None or fold >= len(splits):
        return 0
    return int(splits[fold].get("repeat", 0))


def metrics_table(fold_metrics_files, fold_predictions, *, survival: pd.DataFrame | None = None,
                  splits: list[dict] | None = None, cases: dict[int, Collection[str]] | None = None) -> pd.DataFrame:
    """One row per model and fold: repeat, harrell, uno, ibs (and ``*_reason`` where NaN), n_test,
    events, n_left_out, best_epoch.

    With ``cases`` (fold -> case_ids, e.g. :func:`common_cases`) each fold is scored on those of
    its predicted cases only; ``n_left_out`` counts the predicted cases left out."""
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
        n_predicted = len(predictions)
        if cases is not None:
            predictions = predictions[predictions["case_id"].astype(str).isin(set(cases.get(fold, ())))]
        edges = info.get("bin_edges")
        edges = np.array([float(e) for e in edges]) if edges is not None else None
        train_time, train_event = _train_survival(survival, splits, fold)
        row = {"model": model, "fold": fold, "repeat": fold_repeat(splits, fold),
               **fold_metrics(train_time, train_event, predictions, edges),
               "n_left_out": n_predicted - len(predictions), "best_epoch": info.get("best_epoch", -1)}
        rows.append(row)
    columns = ["model", "fold", "repeat", *METRICS, "n_test", "events", "n_left_out", "best_epoch",
               *(f"{m}_reason" for m in METRICS)]
    return pd.DataFrame(rows, columns=columns)


def summary_table(metrics: pd.DataFrame, oracle_c_index: float | None = None,
                  logrank: dict[str, float] | None = None) -> pd.DataFrame:
    """Per model: mean and standard deviation (ddof 1) over folds of each metric (NaN folds left
    out; ``<metric>_folds`` counts the folds that have it); the oracle c-index and the KM log-rank p
    when given."""
    rows = []
    for model, group in metrics.groupby("model", sort=True):
        row = {"model": model, "n_folds": len(group)}
        for m in METRICS:
            values = group[m].dropna()
            row[f"{m}_mean"] = values.mean() if len(values) else float("nan")
            row[f"{m}_std"] = values.std(ddof=1) if len(values) > 1 else float("nan")
            row[f"{m}_folds"] = len(values)
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
        if "fraction" in table.columns:  # the curves' scenarios are summarised by healnet.missing_curves
            table = table[table["fraction"].isna()]
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


def _write_tsv(table: pd.DataFrame, path) -> None:
    write_tsv_atomic(table, path, float_format="%.4f")


def read_survival(clinical: str | os.PathLike) -> pd.DataFrame:
    """time and event of the cases with status ok, indexed by case_id, from the clinical parquet."""
    table = pd.read_parquet(clinical)
    if "status" in table.columns:
        table = table[table["status"] == "ok"]
    return table.set_index("case_id")[["time", "event"]]


def _log_left_out(predictions: dict[tuple[str, int], pd.DataFrame], common: dict[int, list[str]]) -> None:
    for fold, ids in common.items():
        left = {model: len(t) - len(ids) for (model, k), t in predictions.items() if k == fold}
        dropped = ", ".join(f"{m} {n}" for m, n in left.items() if n) or "none"
        log.info("fold %d: %d test cases common to all models; left out of each model's predicted cases: %s",
                 fold, len(ids), dropped)
        if not ids:
            log.warning("fold %d: no test case is common to all models (%s)", fold, ", ".join(left))


def paired_folds(predictions: dict[tuple[str, int], pd.DataFrame], common: dict[int, list[str]],
                 models: list[str]) -> list[pd.DataFrame]:
    """Per fold, one table of the common cases: case_id, time, event and each model's risk (a
    model without that fold: NaN)."""
    out = []
    for fold, ids in common.items():
        table = pd.DataFrame({"case_id": ids})
        for model in models:
            if (model, fold) not in predictions:
                table[model] = np.nan
                continue
            p = predictions[model, fold].assign(case_id=lambda t: t["case_id"].astype(str)).set_index("case_id")
            p = p.loc[ids]
            if "time" not in table:
                table["time"], table["event"] = p["time"].to_numpy(float), p["event"].to_numpy(int)
            elif not (np.allclose(table["time"], p["time"]) and (table["event"] == p["event"].to_numpy()).all()):
                raise ValueError(f"fold {fold}: {model}'s predictions.tsv has other times or events than the "
                                 f"other models' for the same cases")
            table[model] = p["risk"].to_numpy(float)
        out.append(table)
    return out


def evaluate_cohort(fold_metrics_files, fold_predictions, *, metrics_out, summary_out, km_out,
                    missing_out=None, fold_missing=(), survival: pd.DataFrame | None = None,
                    splits: list[dict] | None = None, oracle: str | os.PathLike | None = None,
                    title: str = "", all_cases_out=None, headline_out=None, reference: str | None = "healnet",
                    n_boot: int = 1000, seed: int = 0, curves_out=None, curves_png=None,
                    ablations_out=None) -> pd.DataFrame:
    """Write ``metrics.tsv`` (per model and fold, on the test cases common to all models),
    ``metrics_summary.tsv`` (per model: mean ± std, bootstrap CI, paired difference to
    ``reference``, KM log-rank p, the oracle c-index when the cohort has one, and the all-cases
    means), the KM figure (one panel per model), and when given ``missing_modalities.tsv``,
    ``metrics_all_cases.tsv`` (each model on all its cases), the report headline (RST), and the
    missing-modality curves (``missing_curves.tsv`` and its figure, :mod:`healnet.missing_curves`),
    and the ablation table (:func:`healnet.headline.ablation_table`); returns the summary.  ``n_boot`` bootstrap replicates drawn with ``seed``."""
    predictions = read_predictions(fold_predictions)
    if not predictions:
        raise ValueError("evaluate_cohort: no fold results given")
    common = common_cases(predictions)
    _log_left_out(predictions, common)
    metrics = metrics_table(fold_metrics_files, fold_predictions, survival=survival, splits=splits, cases=common)
    all_cases = metrics_table(fold_metrics_files, fold_predictions, survival=survival, splits=splits)
    for row in metrics.itertuples():
        for m in METRICS:
            reason = getattr(row, f"{m}_reason")
            if reason:
                log.info("%s fold %d: %s undefined (%s)", row.model, row.fold, m, reason)
    scored = {key: t[t["case_id"].astype(str).isin(set(common[key[1]]))] for key, t in predictions.items()}
    by_model = defaultdict(list)
    for (model, _), table in scored.items():
        by_model[model].append(table)
    p_values = kaplan_meier_plot({m: pd.concat(t, ignore_index=True) for m, t in by_model.items()}, km_out, title=title)
    oracle_c = None
    if oracle and os.path.exists(oracle):
        with open(oracle) as f:
            oracle_c = json.load(f)["c_index"]
    models = sorted(by_model)
    if reference is not None and reference not in models:
        log.info("reference model %s not among %s: no paired differences", reference, models)
    paired = paired_bootstrap(paired_folds(predictions, common, models), models, reference=reference,
                              n_boot=n_boot, seed=seed)
    all_cases_n = {m: len(set().union(*(set(t["case_id"]) for (mm, _), t in predictions.items() if mm == m)))
                   for m in models}
    summary = _with_paired(summary_table(metrics, oracle_c, p_values), paired, summary_table(all_cases), all_cases_n)
    _write_tsv(metrics, metrics_out)
    _write_tsv(summary, summary_out)
    if all_cases_out is not None:
        _write_tsv(all_cases, all_cases_out)
    if headline_out is not None:
        with atomic_path(headline_out) as tmp:
            tmp.write_text(headline_rst(summary, title))
    if missing_out is not None:
        _write_tsv(missing_table(fold_missing), missing_out)
    if ablations_out is not None:
        _write_tsv(ablation_table(summary, reference or "healnet"), ablations_out)
    if curves_out is not None or curves_png is not None:
        curves = curves_table(_by_model_fold(fold_missing))
        if curves_out is not None:
            _write_tsv(curves, curves_out)
        if curves_png is not None:
            curves_plot(curves, curves_png, title)
    return summary


def _with_paired(summary: pd.DataFrame, paired: pd.DataFrame, all_cases: pd.DataFrame,
                 all_cases_n: dict[str, int]) -> pd.DataFrame:
    """The summary with the bootstrap columns after ``harrell_std`` and the all-cases means and
    distinct cases (``all_cases_*``) at the end."""
    paired = paired.drop(columns="harrell")
    out = summary.merge(paired, on="model", how="left")
    first = ["model", "n_folds", "n_test_cases", "harrell_mean", "harrell_std", *paired.columns[2:]]
    out = out[first + [c for c in out.columns if c not in first]]
    extra = all_cases.set_index("model")[["harrell_mean", "harrell_std", "uno_mean", "ibs_mean"]]
    extra["n_test_cases"] = pd.Series(all_cases_n)
    return out.merge(extra.add_prefix("all_cases_").reset_index(), on="model", how="left")
