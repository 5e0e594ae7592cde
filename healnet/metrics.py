"""Test-fold survival metrics: Harrell's and Uno's c-index and the integrated Brier score.

All three come from scikit-survival; this module only chooses their time ranges, turns the
discrete-time model's per-bin survival into a step function, and returns ``Metric(nan, reason)``
instead of raising where a metric is undefined on a fold (no event, no comparable pair, too few
evaluation times).

Conventions (see :mod:`healnet.survival`): ``time`` in days, ``event`` 1 = death; ``risk``
higher = worse.  Discrete predictions are ``surv[:, k]`` = predicted probability of surviving
past the END of bin ``k`` (``edges[k+1]``), with bins ``[edges[k], edges[k+1])``,
``edges[0] = 0`` and ``edges[-1] = inf``.

Choices (documented here and in the report):

* Uno's c-index: truncation time ``tau`` = the ``UNO_TAU_QUANTILE`` (80th) percentile of the
  fold's training follow-up times (events and censorings alike), and test pairs are compared
  up to ``tau`` only.  The censoring distribution ``G`` is the Kaplan–Meier estimate on the
  training cases, and each test event weighs ``1 / G(t)²``.  scikit-survival requires ``tau``
  where ``G > 0``; the largest training time (the former rule) only just satisfies that, and
  just below it ``G`` rests on the last one or two cases at risk, so when the longest
  follow-ups are censored one late test death can weigh hundreds of times more than the others
  and decide the c-index alone.  Without ties, the event and censoring Kaplan–Meier estimates multiply to the
  share of training cases still at risk, so up to the 80th percentile ``G ≥ 0.2`` (about, with
  ties) and every weight is at most about ``1 / 0.2² = 25``.
* Integrated Brier score: evaluated at ``IBS_QUANTILES`` (the 10th to 90th percentiles, 17 points)
  of the test times, kept inside ``[min test time, min(max test time, max train time))`` as
  scikit-survival requires; at least two distinct times are needed.  The predicted survival at a
  time ``t`` in bin ``k`` is the survival at the end of the previous bin, ``S(t) = surv[:, k-1]``
  (``1`` in the first bin): a right-continuous step function that drops at each bin edge.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

IBS_QUANTILES = np.linspace(0.1, 0.9, 17)
UNO_TAU_QUANTILE = 0.8  # tau of Uno's c-index: this quantile of the training follow-up (see above)


class Metric(NamedTuple):
    value: float
    reason: str = ""  # why the value is NaN; empty when it is defined

    @property
    def defined(self) -> bool:
        return not math.isnan(self.value)


def _survival_array(event, time):
    from sksurv.util import Surv

    return Surv.from_arrays(event=np.asarray(event).astype(bool).ravel(), time=np.asarray(time, dtype=float).ravel())


def _check(time, event, risk=None):
    time = np.asarray(time, dtype=float).ravel()
    event = np.asarray(event).astype(bool).ravel()
    if time.shape != event.shape:
        raise ValueError(f"time ({time.size}) and event ({event.size}) differ in length")
    if risk is not None:
        risk = np.asarray(risk, dtype=float).ravel()
        if risk.shape != time.shape:
            raise ValueError(f"risk ({risk.size}) and time ({time.size}) differ in length")
        if not np.isfinite(risk).all():
            raise ValueError("risk has NaN or infinite values")
    if not np.isfinite(time).all() or (time < 0).any():
        raise ValueError("times must be finite and >= 0")
    return time, event, risk


def harrell(time, event, risk) -> Metric:
    """Harrell's c-index (``healnet.survival.concordance``, i.e. scikit-survival's
    ``concordance_index_censored``: ties in risk count 1/2, ties in time are not comparable)."""
    from .survival import concordance

    time, event, risk = _check(time, event, risk)
    if not event.any():
        return Metric(float("nan"), "no event in the test cases")
    value = concordance(time, event, risk)
    return Metric(value, "" if not math.isnan(value) else "no comparable pair")


def uno_tau(train_time) -> float:
    """Truncation time (days) of Uno's c-index: the ``UNO_TAU_QUANTILE`` quantile of the training
    follow-up times, where the censoring distribution is still well estimated (module docstring)."""
    return float(np.quantile(np.asarray(train_time, dtype=float), UNO_TAU_QUANTILE))


def uno(train_time, train_event, time, event, risk, *, tau: float | None = None) -> Metric:
    """Uno's IPCW c-index (scikit-survival ``concordance_index_ipcw``), censoring distribution from
    the training cases, truncated at ``tau`` days (default :func:`uno_tau`)."""
    from sksurv.metrics import concordance_index_ipcw

    train_time, train_event, _ = _check(train_time, train_event)
    time, event, risk = _check(time, event, risk)
    if train_time.size == 0:
        return Metric(float("nan"), "no training cases")
    tau = uno_tau(train_time) if tau is None else float(tau)
    if not (event & (time < tau)).any():
        return Metric(float("nan"), f"no test event before tau = {tau:g} days")
    try:
        value = float(concordance_index_ipcw(_survival_array(train_event, train_time), _survival_array(event, time),
                                             risk, tau=tau)[0])
    except (ValueError, ZeroDivisionError) as err:
        return Metric(float("nan"), f"undefined: {err}")
    return Metric(value, "" if not math.isnan(value) else "no comparable pair before tau")


def step_survival(surv: np.ndarray, edges: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Predicted survival (n, len(times)) at ``times`` from per-bin survival ``surv`` (n, K) and
    bin edges (K + 1,): ``S(t) = surv[:, k-1]`` for ``t`` in ``[edges[k], edges[k+1])``, ``1`` for
    ``k = 0``."""
    surv, edges = np.asarray(surv, dtype=float), np.asarray(edges, dtype=float)
    if surv.ndim != 2 or surv.shape[1] != len(edges) - 1:
        raise ValueError(f"surv has shape {surv.shape}; expected (n, {len(edges) - 1}) for {len(edges)} bin edges")
    padded = np.concatenate([np.ones((len(surv), 1)), surv], axis=1)  # [S_-1 = 1, S_0, ..., S_{K-1}]
    k = np.clip(np.searchsorted(edges, np.asarray(times, dtype=float), side="right") - 1, 0, surv.shape[1] - 1)
    return padded[:, k]


