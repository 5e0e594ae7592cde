"""healnet.evaluate: per-fold and summary tables (metrics recomputed from the predictions against
scikit-survival), the missing-modality table, Kaplan–Meier plots with their log-rank test, and
loading a cohort from the pipeline's outputs."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2
from sksurv.compare import compare_survival
from sksurv.metrics import concordance_index_censored, concordance_index_ipcw, integrated_brier_score
from sksurv.util import Surv

from healnet.data import open_cohort
from healnet.evaluate import evaluate_cohort, metrics_table, missing_table, model_fold, summary_table
from healnet.kaplan_meier import kaplan_meier_plot, risk_groups

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EDGES = [0.0, 300.0, 700.0, 1500.0, float("inf")]


def _cohort(n=60, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"c{i:03d}" for i in range(n)]
    survival = pd.DataFrame({"time": np.round(rng.exponential(900, n)) + 1, "event": (rng.random(n) < 0.7).astype(int)},
                            index=ids)
    splits = []
    for k in range(3):
        test = ids[k::3]
        rest = [c for c in ids if c not in test]
        splits.append({"train": rest[:30], "val": rest[30:], "test": test})
    return survival, splits


def _write_fold(root, model, fold, survival, split, *, seed, surv=True, best_epoch=None):
    rng = np.random.default_rng(seed)
    test = survival.loc[split["test"]]
    risk = -np.log(test["time"].to_numpy()) + rng.normal(0, 1.0, len(test))
    preds = pd.DataFrame({"case_id": test.index, "fold": fold, "risk": risk, "time": test["time"].to_numpy(),
                          "event": test["event"].to_numpy()})
    if surv:
        s = np.cumprod(rng.uniform(0.6, 0.95, (len(test), 4)), axis=1)
        for k in range(4):
            preds[f"surv_{k}"] = s[:, k]
    d = root / "models" / model / f"fold{fold}"
    d.mkdir(parents=True)
    preds.to_csv(d / "predictions.tsv", sep="\t", index=False)
    (d / "metrics.json").write_text(json.dumps({"fold": fold, "c_index": 0.123, "bin_edges": EDGES,
                                                "best_epoch": fold if best_epoch is None else best_epoch}))
    return str(d / "metrics.json"), str(d / "predictions.tsv"), preds


def _runs(root, survival, splits, models=("healnet", "coxnet")):
    meta, preds, tables = [], [], {}
    for i, model in enumerate(models):
        for k, split in enumerate(splits):
            m, p, t = _write_fold(root, model, k, survival, split, seed=10 * i + k, surv=model != "coxnet-nosurv")
            meta.append(m)
            preds.append(p)
            tables[model, k] = t
    return meta, preds, tables


def _step(s, times):
    """Survival at times from per-bin survival, written out: 1 in bin 0, else the previous bin's end."""
    out = np.ones((len(s), len(times)))
    for j, t in enumerate(times):
        k = max(b for b in range(4) if EDGES[b] <= t)
        out[:, j] = 1.0 if k == 0 else s[:, k - 1]
    return out


def test_model_fold_from_path():
    assert model_fold("results/x/models/late-fusion/fold3/metrics.json") == ("late-fusion", 3)
    with pytest.raises(ValueError, match="models/<model>/fold<k>"):
        model_fold("results/x/metrics.json")


def test_metrics_table_against_sksurv(tmp_path):
    survival, splits = _cohort()
    meta, preds, tables = _runs(tmp_path, survival, splits)
    table = metrics_table(list(reversed(meta)), preds, survival=survival, splits=splits)  # file order is irrelevant
    assert list(table["model"]) == ["coxnet"] * 3 + ["healnet"] * 3 and list(table["fold"]) == [0, 1, 2] * 2
    for row in table.itertuples():
        p = tables[row.model, row.fold]
        train = survival.loc[splits[row.fold]["train"]]
        y_train = Surv.from_arrays(event=train["event"].astype(bool), time=train["time"])
        y_test = Surv.from_arrays(event=p["event"].astype(bool), time=p["time"])
        assert row.harrell == pytest.approx(concordance_index_censored(p["event"].astype(bool), p["time"], p["risk"])[0])
        assert not hasattr(row, "c_index")  # one name for Harrell's: harrell
        tau = np.quantile(train["time"], 0.8)  # Uno: truncated at the 80th percentile of training follow-up
        assert row.uno == pytest.approx(concordance_index_ipcw(y_train, y_test, p["risk"].to_numpy(), tau=tau)[0])
        assert row.n_test == len(p) and row.events == p["event"].sum() and row.best_epoch == row.fold
        assert row.repeat == 0 and row.n_left_out == 0
        # IBS at the documented times; test cases beyond the last training time are censored there
        tau = train["time"].max()
        times = np.unique(np.quantile(p["time"], np.linspace(0.1, 0.9, 17)))
        times = times[(times >= p["time"].min()) & (times < min(p["time"].max(), tau))]
        late = p["time"].to_numpy() >= tau
        t_c = np.where(late, (times[-1] + tau) / 2, p["time"])
        y_c = Surv.from_arrays(event=p["event"].astype(bool).to_numpy() & ~late, time=t_c)
        s = p[[f"surv_{k}" for k in range(4)]].to_numpy()
        assert row.ibs == pytest.approx(integrated_brier_score(y_train, y_c, _step(s, times), times))
        assert row.harrell_reason == row.uno_reason == row.ibs_reason == ""


