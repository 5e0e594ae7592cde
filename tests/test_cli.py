"""``healnet cv`` on a small generated table cohort: folds, per-fold outputs, the evaluation
tables (checked against scikit-survival), resuming, and clear errors."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from sksurv.metrics import concordance_index_censored

from healnet.cli import main

N = 48


@pytest.fixture
def tables(tmp_path):
    """RNA (all cases; gene 0 carries the risk), CNV (36 cases) and a clinical table with 3 extra
    cases that have no omics and 1 with a negative time."""
    rng = np.random.default_rng(0)
    ids = [f"TCGA-AB-{i:04d}" for i in range(N)]
    z = rng.normal(size=N)
    rna = pd.DataFrame(np.exp(rng.normal(2, 0.5, (N, 20))), index=pd.Index(ids, name="case_id"),
                       columns=[f"ENSG{i:011d}" for i in range(20)])
    rna.iloc[:, 0] = np.exp(2 + 2 * z)
    rna.to_csv(tmp_path / "rna.tsv", sep="\t")
    cnv = pd.DataFrame(rng.normal(size=(36, 6)), index=pd.Index(ids[12:], name="case_id"),
                       columns=[f"ENSG9{i:010d}" for i in range(6)])
    cnv.to_csv(tmp_path / "cnv.csv")
    time = np.round(rng.exponential(np.exp(-1.5 * z)) * 1000) + 1
    clin = pd.DataFrame({"case_id": ids + ["TCGA-AB-9001", "TCGA-AB-9002", "TCGA-AB-9003"],
                         "time": list(time) + [100, 200, 300], "event": list((rng.random(N) < 0.75).astype(int)) + [1, 0, 1]})
    clin.loc[5, "time"] = -3  # excluded
    clin.to_csv(tmp_path / "clinical.tsv", sep="\t", index=False)
    return tmp_path, clin.set_index("case_id")


def _args(root, out, *extra):
    return ["cv", "--omics", f"rna={root / 'rna.tsv'}", "--omics", f"cnv={root / 'cnv.csv'}", "--clinical",
            str(root / "clinical.tsv"), "--folds", "3", "--epochs", "2", "--device", "cpu", "--out", str(out), *extra]


def test_cv_on_tables(tables, capsys):
    root, clin = tables
    out = root / "out"
    assert main(_args(root, out, "--models", "healnet", "coxnet")) == 0
    printed = capsys.readouterr().out
    assert "coxnet" in printed and "healnet" in printed

    folds = json.loads((out / "splits.json").read_text())["folds"]
    used = set(clin.index[:N]) - {clin.index[5]}  # valid time and some omics
    tested = [c for f in folds for c in f["test"]]
    assert sorted(tested) == sorted(used) and len(folds) == 3
    for f in folds:
        assert not set(f["train"]) & set(f["test"]) and not set(f["val"]) & set(f["test"])

    metrics = pd.read_csv(out / "metrics.tsv", sep="\t")
    assert sorted(zip(metrics["model"], metrics["fold"])) == [(m, k) for m in ("coxnet", "healnet") for k in range(3)]
    for row in metrics.itertuples():
        preds = pd.read_csv(out / "models" / row.model / f"fold{row.fold}" / "predictions.tsv", sep="\t")
        assert sorted(preds["case_id"]) == sorted(folds[row.fold]["test"])
        expected = concordance_index_censored(preds["event"].astype(bool), preds["time"], preds["risk"])[0]
        assert row.harrell == pytest.approx(expected, abs=1e-4)
        assert row.n_test == len(preds) and 0 <= row.uno <= 1 and 0 < row.ibs < 0.5
    summary = pd.read_csv(out / "metrics_summary.tsv", sep="\t").set_index("model")
    # the planted gene is found by the elastic-net Cox
    assert summary.loc["coxnet", "harrell_mean"] > 0.7
    missing = pd.read_csv(out / "missing_modalities.tsv", sep="\t")
    assert set(missing["model"]) == {"healnet", "coxnet"} and missing["harrell_mean"].between(0, 1).all()
    assert (out / "km.png").read_bytes()[:4] == b"\x89PNG"

    # a second run resumes: nothing is trained again, the tables are rewritten identically
    stamp = os.stat(out / "models" / "healnet" / "fold0" / "model.pt").st_mtime_ns
    before = (out / "metrics.tsv").read_text()
    assert main(_args(root, out, "--models", "healnet", "coxnet")) == 0
    assert os.stat(out / "models" / "healnet" / "fold0" / "model.pt").st_mtime_ns == stamp
    assert (out / "metrics.tsv").read_text() == before


@pytest.mark.parametrize("extra,message", [
    (["--models", "abmil"], "none of its modalities"),  # the WSI-only baseline on tables
    (["--models", "transformer"], "unknown architecture"),
    (["--models", "coxnet", "coxnet"], "twice"),
])
def test_cv_errors(tables, capsys, extra, message):
    root, _ = tables
    assert main(_args(root, root / "bad", *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (root / "bad" / "models").exists()


def test_cv_rejects_a_malformed_omics_argument(tables):
    root, _ = tables
    with pytest.raises(SystemExit, match="NAME=PATH"):
        main(["cv", "--omics", str(root / "rna.tsv"), "--clinical", str(root / "clinical.tsv"), "--out", str(root / "x")])
