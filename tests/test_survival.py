"""Discrete-time survival utilities, checked against independent plain-loop implementations."""

import math

import numpy as np
import pytest
import torch

from healnet.survival import (bin_weights, concordance, cox_loss, cox_score_z, discretise, fit_bins,
                              nll_loss, risk_from_logits)


def _nll_reference(logits, labels, events, alpha, weights=None, eps=1e-7):
    """Zadeh & Schmid / PORPOISE likelihood written out with loops and probabilities (not logs)."""
    losses = []
    for z, y, e in zip(logits, labels, events):
        h = [1.0 / (1.0 + math.exp(-v)) for v in z]
        surv, s = [], 1.0
        for hk in h:
            s *= 1.0 - hk
            surv.append(s)
        s_prev = 1.0 if y == 0 else surv[y - 1]
        unc = -e * (math.log(max(s_prev, eps)) + math.log(max(h[y], eps)))
        cen = -(1 - e) * math.log(max(surv[y], eps))
        losses.append((1 - alpha) * (unc + cen) + alpha * unc)
    losses = np.array(losses)
    if weights is None:
        return losses.mean()
    w = np.asarray(weights)[np.asarray(labels)]
    return (w * losses).sum() / w.sum()


@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
def test_nll_matches_reference(alpha):
    rng = np.random.default_rng(1)
    n, k = 40, 4
    logits = rng.normal(0, 2.5, size=(n, k))
    logits[0] = [30.0, -30.0, 30.0, 30.0]  # exercises the eps clamp
    labels = rng.integers(0, k, size=n)
    events = rng.integers(0, 2, size=n)
    events[:2] = [1, 0]
    got = nll_loss(torch.tensor(logits), torch.tensor(labels), torch.tensor(events), alpha=alpha)
    assert got.item() == pytest.approx(_nll_reference(logits, labels, events, alpha), rel=1e-9, abs=1e-9)

    w = np.array([0.5, 2.0, 1.0, 0.0])
    got_w = nll_loss(torch.tensor(logits), torch.tensor(labels), torch.tensor(events), alpha=alpha,
                     weights=torch.tensor(w))
    assert got_w.item() == pytest.approx(_nll_reference(logits, labels, events, alpha, w), rel=1e-9)


def test_nll_is_a_likelihood():
    """With alpha = 0, exp(-loss) over all outcomes (death in bin 0..K-1, or alive after bin K-1) sums to 1."""
    logits = torch.randn(1, 5, dtype=torch.float64)
    total = sum(math.exp(-nll_loss(logits, torch.tensor([y]), torch.tensor([1]), alpha=0.0).item())
                for y in range(5))
    total += math.exp(-nll_loss(logits, torch.tensor([4]), torch.tensor([0]), alpha=0.0).item())
    assert total == pytest.approx(1.0, abs=1e-12)


def test_nll_gradient_finite_float32():
    logits = (torch.randn(16, 4) * 40).requires_grad_()
    loss = nll_loss(logits, torch.randint(0, 4, (16,)), torch.randint(0, 2, (16,)))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_fit_bins_uses_uncensored_quantiles():
    rng = np.random.default_rng(0)
    times = rng.exponential(500, size=200)
    events = rng.random(200) < 0.6
    edges = fit_bins(times, events, n_bins=4)
    assert edges.shape == (5,) and edges[0] == 0 and np.isinf(edges[-1])
    np.testing.assert_allclose(edges[1:-1], np.quantile(times[events], [0.25, 0.5, 0.75]))
    # censored times do not move the edges
    times2 = times.copy()
    times2[~events] = rng.exponential(5000, size=(~events).sum())
    np.testing.assert_array_equal(fit_bins(times2, events, 4), edges)


def test_fit_bins_ties_stay_strictly_increasing():
    times = np.array([10.0] * 20 + [50.0, 60.0])
    edges = fit_bins(times, np.ones_like(times), n_bins=4)
    assert edges.shape == (5,) and np.all(np.diff(edges) > 0)
    labels = discretise(times, edges)
    assert labels.min() >= 0 and labels.max() < 4


def test_discretise_boundaries():
    edges = np.array([0.0, 10.0, 20.0, 30.0, np.inf])
    times = np.array([0.0, 5.0, 10.0, 19.999, 20.0, 30.0, 1e9, -1.0])
    got = discretise(times, edges)
    np.testing.assert_array_equal(got, [0, 0, 1, 1, 2, 3, 3, 0])
    assert got.dtype == np.int64
    # beyond a finite last edge -> last bin
    np.testing.assert_array_equal(discretise([25.0, 20.0, 19.0], np.array([0.0, 10.0, 20.0])), [1, 1, 1])


