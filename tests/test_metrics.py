"""healnet.metrics against independent computations: brute-force Harrell and Uno c-indices, a
written-out IPCW Brier score, and scikit-survival itself."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sksurv.metrics import concordance_index_censored

from healnet.metrics import (fold_metrics, harrell, ibs_times, integrated_brier, step_survival, surv_columns, uno, uno_tau)
from healnet.survival import concordance


def _comparable(ti, tj, ei, ej) -> bool:
    """Pair (i, j) is usable when i had the event first (or at the same time as j's censoring)."""
    return bool(ei and (ti < tj or (ti == tj and not ej)))


def _brute_harrell(time, event, risk, weight=None) -> float:
    num = den = 0.0
    for i in range(len(time)):
        for j in range(len(time)):
            if i != j and _comparable(time[i], time[j], event[i], event[j]):
                w = 1.0 if weight is None else weight[i]
                den += w
                num += w * (1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0)
    return num / den if den else float("nan")


def _km_censoring(train_time, train_event):
    """Kaplan–Meier of the censoring distribution, G(t) = P(C > t), right-continuous."""
    times = np.unique(train_time[~train_event])

    def G(t):
        g = 1.0
        for c in times[times <= t]:
            g *= 1.0 - ((train_time == c) & ~train_event).sum() / (train_time >= c).sum()
        return g
    return G


def _random(n, seed, ties=True):
    rng = np.random.default_rng(seed)
    time = rng.integers(1, 15, n).astype(float) if ties else rng.exponential(500, n) + 1
    event = rng.random(n) < 0.6
    risk = rng.integers(0, 5, n).astype(float) if ties else rng.normal(size=n)
    return time, event, risk


@pytest.mark.parametrize("seed", range(6))
def test_harrell_matches_sksurv_and_brute_force_with_ties(seed):
    time, event, risk = _random(40, seed, ties=True)
    expected = concordance_index_censored(event, time, risk)[0]
    assert concordance(time, event, risk) == pytest.approx(expected, abs=1e-12)
    m = harrell(time, event, risk)
    assert m.defined and m.reason == ""
    assert m.value == pytest.approx(expected, abs=1e-12)
    assert m.value == pytest.approx(_brute_harrell(time, event, risk), abs=1e-12)


def test_harrell_is_nan_with_a_reason_without_events():
    time, _, risk = _random(10, 0)
    m = harrell(time, np.zeros(10, bool), risk)
    assert math.isnan(m.value) and "no event" in m.reason


def test_harrell_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        harrell([1, 2, 3], [1, 0, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        harrell([1, 2, 3], [1, 0, 1], [0.1, np.nan, 0.3])


@pytest.mark.parametrize("seed", range(4))
def test_uno_matches_the_ipcw_formula(seed):
    train_time, train_event, _ = _random(80, 100 + seed, ties=False)
    time, event, risk = _random(40, seed, ties=False)
    time = np.minimum(time, train_time.max() * 1.1)  # some test times beyond tau
    G = _km_censoring(train_time, train_event)

    def brute(tau):
        keep = time < tau
        weight = np.array([1.0 / G(t) ** 2 if k else 0.0 for t, k in zip(time, keep)])
        return _brute_harrell(time, event & keep, risk, weight)

    tau = np.quantile(train_time, 0.8)  # the documented default: 80th percentile of training follow-up
    assert uno_tau(train_time) == pytest.approx(tau) and tau < train_time.max()
    m = uno(train_time, train_event, time, event, risk)
    assert m.defined
    assert m.value == pytest.approx(brute(tau), rel=1e-9)
    explicit = uno(train_time, train_event, time, event, risk, tau=train_time.max())
    assert explicit.value == pytest.approx(brute(train_time.max()), rel=1e-9)
    # a perfect ranking scores 1 under any weighting
    assert uno(train_time, train_event, time, event, -time).value == pytest.approx(1.0)


def test_uno_weights_stay_bounded_when_the_longest_follow_up_is_censored():
    """Training cases whose longest follow-ups are all censored: the censoring KM G falls to a few
    per cent just below the largest training time.  Truncating there (the former rule) lets ONE
    late test death, compared with one case followed longer, weigh 1/G² ~ 1000 times more than
    any other pair and swing Uno's c-index; at the 80th percentile every weight is at most
    1/(share of training cases still at risk)² and no single case can do that."""
    rng = np.random.default_rng(7)
    train_time = np.sort(rng.exponential(400, 100)) + 1
    train_event = rng.random(100) < 0.7
    train_event[-15:] = False  # the 15 longest follow-ups censored
    G = _km_censoring(train_time, train_event)
    late = (train_time[-2] + train_time[-1]) / 2  # a test death between the last two training times ...
    time = np.r_[rng.uniform(1, np.quantile(train_time, 0.7), 40), late, train_time[-1] + 1]  # ... and a later case
    event = np.r_[rng.random(40) < 0.7, True, False]
    risk = np.r_[rng.normal(size=40), 0.0, 0.0]
    assert 1 / G(late) ** 2 > 500  # the weight the former rule gives the late death

    tau = uno_tau(train_time)
    at_risk = np.mean(train_time > tau)
    weights = np.array([1 / G(t) ** 2 for t in time[event & (time < tau)]])
    assert np.isfinite(weights).all() and weights.max() <= 1 / at_risk**2 <= 1 / 0.19**2

    def swing(**kw) -> float:
        """How far Uno's c-index moves when only the late death's risk goes from lowest to highest."""
        low, high = (uno(train_time, train_event, time, event, np.r_[risk[:40], r, 0.0], **kw).value for r in (-9, 9))
        return high - low

    assert abs(swing()) < 0.1
    assert swing(tau=train_time.max()) > 0.3  # the former rule: one case moves the c-index by > 0.3


def test_uno_without_test_events_before_tau():
    train_time, train_event, _ = _random(30, 1, ties=False)
    time, _, risk = _random(10, 2, ties=False)
    m = uno(train_time, train_event, time, np.zeros(10, bool), risk)
    assert math.isnan(m.value) and "no test event" in m.reason


def test_step_survival():
    edges = np.array([0.0, 10.0, 20.0, np.inf])
    surv = np.array([[0.9, 0.5, 0.2], [0.8, 0.6, 0.1]])
    out = step_survival(surv, edges, [0.0, 9.99, 10.0, 15.0, 20.0, 1e6])
    np.testing.assert_allclose(out, [[1, 1, 0.9, 0.9, 0.5, 0.5], [1, 1, 0.8, 0.8, 0.6, 0.6]])
    with pytest.raises(ValueError, match="expected"):
        step_survival(surv[:, :2], edges, [1.0])


@pytest.mark.parametrize("seed", range(3))
def test_integrated_brier_matches_the_written_out_score(seed):
    rng = np.random.default_rng(seed)
    train_time, train_event, _ = _random(100, 50 + seed, ties=False)
    time, event, _ = _random(50, seed, ties=False)
    edges = np.concatenate([[0.0], np.quantile(train_time[train_event], [0.25, 0.5, 0.75]), [np.inf]])
    surv = np.cumprod(rng.uniform(0.5, 0.95, (50, 4)), axis=1)
    times = ibs_times(train_time, time)
    assert len(times) >= 2 and times.min() >= time.min() and times.max() < min(time.max(), train_time.max())
    G = _km_censoring(train_time, train_event)
    S = step_survival(surv, edges, times)
    brier = []
    for k, t in enumerate(times):
        died = (time <= t) & event
        alive = time > t
        with np.errstate(divide="ignore"):  # G(x) = 0 beyond the training times: never selected
            terms = np.where(died, S[:, k] ** 2 / np.array([G(x) for x in time]), 0.0)
        terms += np.where(alive, (1 - S[:, k]) ** 2 / G(t), 0.0)
        brier.append(terms.mean())
    expected = np.sum(np.diff(times) * (np.array(brier[1:]) + np.array(brier[:-1])) / 2) / (times[-1] - times[0])
    m = integrated_brier(train_time, train_event, time, event, surv, edges)
    assert m.defined
    assert m.value == pytest.approx(expected, rel=1e-9)


def test_integrated_brier_needs_two_times():
    m = integrated_brier([5.0, 6.0], [1, 0], [1.0, 1.0], [1, 1], np.full((2, 2), 0.5), [0, 3, np.inf])
    assert math.isnan(m.value) and "fewer than 2" in m.reason


def test_fold_metrics_row_and_reasons():
    time, event, risk = _random(30, 3, ties=False)
    train_time, train_event, _ = _random(60, 4, ties=False)
    surv = np.tile([0.9, 0.7, 0.5, 0.3], (30, 1))
    preds = pd.DataFrame({"risk": risk, "time": time, "event": event.astype(int),
                          **{f"surv_{k}": surv[:, k] for k in (3, 1, 0, 2)}})
    assert surv_columns(preds) == ["surv_0", "surv_1", "surv_2", "surv_3"]
    edges = [0.0, 200.0, 400.0, 800.0, np.inf]
    row = fold_metrics(train_time, train_event, preds, edges)
    assert row["n_test"] == 30 and row["events"] == event.sum()
    assert row["harrell"] == pytest.approx(concordance_index_censored(event, time, risk)[0])
    assert 0 <= row["uno"] <= 1 and 0 <= row["ibs"] <= 1
    assert row["harrell_reason"] == row["uno_reason"] == row["ibs_reason"] == ""
    no_surv = fold_metrics(train_time, train_event, preds[["risk", "time", "event"]], edges)
    assert math.isnan(no_surv["ibs"]) and "surv_k" in no_surv["ibs_reason"]
    unknown = fold_metrics(None, None, preds, edges)
    assert math.isnan(unknown["uno"]) and unknown["harrell"] == row["harrell"]
