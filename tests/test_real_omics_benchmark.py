"""Smoke test of ``benchmarks/real_omics.py`` on a tiny generated PORPOISE table (no real data needed)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]

README = """# Toy omics with survival

| file | patients | deaths | rnaseq | cnv | mut |
|---|---|---|---|---|---|
| tcga_toy_all_clean.csv.zip | {patients} | {deaths} | 6 | 3 | 3 |

An elastic-net Cox model (scikit-survival `CoxnetSurvivalAnalysis`, l1_ratio 0.5, all features
z-scored on the training fold, the penalty in the middle of its path, no tuning), stratified
5-fold by event, seed 0, reaches Harrell's c-index: TOY 0.700 ± 0.050. A survival network worth
using beats that.
"""


def _benchmark():
    spec = importlib.util.spec_from_file_location("real_omics_benchmark", ROOT / "benchmarks" / "real_omics.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _toy_table(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """PORPOISE layout: one row per slide (some patients have two), survival driven by g0, g1, c0, m0."""
    rng = np.random.default_rng(seed)
    rna = rng.standard_normal((n, 6))
    cnv = rng.integers(-2, 3, (n, 3))
    mut = (rng.random((n, 3)) < 0.3).astype(int)
    risk = 1.2 * rna[:, 0] - 0.8 * rna[:, 1] + 0.5 * cnv[:, 0] + 0.8 * mut[:, 0]
    event_time = rng.exponential(40 * np.exp(-risk))
    censor_time = rng.uniform(5, 120, n)
    table = pd.DataFrame({"case_id": [f"TCGA-XX-{i + 1:04d}" for i in range(n)],
                          "slide_id": [f"TCGA-XX-{i + 1:04d}-01Z-00-DX1.svs" for i in range(n)],
                          "age": rng.integers(30, 80, n), "survival_months": np.round(np.minimum(event_time, censor_time), 2),
                          "censorship": (censor_time < event_time).astype(int)})
    for i in range(6):
        table[f"g{i}_rnaseq"] = rna[:, i]
    for i in range(3):
        table[f"c{i}_cnv"] = cnv[:, i]
    for i in range(3):
        table[f"m{i}_mut"] = mut[:, i]
    second = table.iloc[::7].copy()  # a second diagnostic slide for some patients: same patient data
    second["slide_id"] = second["slide_id"].str.replace("DX1", "DX2")
    return pd.concat([table, second]).sort_values(["case_id", "slide_id"]).reset_index(drop=True)


def _elastic_net(table: pd.DataFrame, per_patient: bool = True) -> tuple[float, float]:
    """The README protocol, written out independently of the benchmark (``per_patient=False``: on
    the table's slide rows as they come)."""
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler
    from sksurv.linear_model import CoxnetSurvivalAnalysis
    from sksurv.metrics import concordance_index_censored
    from sksurv.util import Surv

    patients = table.drop_duplicates("case_id") if per_patient else table
    x = patients.filter(regex=r"_(rnaseq|cnv|mut)$").to_numpy(float)
    t = patients["survival_months"].to_numpy(float)
    e = patients["censorship"].to_numpy() == 0
    scores = []
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(x, e):
        scaler = StandardScaler().fit(x[train])
        model = CoxnetSurvivalAnalysis(l1_ratio=0.5).fit(scaler.transform(x[train]), Surv.from_arrays(e[train], t[train]))
        risk = model.predict(scaler.transform(x[test]), alpha=model.alphas_[len(model.alphas_) // 2])
        scores.append(concordance_index_censored(e[test], t[test], risk)[0])
    return float(np.mean(scores)), float(np.std(scores, ddof=1))


def _elastic_net_on_folds(table: pd.DataFrame, folds: list[dict]) -> float:
    """The README protocol on the benchmark's folds (its non-test patients fit it), mean Harrell."""
    from sklearn.preprocessing import StandardScaler
    from sksurv.linear_model import CoxnetSurvivalAnalysis
    from sksurv.metrics import concordance_index_censored
    from sksurv.util import Surv

    patients = table.drop_duplicates("case_id").set_index("case_id")
    x, t = patients.filter(regex=r"_(rnaseq|cnv|mut)$").astype(float), patients["survival_months"].astype(float)
    e = patients["censorship"] == 0
    scores = []
    for fold in folds:
        fit, test = fold["train"] + fold["val"], fold["test"]
        scaler = StandardScaler().fit(x.loc[fit])
        model = CoxnetSurvivalAnalysis(l1_ratio=0.5).fit(scaler.transform(x.loc[fit]),
                                                          Surv.from_arrays(e.loc[fit], t.loc[fit]))
        risk = model.predict(scaler.transform(x.loc[test]), alpha=model.alphas_[len(model.alphas_) // 2])
        scores.append(concordance_index_censored(e.loc[test].to_numpy(), t.loc[test].to_numpy(), risk)[0])
    return float(np.mean(scores))


def test_real_omics_benchmark_on_toy_cohort(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    table = _toy_table()
    table.to_csv(data / "tcga_toy_all_clean.csv.zip", index=False)
    patients = table.drop_duplicates("case_id")
    (data / "README.md").write_text(README.format(patients=len(patients), deaths=int((patients["censorship"] == 0).sum())))

    bench = _benchmark()
    assert bench.main(["--data", str(data), "--cohorts", "toy", "--folds", "2", "--repeats", "1", "--epochs", "2",
                       "--models", "healnet", "healnet_prior", "coxnet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "TOY" in printed and "healnet >= EN - std" in printed and "healnet_prior >= EN - std" in printed

    result = pd.read_csv(out / "real_omics.tsv", sep="\t")
    assert result["cohort"].tolist() == ["toy"]
    row = result.iloc[0]
    assert (row["en_readme_mean"], row["en_readme_std"], row["en_readme_source"]) == (0.7, 0.05, "README")
    mean, std = _elastic_net(table)
    assert row["en_recomputed_mean"] == pytest.approx(mean, abs=1e-6)
    assert row["en_recomputed_std"] == pytest.approx(std, abs=1e-6)
    assert row["n_patients"] == len(patients)
    same = _elastic_net_on_folds(table, json.loads((out / "toy" / "splits.json").read_text())["folds"])
    assert row["en_same_folds_mean"] == pytest.approx(same, abs=1e-6)
    for model in ("healnet", "healnet_prior"):
        assert bool(row[f"{model}_ge_en_same_folds"]) == (row[f"{model}_mean"] >= same)
    for model in ("healnet", "healnet_prior"):  # each HEALNet run gets both verdicts, against the README's 0.7 ± 0.05
        assert bool(row[f"{model}_ge_en"]) == (row[f"{model}_mean"] >= 0.7)
        assert bool(row[f"{model}_ge_en_minus_std"]) == (row[f"{model}_mean"] >= 0.65)
    assert (out / "real_omics.md").read_text().count("| TOY |") == 1

    metrics = pd.read_csv(out / "toy" / "metrics.tsv", sep="\t")
    n_test = metrics.pivot(index="fold", columns="model", values="n_test")
    assert list(n_test.index) == [0, 1]
    assert (n_test["healnet"] == n_test["coxnet"]).all() and (n_test["healnet_prior"] == n_test["coxnet"]).all()
    assert n_test["healnet"].sum() == len(patients)
    assert bool(row["n_test_equal_across_models"])


def _linear_ceiling():
    spec = importlib.util.spec_from_file_location("linear_ceiling", ROOT / "benchmarks" / "linear_ceiling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_linear_ceiling_holds_the_readme_model_and_counts_the_variants_reaching_its_figure(tmp_path, capsys):
    """``benchmarks/linear_ceiling.py``: its README-model cell on repeat 0 is the README protocol
    written out above; its best and its count agree with the per-variant table it writes."""
    ceiling = _linear_ceiling()
    table = _toy_table(n=80)
    data = tmp_path / "data"
    data.mkdir()
    table.to_csv(data / "tcga_toy_all_clean.csv.zip", index=False)
    patients = table.drop_duplicates("case_id")
    (data / "README.md").write_text(README.format(patients=len(patients), deaths=int((patients.censorship == 0).sum())))

    scores = ceiling.variant_scores(table, repeats=2)
    readme = scores[(scores.features == "all") & (scores.l1_ratio == 0.5) & (scores.fraction == 0.5)]
    assert len(readme) == 10 and len(scores) == 10 * 48
    assert readme.loc[readme.repeat == 0, "c_index"].mean() == pytest.approx(_elastic_net(table)[0], abs=1e-12)
    assert not np.allclose(readme.loc[readme.repeat == 0, "c_index"], readme.loc[readme.repeat == 1, "c_index"])

    out = tmp_path / "out"
    assert ceiling.main(["--data", str(data), "--cohorts", "toy", "--repeats", "2", "--out", str(out)]) == 0
    variants = pd.read_csv(out / "linear_ceiling.tsv", sep="\t")
    assert len(variants) == 48 and (variants["count"] == 10).all()
    row = next(line for line in (out / "linear_ceiling.md").read_text().splitlines() if line.startswith("| TOY"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1].startswith("0.700 ± 0.050 (README)")
    assert float(cells[4].split(" ± ")[0]) == pytest.approx(variants["mean"].max(), abs=5e-4)
    assert cells[6] == f"{int((variants['mean'] >= 0.700).sum())} of 48"
    assert "TOY" in capsys.readouterr().out

    readings = pd.read_csv(out / "protocol_readings.tsv", sep="\t")
    assert len(readings) == 16 and len(readings.drop_duplicates(["rows", "split", "middle", "alpha_min_ratio"])) == 16
    stated = readings.query("split == 'stratified' and middle == 'index' and alpha_min_ratio == 'auto'").set_index("rows")
    for rows, per_patient in (("patients", True), ("slides", False)):
        assert stated.loc[rows, ["mean", "std"]].tolist() == pytest.approx(_elastic_net(table, per_patient), abs=1e-4)
    assert stated.loc["patients", "mean"] != pytest.approx(stated.loc["slides", "mean"], abs=1e-4)
    line = [line for line in (out / "linear_ceiling.md").read_text().splitlines() if line.startswith("| TOY")][1]
    cells = [c.strip() for c in line.strip("|").split("|")]
    gaps = np.maximum((readings["mean"] - 0.700).abs(), (readings["std"] - 0.050).abs())
    nearest = readings.loc[gaps.idxmin()]
    assert cells[3] == f"{nearest['mean']:.3f} ± {nearest['std']:.3f}"
    assert cells[4] == f"{int((gaps <= 0.005).sum())} of 16"
    assert cells[5] == f"{readings.loc[readings['rows'] == 'patients', 'mean'].max():.3f}"


def test_linear_ceiling_names_a_missing_table(tmp_path, capsys):
    ceiling = _linear_ceiling()
    with pytest.raises(SystemExit) as exit_:
        ceiling.main(["--data", str(tmp_path), "--cohorts", "nope", "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert f"{tmp_path / 'tcga_nope_all_clean.csv.zip'}: no such table" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
