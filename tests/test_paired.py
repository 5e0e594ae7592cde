"""healnet.paired: the vectorised Harrell c-index against scikit-survival (with ties, and on
resampled tables), and the paired bootstrap against a difference known from a very large
independent sample of the same simulation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sksurv.metrics import concordance_index_censored

from healnet.paired import paired_bootstrap, paired_p, weighted_harrell
from healnet.survival import concordance


def _random(n, seed):
    rng = np.random.default_rng(seed)
    time = rng.integers(1, 12, n).astype(float)  # many tied times
    event = rng.random(n) < 0.6
    risk = rng.integers(0, 4, n) + np.where(rng.random(n) < 0.3, 1e-10, 0.0)  # tied risks, some within 1e-8
    return time, event, risk


@pytest.mark.parametrize("seed", range(8))
def test_weighted_harrell_equals_sksurv_with_ties(seed):
    time, event, risk = _random(50, seed)
    expected = concordance_index_censored(event, time, risk)[0]
    assert weighted_harrell(time, event, risk)[0] == pytest.approx(expected, abs=1e-12)
    assert weighted_harrell(time, event, risk)[0] == pytest.approx(concordance(time, event, risk), abs=1e-12)
    # multiplicities = the c-index of the resampled table, duplicates included
    rng = np.random.default_rng(100 + seed)
    counts = rng.multinomial(50, np.full(50, 1 / 50), size=5)
    for row, c in zip(counts, weighted_harrell(time, event, risk, counts)):
        idx = np.repeat(np.arange(50), row)
        assert c == pytest.approx(concordance_index_censored(event[idx], time[idx], risk[idx])[0], abs=1e-12)


def test_weighted_harrell_without_comparable_pair_is_nan():
    assert np.isnan(weighted_harrell([1.0, 2.0], [False, False], [0.1, 0.2])[0])


# --- simulation: true risk z, exponential death times, uniform censoring (days) ------------------


def _simulate(n: int, seed: int, noise_a: float, noise_b: float, shared_b: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    death = rng.exponential(1000 * np.exp(-z))
    censor = rng.uniform(100, 3000, n)
    a = z + rng.normal(0, noise_a, n)
    b = a.copy() if shared_b else z + rng.normal(0, noise_b, n)
    return pd.DataFrame({"case_id": [f"c{seed}-{i}" for i in range(n)], "time": np.round(np.minimum(death, censor)) + 1,
                         "event": (death <= censor).astype(int), "a": a, "b": b})


def _population_c(sample: pd.DataFrame, models, n_pairs=4_000_000, seed=0) -> dict[str, float]:
    """Harrell's c-index of each model over random ordered pairs of a very large sample (the
    same pairs for all models), with scikit-survival's rule written out."""
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(sample), (2, n_pairs))
    t, e = sample["time"].to_numpy(), sample["event"].to_numpy(bool)
    comparable = e[i] & ((t[i] < t[j]) | ((t[i] == t[j]) & ~e[j]))
    out = {}
    for m in models:
        r = sample[m].to_numpy()
        score = np.where(r[i] == r[j], 0.5, (r[i] > r[j]).astype(float))
        out[m] = score[comparable].mean()
    return out


def _folds(sample: pd.DataFrame, n_folds=5) -> list[pd.DataFrame]:
    return [sample.iloc[k::n_folds].reset_index(drop=True) for k in range(n_folds)]


NOISE_A, NOISE_B = 0.3, 2.0


@pytest.fixture(scope="module")
def population():
    return _population_c(_simulate(200_000, 999, NOISE_A, NOISE_B), ["a", "b"])


