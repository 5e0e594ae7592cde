"""healnet.evaluate: per-fold and summary tables, Kaplan–Meier plots with their log-rank test, and
loading a cohort from the pipeline's outputs."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2
from sksurv.compare import compare_survival

from healnet.evaluate import evaluate_cohort, kaplan_meier_plot, load_cohort, metrics_table, summary_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _fold_files(root, c_indices: dict[str, list[float]]) -> dict[str, list[str]]:
    paths = {}
    for model, values in c_indices.items():
        for k, c in enumerate(values):
            path = root / "models" / model / f"fold{k}" / "metrics.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps({"fold": k, "c_index": c, "n_test": 10 + k, "n_test_events": 4,
                                        "best_epoch": 2 * k, "n_train": 30}))
            paths.setdefault(model, []).append(str(path))
    return paths


C_INDICES = {"healnet": [0.71, 0.64, 0.80, 0.69], "baseline": [0.55, 0.61, 0.58, 0.52]}


def test_metrics_and_summary_tables(tmp_path):
    paths = _fold_files(tmp_path, C_INDICES)
    metrics = metrics_table({m: list(reversed(p)) for m, p in paths.items()})  # order of the files does not matter
    assert list(metrics["model"]) == ["baseline"] * 4 + ["healnet"] * 4
    assert list(metrics["fold"]) == [0, 1, 2, 3] * 2
    np.testing.assert_array_equal(metrics.loc[metrics["model"] == "healnet", "c_index"], C_INDICES["healnet"])
    assert list(metrics["n_test"]) == [10, 11, 12, 13] * 2
    assert list(metrics["best_epoch"]) == [0, 2, 4, 6] * 2
    summary = summary_table(metrics, oracle_c_index=0.9).set_index("model")
    for model, values in C_INDICES.items():
        assert summary.loc[model, "c_index_mean"] == pytest.approx(np.mean(values))
        assert summary.loc[model, "c_index_std"] == pytest.approx(np.std(values, ddof=1))
        assert summary.loc[model, "n_folds"] == len(values)
    assert (summary["oracle_c_index"] == 0.9).all()
    assert "oracle_c_index" not in summary_table(metrics).columns


def _logrank_p(time, event, group) -> float:
    """Two-group log-rank test written out: sum over event times of observed − expected deaths in
    group 1 and its hypergeometric variance."""
    o_minus_e, var = 0.0, 0.0
    for t in np.unique(time[event]):
        at_risk = time >= t
        n, n1 = at_risk.sum(), (at_risk & group).sum()
        d = ((time == t) & event).sum()
        d1 = ((time == t) & event & group).sum()
        o_minus_e += d1 - d * n1 / n
        if n > 1:
            var += d * (n1 / n) * (1 - n1 / n) * (n - d) / (n - 1)
    return float(chi2.sf(o_minus_e**2 / var, 1))


def _predictions(n=40, seed=0, separation=1.0):
    rng = np.random.default_rng(seed)
    risk = rng.permutation(n).astype(float)  # high risk: the top half, by construction
    high = risk >= n / 2
    time = np.round(rng.exponential(1000, n) * np.exp(-separation * high)) + 1
    event = rng.random(n) < 0.7
    return pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "risk": risk, "time": time, "event": event.astype(int)}), high


@pytest.mark.parametrize("seed,separation", [(0, 1.5), (1, 0.0), (2, 0.7)])
def test_kaplan_meier_plot_and_log_rank(tmp_path, seed, separation):
    predictions, high = _predictions(seed=seed, separation=separation)
    out = tmp_path / "km.png"
    p = kaplan_meier_plot(predictions, out, title="test")
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 5000
    y = np.array(list(zip(predictions["event"].astype(bool), predictions["time"])), dtype=[("event", bool), ("time", float)])
    assert p == pytest.approx(compare_survival(y, high)[1])
    assert p == pytest.approx(_logrank_p(predictions["time"].to_numpy(), predictions["event"].to_numpy(bool), high),
                              rel=1e-6)
    assert [q.name for q in tmp_path.iterdir()] == ["km.png"]


def test_clear_separation_gives_a_small_p(tmp_path):
    predictions, _ = _predictions(n=60, seed=3, separation=2.5)
    assert kaplan_meier_plot(predictions, tmp_path / "km.png") < 1e-3


def test_single_risk_group_has_no_test(tmp_path):
    predictions, _ = _predictions(n=10)
    predictions["risk"] = 0.3
    assert np.isnan(kaplan_meier_plot(predictions, tmp_path / "km.png"))
    assert (tmp_path / "km.png").read_bytes()[:8] == PNG_MAGIC


def test_evaluate_cohort_writes_all_tables(tmp_path):
    paths = _fold_files(tmp_path, C_INDICES)
    predictions = []
    for k in range(4):
        df, _ = _predictions(n=12, seed=k)
        path = tmp_path / "models" / "healnet" / f"fold{k}" / "predictions.tsv"
        df.assign(fold=k).to_csv(path, sep="\t", index=False)
        predictions.append(str(path))
    oracle = tmp_path / "oracle.json"
    oracle.write_text(json.dumps({"c_index": 0.85}))
    out = tmp_path / "eval"
    summary = evaluate_cohort(paths["healnet"] + paths["baseline"], predictions, ["healnet", "baseline"],
                              out / "metrics.tsv", out / "summary.tsv", out / "km.png", oracle=oracle)
    assert set(summary["model"]) == {"healnet", "baseline"}
    written = pd.read_csv(out / "summary.tsv", sep="\t").set_index("model")
    assert written.loc["healnet", "c_index_mean"] == pytest.approx(np.mean(C_INDICES["healnet"]), abs=1e-4)
    assert written.loc["healnet", "oracle_c_index"] == pytest.approx(0.85)
    assert len(pd.read_csv(out / "metrics.tsv", sep="\t")) == 8
    assert (out / "km.png").read_bytes()[:8] == PNG_MAGIC


def test_load_cohort_from_pipeline_outputs(processed, demo_cohort, demo_files, demo_truth, tmp_path):
    from preprocessing.clinical import write_survival_table
    from preprocessing.inventory import rna_files_of
    from preprocessing.omics import write_rna_tables

    clinical = tmp_path / "survival.parquet"
    table = write_survival_table(demo_cohort["clinical"], demo_files, clinical)
    rna = tmp_path / "rna.parquet"
    write_rna_tables(rna_files_of(demo_files), rna, tmp_path / "genes.tsv", tmp_path / "aside.tsv")
    # one case loses its clinical validity: it must not be loaded
    dropped = table["case_id"].iloc[0]
    table.loc[0, ["status", "reason"]] = ["excluded", "no survival time"]
    table.to_parquet(clinical, index=False)
    stores = sorted(map(str, processed["features"].glob("*.zarr")))
    cohort = load_cohort(clinical, stores, {"rna": rna})
    truth = demo_truth.set_index("case_submitter_id")
    has_modality = truth[((truth["n_slides"] > truth["n_blank_slides"]) | (truth["has_rna"] == 1))].index
    assert set(cohort.case_ids) == set(has_modality) - {dropped}
    assert list(cohort.survival.columns) == ["time", "event"]
    np.testing.assert_array_equal(cohort.survival["time"], truth.loc[cohort.case_ids, "time"])
    assert set(cohort.omics["rna"].index) == set(truth[truth["has_rna"] == 1].index)
    rna_only = load_cohort(clinical, [], {"rna": rna})
    assert set(rna_only.case_ids) == set(truth[truth["has_rna"] == 1].index) - {dropped}