def test_metrics_table_nan_reasons(tmp_path):
    survival, splits = _cohort()
    survival.loc[splits[1]["test"], "event"] = 0  # fold 1 has no test event
    meta, preds, _ = _runs(tmp_path, survival, splits, models=("healnet",))
    table = metrics_table(meta, preds).set_index("fold")  # no survival/splits: Uno and IBS unknown
    assert math.isnan(table.loc[1, "harrell"]) and "no event" in table.loc[1, "harrell_reason"]
    assert table[["uno", "ibs"]].isna().all().all() and "unknown" in table.loc[0, "uno_reason"]
    with pytest.raises(ValueError, match="pair up"):
        metrics_table(meta, preds[:2])


def test_summary_table():
    rng = np.random.default_rng(0)
    metrics = pd.DataFrame({"model": ["a"] * 4 + ["b"] * 3, "fold": [0, 1, 2, 3, 0, 1, 2],
                            "harrell": rng.uniform(0.5, 0.8, 7), "uno": rng.uniform(0.5, 0.8, 7),
                            "ibs": [0.2, np.nan, 0.25, 0.22, 0.3, 0.1, 0.2]})
    summary = summary_table(metrics, oracle_c_index=0.9, logrank={"a": 0.01}).set_index("model")
    for model, group in metrics.groupby("model"):
        for m in ("harrell", "uno"):
            assert summary.loc[model, f"{m}_mean"] == pytest.approx(np.mean(group[m]))
            assert summary.loc[model, f"{m}_std"] == pytest.approx(np.std(group[m], ddof=1))
        assert summary.loc[model, "n_folds"] == len(group)
    assert summary.loc["a", "ibs_mean"] == pytest.approx(np.mean([0.2, 0.25, 0.22])) and summary.loc["a", "ibs_folds"] == 3
    assert not [c for c in summary.columns if c.startswith("c_index")]  # Harrell's is ``harrell``: no second name
    assert summary.loc["a", "logrank_p"] == 0.01 and math.isnan(summary.loc["b", "logrank_p"])
    assert (summary["oracle_c_index"] == 0.9).all()
    assert "oracle_c_index" not in summary_table(metrics).columns


def test_missing_table(tmp_path):
    rng = np.random.default_rng(1)
    paths, expected = [], {}
    for k in range(3):
        rows = []
        for scenario in ("mix-50", "no-rna", "all", "no-wsi"):
            n = 15
            t, e, r = rng.exponential(500, n) + 1, rng.random(n) < 0.7, rng.normal(size=n)
            rows.append(pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "fold": k, "scenario": scenario,
                                      "risk": r, "time": t, "event": e.astype(int)}))
            expected.setdefault(scenario, []).append(concordance_index_censored(e, t, r)[0])
        path = tmp_path / "models" / "healnet" / f"fold{k}" / "missing.tsv"
        path.parent.mkdir(parents=True)
        pd.concat(rows).to_csv(path, sep="\t", index=False)
        paths.append(str(path))
    table = missing_table(paths)
    assert list(table["scenario"]) == ["all", "no-rna", "no-wsi", "mix-50"] and set(table["model"]) == {"healnet"}
    for row in table.itertuples():
        assert row.harrell_mean == pytest.approx(np.mean(expected[row.scenario]))
        assert row.harrell_std == pytest.approx(np.std(expected[row.scenario], ddof=1))
        assert row.n_folds == 3 and row.n_cases == 45
    assert list(missing_table([]).columns) == ["model", "scenario", "harrell_mean", "harrell_std", "n_folds", "n_cases"]


