"""Harrell's c-index with bootstrap confidence intervals, and the paired comparison of models
scored on the same test cases.

Method (also in ``workflow/report/summary.rst``):

* Each model's c-index is Harrell's (scikit-survival's ``concordance_index_censored``: ties in
  risk count 1/2) per test fold, averaged over all folds (of all repeats): the ``harrell_mean``
  of the summary table.  The paired difference of two models is the difference of these means.
* Bootstrap: ``n_boot`` replicates (default 1000) from ``numpy.random.default_rng(seed)``, so
  deterministic.  Each replicate draws the PATIENTS (every case of the common test sets) with
  replacement, and a patient drawn ``w`` times counts ``w`` times in every fold where it is a
  test case, for every model alike (that is the pairing).  Resampling patients rather than each
  fold on its own keeps repeated cross-validation honest: each repeat tests the same patients
  again, so its folds are not independent samples.  In each replicate, every model's c-index
  is computed per fold and averaged over the folds, and the difference taken.
* 95 % intervals are the 2.5th and 97.5th percentiles of the replicates.  The two-sided p-value
  of a difference is ``min(1, 2 · min(P*(d ≤ 0), P*(d ≥ 0)))`` with ``P*(A) = (1 + #A) / (B + 1)``
  over the ``B`` replicates: about the smallest level at which the percentile interval excludes
  0; identical predictions give ``d = 0`` in every replicate and ``p = 1``.

The bootstrap computes concordance from the (n, n) pair matrices of each fold and the case
multiplicities of all replicates at once (:func:`weighted_harrell`), rather than calling
scikit-survival thousands of times.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

TIED_TOL = 1e-8  # risks this close count as tied (scikit-survival's ``tied_tol``)
LEVEL = 0.95


def comparable_pairs(time, event) -> np.ndarray:
    """(n, n) bool: pair (i, j) is usable when i died first, i.e. ``event[i]`` and ``time[i] <
    time[j]``, or the same time with j censored (scikit-survival's rule; time in days)."""
    time, event = np.asarray(time, dtype=float), np.asarray(event).astype(bool)
    later = time[None, :] > time[:, None]
    same_time_censored = (time[None, :] == time[:, None]) & ~event[None, :]
    return event[:, None] & (later | same_time_censored)


def pair_scores(risk) -> np.ndarray:
    """(n, n): 1 where ``risk[i] > risk[j]`` (concordant when i died first), 1/2 for tied risks."""
    risk = np.asarray(risk, dtype=float)
    diff = risk[:, None] - risk[None, :]
    return np.where(np.abs(diff) <= TIED_TOL, 0.5, (diff > 0).astype(float))


def weighted_harrell(time, event, risk, counts=None) -> np.ndarray:
    """Harrell's c-index of the data set in which case ``i`` appears ``counts[b, i]`` times, for
    each row ``b`` of ``counts`` (B, n); default: each case once.  NaN without comparable pair.
    Copies of one case are never comparable (same time, same event), as in a resampled table."""
    comparable = comparable_pairs(time, event).astype(float)
    counts = np.ones((1, comparable.shape[0])) if counts is None else np.atleast_2d(np.asarray(counts, dtype=float))
    den = ((counts @ comparable) * counts).sum(axis=1)  # sum over pairs of w_i w_j [i, j comparable]
    num = ((counts @ (comparable * pair_scores(risk))) * counts).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not values.size:
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def paired_p(delta: np.ndarray) -> float:
    """Two-sided bootstrap p-value of a difference from its replicates (module docstring)."""
    delta = delta[np.isfinite(delta)]
    if not delta.size:
        return float("nan")
    n = delta.size
    below, above = (1 + np.sum(delta <= 0)) / (n + 1), (1 + np.sum(delta >= 0)) / (n + 1)
    return float(min(1.0, 2 * min(below, above)))


def paired_bootstrap(folds: list[pd.DataFrame], models: list[str], *, reference: str | None = "healnet",
                     n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per model: fold-mean Harrell c-index with its bootstrap 95 % CI and, against ``reference``
    (skipped when ``None`` or not among ``models``), the paired difference (model − reference),
    its CI and p-value.

    ``folds`` holds one table per test fold (of every repeat) with columns case_id, time (days),
    event and one risk column per model, all on the same cases.  Returns columns model,
    n_test_cases (distinct patients), harrell, harrell_ci_low, harrell_ci_high, reference,
    delta_vs_reference, delta_ci_low, delta_ci_high, delta_p (NaN for the reference itself)."""
    cases = sorted(set().union(*(set(f["case_id"]) for f in folds))) if folds else []
    column = {c: i for i, c in enumerate(cases)}
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(cases), np.full(len(cases), 1 / len(cases)), size=n_boot) if cases else None
    # per fold and model: row 0 the original data, rows 1.. the replicates
    c = np.full((len(folds), len(models), n_boot + 1), np.nan)
    for f, fold in enumerate(folds):
        if not len(fold):
            continue
        counts = np.vstack([np.ones(len(fold)), draws[:, [column[x] for x in fold["case_id"]]]])
        for m, model in enumerate(models):
            if fold[model].isna().any():  # the model has no predictions for this fold
                continue
            c[f, m] = weighted_harrell(fold["time"], fold["event"], fold[model], counts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a replicate with no defined fold: NaN
        mean = np.nanmean(c, axis=0) if len(folds) else np.full((len(models), n_boot + 1), np.nan)
    ref = models.index(reference) if reference in models else None
    rows = []
    for m, model in enumerate(models):
        low, high = _interval(mean[m, 1:])
        row = {"model": model, "n_test_cases": len(cases), "harrell": mean[m, 0], "harrell_ci_low": low,
               "harrell_ci_high": high, "reference": reference if ref is not None else "",
               "delta_vs_reference": np.nan, "delta_ci_low": np.nan, "delta_ci_high": np.nan, "delta_p": np.nan}
        if ref is not None and m != ref:
            delta = mean[m] - mean[ref]
            row["delta_vs_reference"] = delta[0]
            row["delta_ci_low"], row["delta_ci_high"] = _interval(delta[1:])
            row["delta_p"] = paired_p(delta[1:])
        rows.append(row)
    return pd.DataFrame(rows)