def ibs_times(train_time, time) -> np.ndarray:
    """Evaluation times of the integrated Brier score (see the module docstring)."""
    train_time, time = np.asarray(train_time, dtype=float), np.asarray(time, dtype=float)
    if time.size == 0 or train_time.size == 0:
        return np.empty(0)
    lo, hi = time.min(), min(time.max(), train_time.max())
    grid = np.unique(np.quantile(time, IBS_QUANTILES))
    return grid[(grid >= lo) & (grid < hi)]


def integrated_brier(train_time, train_event, time, event, surv, edges) -> Metric:
    """Integrated Brier score (scikit-survival ``integrated_brier_score``; lower is better) of the
    step-function survival built from ``surv`` (n, K) and ``edges``."""
    from sksurv.metrics import integrated_brier_score

    train_time, train_event, _ = _check(train_time, train_event)
    time, event, _ = _check(time, event)
    surv = np.asarray(surv, dtype=float)
    if not np.isfinite(surv).all():
        return Metric(float("nan"), "predicted survival has NaN values")
    times = ibs_times(train_time, time)
    if times.size < 2:
        return Metric(float("nan"), f"fewer than 2 evaluation times inside the test follow-up ({times.size})")
    estimate = step_survival(surv, edges, times)
    # scikit-survival wants every test time below the last training time (where the censoring
    # KM is defined).  A test case followed beyond the last evaluation time only enters the score
    # as "still alive" (weight 1 / G(t)), so censoring it anywhere past that time changes nothing.
    limit = train_time.max()
    late = time >= limit
    time, event = time.copy(), event & ~late
    time[late] = times[-1] + (limit - times[-1]) / 2
    try:
        value = float(integrated_brier_score(_survival_array(train_event, train_time), _survival_array(event, time),
                                             estimate, times))
    except ValueError as err:
        return Metric(float("nan"), f"undefined: {err}")
    return Metric(value)


def surv_columns(frame) -> list[str]:
    """The ``surv_0 .. surv_{K-1}`` columns of a predictions table, in bin order."""
    cols = [c for c in frame.columns if c.startswith("surv_") and c[5:].isdigit()]
    return sorted(cols, key=lambda c: int(c[5:]))


def fold_metrics(train_time, train_event, predictions, edges=None) -> dict:
    """Harrell, Uno and IBS of one test fold; ``predictions`` has columns risk, time, event (and
    ``surv_k`` for the IBS, with ``edges`` the fold's bin edges).  NaN values come with a
    ``<metric>_reason``."""
    time, event, risk = predictions["time"].to_numpy(float), predictions["event"].to_numpy(), predictions["risk"]
    out = {"n_test": int(len(predictions)), "events": int(np.asarray(event).astype(bool).sum())}
    results = {"harrell": harrell(time, event, risk)}
    results["uno"] = (uno(train_time, train_event, time, event, risk) if train_time is not None
                      else Metric(float("nan"), "training times unknown"))
    cols = surv_columns(predictions)
    if not cols:
        results["ibs"] = Metric(float("nan"), "no surv_k columns in predictions")
    elif edges is None or train_time is None:
        results["ibs"] = Metric(float("nan"), "bin edges or training times unknown")
    else:
        results["ibs"] = integrated_brier(train_time, train_event, time, event, predictions[cols].to_numpy(float), edges)
    for name, m in results.items():
        out[name] = m.value
        out[f"{name}_reason"] = m.reason
    return out