def test_missing_curves_table_and_plot(tmp_path):
    """Per model, removal set and fraction: the fold mean of Harrell's c-index (scikit-survival's,
    computed here per fold), a 95 % t-interval over folds, and fraction 0 = the ``full`` scenario;
    the other scenarios stay out of the curves and the curves stay out of missing_table."""
    from scipy import stats

    from healnet.missing_curves import curves_plot, curves_table

    rng = np.random.default_rng(2)
    fold_missing, expected = {}, {}
    for k in range(3):
        rows = []
        for scenario, removed, fraction in [("full", "", ""), ("no_rna", "", ""), ("rna@0.5", "rna", 0.5),
                                            ("rna@0.9", "rna", 0.9), ("wsi@0.5", "wsi", 0.5)]:
            n = 20
            t, e, r = rng.exponential(500, n) + 1, rng.random(n) < 0.7, rng.normal(size=n)
            rows.append(pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "fold": k, "scenario": scenario,
                                      "removed": removed, "fraction": fraction, "dropped": "", "risk": r,
                                      "time": t, "event": e.astype(int)}))
            expected.setdefault(scenario, []).append(concordance_index_censored(e, t, r)[0])
        path = tmp_path / "models" / "healnet" / f"fold{k}" / "missing.tsv"
        path.parent.mkdir(parents=True)
        pd.concat(rows).to_csv(path, sep="\t", index=False)
        fold_missing["healnet", k] = str(path)
    table = curves_table(fold_missing)
    assert set(table["mode"]) == {"test"}
    assert [(r.removed, r.fraction) for r in table.itertuples()] == [("rna", 0.0), ("rna", 0.5), ("rna", 0.9),
                                                                      ("wsi", 0.0), ("wsi", 0.5)]
    for row in table.itertuples():
        scenario = "full" if row.fraction == 0 else f"{row.removed}@{row.fraction:g}"
        values = expected[scenario]
        half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / np.sqrt(3)
        assert row.harrell_mean == pytest.approx(np.mean(values))
        assert (row.ci_low, row.ci_high) == pytest.approx((np.mean(values) - half, np.mean(values) + half))
        assert row.n_folds == 3 and row.n_cases == 60
    assert set(missing_table(list(fold_missing.values()))["scenario"]) == {"full", "no_rna"}
    curves_plot(table, tmp_path / "curves.png", "demo")
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def test_risk_groups_use_each_folds_median():
    # fold 1's model outputs risks on a scale 100× larger: a pooled median would put all of it "high"
    preds = pd.DataFrame({"fold": [0] * 4 + [1] * 4, "risk": [1, 2, 3, 4, 100, 200, 300, 400]})
    assert risk_groups(preds).tolist() == [False, False, True, True] * 2
    assert risk_groups(preds.drop(columns="fold")).tolist() == [False] * 4 + [True] * 4


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
    survival, splits = _cohort()
    meta, preds, tables = _runs(tmp_path, survival, splits)
    missing = tmp_path / "models" / "healnet" / "fold0" / "missing.tsv"
    tables["healnet", 0].assign(scenario="all").to_csv(missing, sep="\t", index=False)
    oracle = tmp_path / "oracle.json"
    oracle.write_text(json.dumps({"c_index": 0.85}))
    out = tmp_path / "eval"
    summary = evaluate_cohort(meta, preds, metrics_out=out / "metrics.tsv", summary_out=out / "summary.tsv",
                              km_out=out / "km.png", missing_out=out / "missing.tsv", fold_missing=[str(missing)],
                              survival=survival, splits=splits, oracle=oracle, title="tiny")
    assert set(summary["model"]) == {"healnet", "coxnet"}
    metrics = pd.read_csv(out / "metrics.tsv", sep="\t")
    assert len(metrics) == 6 and metrics[["harrell", "uno", "ibs"]].notna().all().all()
    written = pd.read_csv(out / "summary.tsv", sep="\t").set_index("model")
    h = metrics[metrics["model"] == "healnet"]["harrell"]
    assert written.loc["healnet", "harrell_mean"] == pytest.approx(h.mean(), abs=1e-4)
    assert written.loc["healnet", "oracle_c_index"] == pytest.approx(0.85)
    pooled = pd.concat(tables["healnet", k] for k in range(3))
    high = risk_groups(pooled)
    y = np.array(list(zip(pooled["event"].astype(bool), pooled["time"])), dtype=[("event", bool), ("time", float)])
    assert written.loc["healnet", "logrank_p"] == pytest.approx(compare_survival(y, high)[1], abs=1e-4)
    miss = pd.read_csv(out / "missing.tsv", sep="\t")
    fold0 = metrics[(metrics["model"] == "healnet") & (metrics["fold"] == 0)]
    assert miss.loc[0, "harrell_mean"] == pytest.approx(fold0["harrell"].iloc[0], abs=1e-4)
    png = (out / "km.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 20000
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


def test_open_cohort_from_pipeline_outputs(processed, demo_cohort, demo_files, demo_truth, tmp_path):
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
    cohort = open_cohort(clinical, stores, {"rna": rna})
    truth = demo_truth.set_index("case_submitter_id")
    has_modality = truth[((truth["n_slides"] > truth["n_blank_slides"]) | (truth["has_rna"] == 1))].index
    assert set(cohort.case_ids) == set(has_modality) - {dropped}
    assert list(cohort.survival.columns) == ["time", "event"]
    np.testing.assert_array_equal(cohort.survival["time"], truth.loc[cohort.case_ids, "time"])
    assert set(cohort.omics["rna"].index) == set(truth[truth["has_rna"] == 1].index)
    rna_only = open_cohort(clinical, [], {"rna": rna})
    assert set(rna_only.case_ids) == set(truth[truth["has_rna"] == 1].index) - {dropped}


def _partial_runs(root, survival, splits, drop: dict[str, int]):
    """Models that predict different cases: ``model`` leaves out every case whose number is a
    multiple of ``drop[model]`` (as a model needing a modality those cases lack would)."""
    meta, preds, tables = [], [], {}
    for i, (model, every) in enumerate(drop.items()):
        for k, split in enumerate(splits):
            test = [c for c in split["test"] if not every or int(c[1:]) % every]
            m, p, t = _write_fold(root, model, k, survival, {**split, "test": test}, seed=10 * i + k)
            meta.append(m)
            preds.append(p)
            tables[model, k] = t
    return meta, preds, tables


def _concordance(table) -> float:
    return concordance_index_censored(table["event"].astype(bool), table["time"], table["risk"])[0]


def test_models_are_compared_on_the_same_cases(tmp_path, caplog):
    survival, splits = _cohort(n=90)
    # two repeats of three folds: fold k = repeat * 3 + fold_in_repeat; repeat 1 reverses the case order
    ids = list(survival.index)
    splits = [{**s, "repeat": 0} for s in splits] + [
        {"train": [c for c in ids if c not in ids[::-1][k::3]], "val": [], "test": ids[::-1][k::3], "repeat": 1}
        for k in range(3)]
    drop = {"healnet": 0, "coxnet": 4, "abmil": 5}
    meta, preds, tables = _partial_runs(tmp_path, survival, splits, drop)
    out = tmp_path / "eval"
    with caplog.at_level("INFO", logger="healnet.evaluate"):
        summary = evaluate_cohort(meta, preds, metrics_out=out / "metrics.tsv", summary_out=out / "summary.tsv",
                                  km_out=out / "km.png", all_cases_out=out / "all.tsv", headline_out=out / "headline.rst",
                                  survival=survival, splits=splits, n_boot=200, title="tiny")
    metrics = pd.read_csv(out / "metrics.tsv", sep="\t")
    everything = pd.read_csv(out / "all.tsv", sep="\t")
    assert list(metrics["repeat"]) == [0, 0, 0, 1, 1, 1] * 3
    per_fold = {}
    for row in metrics.itertuples():
        common = set.intersection(*(set(tables[m, row.fold]["case_id"]) for m in drop))
        assert not any(int(c[1:]) % 4 == 0 or int(c[1:]) % 5 == 0 for c in common)
        p = tables[row.model, row.fold]
        on_common = p[p["case_id"].isin(common)]
        assert row.n_test == len(common) and row.n_left_out == len(p) - len(common)
        assert row.harrell == pytest.approx(_concordance(on_common), abs=1e-4)
        per_fold.setdefault(row.model, []).append(_concordance(on_common))
    assert metrics.groupby("fold")["n_test"].nunique().eq(1).all()  # every model on the same cases
    for row in everything.itertuples():  # each model on all the cases it predicted
        p = tables[row.model, row.fold]
        assert row.n_test == len(p) and row.n_left_out == 0
        assert row.harrell == pytest.approx(_concordance(p), abs=1e-4)
    assert everything.groupby("fold")["n_test"].nunique().gt(1).all()
    written = pd.read_csv(out / "summary.tsv", sep="\t").set_index("model")
    for model in drop:
        assert written.loc[model, "harrell_mean"] == pytest.approx(np.mean(per_fold[model]), abs=1e-4)
        assert written.loc[model, "harrell_ci_low"] < written.loc[model, "harrell_mean"] < written.loc[model, "harrell_ci_high"]
        all_folds = [_concordance(tables[model, k]) for k in range(6)]
        assert written.loc[model, "all_cases_harrell_mean"] == pytest.approx(np.mean(all_folds), abs=1e-4)
        assert written.loc[model, "all_cases_n_test_cases"] == len({c for k in range(6) for c in tables[model, k]["case_id"]})
    n_common = len([c for c in ids if int(c[1:]) % 4 and int(c[1:]) % 5])
    assert (written["n_test_cases"] == n_common).all() and (written["n_folds"] == 6).all()
    assert (written["reference"] == "healnet").all() and np.isnan(written.loc["healnet", "delta_p"])
    for model in ("coxnet", "abmil"):
        expected = np.mean(per_fold[model]) - np.mean(per_fold["healnet"])
        assert written.loc[model, "delta_vs_reference"] == pytest.approx(expected, abs=1e-4)
        assert written.loc[model, "delta_ci_low"] <= written.loc[model, "delta_vs_reference"] <= written.loc[model, "delta_ci_high"]
        assert 0 < written.loc[model, "delta_p"] <= 1
    assert summary.set_index("model").loc["abmil", "n_folds"] == 6
    # the log says what was left out, per fold and model
    left_out = [r.getMessage() for r in caplog.records if "common to all models" in r.getMessage()]
    assert len(left_out) == 6
    for fold, message in enumerate(left_out):
        rows = metrics[metrics["fold"] == fold]
        assert message.startswith(f"fold {fold}: {rows['n_test'].iloc[0]} test cases common")
        for row in rows.itertuples():
            assert f"{row.model} {row.n_left_out}" in message
    headline = (out / "headline.rst").read_text()
    assert "tiny" in headline and f"{written.loc['coxnet', 'harrell_mean']:.3f}" in headline and "reference" in headline
    from docutils.core import publish_parts

    html = publish_parts(headline, writer="html", settings_overrides={"halt_level": 2, "report_level": 5})["body"]
    assert html.count("<tr>") == 4 and "coxnet" in html  # header + three models


def test_config_schema_has_the_evaluate_settings():
    """`evaluate:` reference_model, bootstrap and bootstrap_seed (read by workflow/rules/evaluate.smk)
    are allowed by the config schema, whose defaults (the only ones: the rule file reads config) are
    the keyword defaults of healnet.evaluate.evaluate_cohort and healnet.faithfulness."""
    import inspect
    from pathlib import Path

    import yaml
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    from healnet import faithfulness
    from healnet.evaluate import evaluate_cohort
    from preprocessing.settings import schema_defaults

    repo = Path(__file__).resolve().parents[1]
    schema = str(repo / "workflow" / "schemas" / "config.schema.yaml")
    assert "EVALUATE" not in (repo / "workflow" / "rules" / "evaluate.smk").read_text()  # no second copy
    config = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    config["evaluate"] = {"reference_model": "coxnet", "bootstrap": 200, "bootstrap_seed": 7}
    validate(config, schema)
    config["evaluate"] = {}
    validate(config, schema)  # fills in the defaults
    assert config["evaluate"] == schema_defaults()["evaluate"]
    assert set(config["evaluate"]) >= {"reference_model", "bootstrap", "bootstrap_seed"}
    defaults = config["evaluate"]
    kw = {k: p.default for k, p in inspect.signature(evaluate_cohort).parameters.items()}
    assert (defaults["reference_model"], defaults["bootstrap"], defaults["bootstrap_seed"]) == (
        kw["reference"], kw["n_boot"], kw["seed"])
    kw = {k: p.default for k, p in inspect.signature(faithfulness.faithfulness_report).parameters.items()}
    assert (defaults["faithfulness_cases"], tuple(defaults["deletion_fractions"]), defaults["deletion_repeats"],
            defaults["ig_steps"]) == (kw["max_cases"], tuple(kw["fractions"]), kw["n_random"], kw["ig_steps"])
    for bad in ({"bootstrap": 0}, {"bootstrap_seed": "x"}, {"bootstrap_replicates": 10}):
        config["evaluate"] = bad
        with pytest.raises(WorkflowError):
            validate(config, schema)