def test_bin_weights_inverse_frequency():
    labels = np.array([0, 0, 0, 1, 2, 2])
    w = bin_weights(labels, 4)
    assert w[3] == 0  # empty bin
    assert w[labels].mean() == pytest.approx(1.0)
    counts = np.array([3, 1, 2])
    np.testing.assert_allclose(w[:3] * counts, w[0] * 3)  # each present bin carries equal total weight
    np.testing.assert_allclose(w[:3], 6 / (3 * counts))


def test_risk_from_logits():
    logits = torch.randn(10, 4, dtype=torch.float64)
    s = np.cumprod(1 - 1 / (1 + np.exp(-logits.numpy())), axis=1)
    np.testing.assert_allclose(risk_from_logits(logits).numpy(), -s.sum(1))
    higher = logits + torch.rand(10, 4, dtype=torch.float64) + 0.1  # higher hazard everywhere
    assert (risk_from_logits(higher) > risk_from_logits(logits)).all()


def test_cox_loss_breslow_against_loop():
    rng = np.random.default_rng(3)
    n = 25
    times = rng.integers(1, 10, size=n).astype(float)  # many ties
    events = rng.integers(0, 2, size=n)
    risk = rng.normal(size=n)
    total, n_ev = 0.0, 0
    for i in range(n):
        if events[i]:
            den = sum(math.exp(risk[j]) for j in range(n) if times[j] >= times[i])
            total += risk[i] - math.log(den)
            n_ev += 1
    expected = -total / n_ev
    got = cox_loss(torch.tensor(risk), torch.tensor(times), torch.tensor(events))
    assert got.item() == pytest.approx(expected, rel=1e-10)
    r = torch.tensor(risk, requires_grad=True)
    zero = cox_loss(r, torch.tensor(times), torch.zeros(n))
    zero.backward()
    assert zero.item() == 0 and r.grad is not None


def test_concordance_against_brute_force():
    rng = np.random.default_rng(7)
    n = 60
    times = rng.permutation(np.arange(1, n + 1)).astype(float) * 3.7  # distinct times
    events = rng.random(n) < 0.5
    risk = np.round(rng.normal(size=n) - 0.01 * times, 1)  # rounding creates ties in risk
    num = den = 0.0
    for i in range(n):
        for j in range(n):
            if events[i] and times[i] < times[j]:
                den += 1
                num += 1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0
    assert concordance(times, events, risk) == pytest.approx(num / den)
    assert concordance(torch.tensor(times), torch.tensor(events), torch.tensor(risk)) == pytest.approx(num / den)
    assert math.isnan(concordance(times, np.zeros(n, bool), risk))


def test_survival_from_logits_is_the_product_of_one_minus_hazards():
    from healnet.survival import survival_from_logits

    logits = torch.randn(7, 4, dtype=torch.float64)
    expected = np.ones((7, 4))
    for i in range(7):
        s = 1.0
        for k in range(4):
            s *= 1.0 - 1.0 / (1.0 + math.exp(-logits[i, k].item()))
            expected[i, k] = s
    np.testing.assert_allclose(survival_from_logits(logits).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(-survival_from_logits(logits).sum(1), risk_from_logits(logits), rtol=1e-12)


def test_cox_score_is_the_log_rank_test_for_a_binary_covariate():
    """For a 0/1 covariate and no tied times the Cox score test is the log-rank test: z**2 equals
    scikit-survival's log-rank chi-square."""
    from sksurv.compare import compare_survival
    from sksurv.util import Surv

    rng = np.random.default_rng(5)
    n = 150
    group = rng.integers(0, 2, n)
    times, events = rng.exponential(1.0 + group), rng.random(n) < 0.7
    x = np.column_stack([group, 1 - group, np.full(n, 3.0)]).astype(float)
    z = cox_score_z(x, times, events)
    chi2, _ = compare_survival(Surv.from_arrays(events, times), group)
    np.testing.assert_allclose(z[0] ** 2, chi2, rtol=1e-9)
    assert z[0] < 0 < z[1]  # the group that lives longer has the negative score
    assert z[2] == 0  # a constant carries no information


def test_cox_score_with_tied_times_against_a_loop():
    """Breslow ties: every death at time t sees the whole risk set {time >= t}; written as a loop."""
    rng = np.random.default_rng(6)
    n = 80
    x = rng.standard_normal((n, 3))
    times = np.ceil(rng.exponential(1.0, n) * 3)  # few distinct times
    events = rng.random(n) < 0.6
    u, info = np.zeros(3), np.zeros(3)
    for i in np.flatnonzero(events):
        at_risk = x[times >= times[i]]
        u += x[i] - at_risk.mean(0)
        info += at_risk.var(0)
    np.testing.assert_allclose(cox_score_z(x, times, events), u / np.sqrt(info), rtol=1e-10)