def test_bootstrap_ci_covers_the_known_difference(population):
    truth = population["b"] - population["a"]
    assert truth < -0.05  # the planted difference is large
    folds = _folds(_simulate(600, 1, NOISE_A, NOISE_B))
    result = paired_bootstrap(folds, ["a", "b"], reference="a", n_boot=1000, seed=0).set_index("model")
    b = result.loc["b"]
    # the point estimate is the difference of the fold-mean c-indices (scikit-survival per fold)
    means = {m: np.mean([concordance_index_censored(f["event"].astype(bool), f["time"], f[m])[0] for f in folds])
             for m in ("a", "b")}
    assert b["delta_vs_reference"] == pytest.approx(means["b"] - means["a"], abs=1e-12)
    assert result.loc["a", "harrell"] == pytest.approx(means["a"], abs=1e-12)
    assert b["delta_ci_low"] <= truth <= b["delta_ci_high"]
    assert b["delta_ci_high"] < 0 and b["delta_p"] < 0.01  # excludes 0
    for m in ("a", "b"):
        assert result.loc[m, "harrell_ci_low"] <= population[m] <= result.loc[m, "harrell_ci_high"]
    assert result.loc["a", "reference"] == "a" and np.isnan(result.loc["a", "delta_vs_reference"])
    assert (result["n_test_cases"] == 600).all()


def test_bootstrap_ci_coverage_over_independent_samples(population):
    truth = population["b"] - population["a"]
    covered = 0
    for seed in range(20):
        r = paired_bootstrap(_folds(_simulate(600, 100 + seed, NOISE_A, NOISE_B)), ["a", "b"], reference="a",
                             n_boot=400, seed=seed).set_index("model").loc["b"]
        covered += r["delta_ci_low"] <= truth <= r["delta_ci_high"]
    assert covered >= 17  # nominal 95 %: 19 of 20 expected


def test_equal_models_include_zero_and_p_is_roughly_uniform():
    """Same true risk plus independent noise of equal size: no difference in the population."""
    p_values, covers = [], []
    for seed in range(30):
        r = paired_bootstrap(_folds(_simulate(600, 200 + seed, 1.0, 1.0)), ["a", "b"], reference="a",
                             n_boot=300, seed=seed).set_index("model").loc["b"]
        p_values.append(r["delta_p"])
        covers.append(r["delta_ci_low"] <= 0 <= r["delta_ci_high"])
    p_values = np.array(p_values)
    assert covers[0] and sum(covers) >= 26
    assert np.mean(p_values < 0.05) <= 0.15 and 0.3 <= p_values.mean() <= 0.7
    assert np.mean(p_values > 0.5) >= 0.3  # spread over [0, 1], not piled near 0


def test_identical_predictions_give_zero_and_p_one():
    folds = _folds(_simulate(300, 5, 1.0, 1.0, shared_b=True))
    r = paired_bootstrap(folds, ["a", "b"], reference="a", n_boot=200, seed=3).set_index("model").loc["b"]
    assert r["delta_vs_reference"] == 0 and r["delta_ci_low"] == 0 == r["delta_ci_high"] and r["delta_p"] == 1.0
    assert paired_p(np.zeros(10)) == 1.0
    assert paired_p(np.full(999, -0.1)) == pytest.approx(2 / 1000)


def test_bootstrap_is_deterministic_and_resamples_patients_across_repeats():
    """A second repeat that tests the same patients again adds no information: resampling
    patients (not each fold on its own) leaves the intervals unchanged."""
    folds = _folds(_simulate(300, 6, 0.5, 1.0))
    once = paired_bootstrap(folds, ["a", "b"], reference="a", n_boot=300, seed=4)
    pd.testing.assert_frame_equal(once, paired_bootstrap(folds, ["a", "b"], reference="a", n_boot=300, seed=4))
    twice = paired_bootstrap(folds + [f.copy() for f in folds], ["a", "b"], reference="a", n_boot=300, seed=4)
    pd.testing.assert_frame_equal(once, twice)
    other_seed = paired_bootstrap(folds, ["a", "b"], reference="a", n_boot=300, seed=5)
    assert other_seed.loc[1, "delta_ci_low"] != once.loc[1, "delta_ci_low"]


def test_no_reference_model():
    folds = _folds(_simulate(100, 7, 0.5, 1.0))
    r = paired_bootstrap(folds, ["a", "b"], reference="healnet", n_boot=50)
    assert r["delta_vs_reference"].isna().all() and (r["reference"] == "").all()
    assert r["harrell_ci_low"].notna().all()
