"""``healnet cv`` on a small generated table cohort: folds, per-fold outputs, the evaluation
tables (checked against scikit-survival), resuming, and clear errors."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from sksurv.metrics import concordance_index_censored

from healnet.cli import _pairs, main
from healnet.splits import patient_groups

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
    assert main(_args(root, out, "--models", "healnet", "coxnet", "--missing-fractions", "0.5")) == 0
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
    curves = pd.read_csv(out / "missing_curves.tsv", sep="\t")  # healnet over two omics: curves; coxnet too
    assert set(curves["model"]) == {"healnet", "coxnet"} and set(curves["removed"]) == {"rna", "cnv", "rna+cnv"}
    assert sorted(curves["fraction"].unique()) == [0, 0.5]  # 0 (complete data) and the --missing-fractions
    assert (out / "missing_curves.png").read_bytes()[:4] == b"\x89PNG"
    # each model on all the cases it predicted (here both models predict every test case), and the headline
    all_cases = pd.read_csv(out / "metrics_all_cases.tsv", sep="\t")
    assert sorted(zip(all_cases["model"], all_cases["fold"])) == sorted(zip(metrics["model"], metrics["fold"]))
    for row in all_cases.itertuples():
        preds = pd.read_csv(out / "models" / row.model / f"fold{row.fold}" / "predictions.tsv", sep="\t")
        assert row.n_test == len(preds)
    headline = (out / "headline.rst").read_text()
    assert headline.startswith(".. list-table:: out: ") and "``healnet``" in headline and "``coxnet``" in headline
    assert "reference" in headline

    # a second run resumes: nothing is trained again, the tables are rewritten identically
    stamp = os.stat(out / "models" / "healnet" / "fold0" / "model.pt").st_mtime_ns
    before = (out / "metrics.tsv").read_text()
    assert main(_args(root, out, "--models", "healnet", "coxnet")) == 0
    assert os.stat(out / "models" / "healnet" / "fold0" / "model.pt").st_mtime_ns == stamp
    assert (out / "metrics.tsv").read_text() == before
    assert (out / "headline.rst").read_text() == headline


def test_cv_missing_curves_trained_with_missingness(tables):
    """--missing-train adds mode "trained" rows: per removal set, fraction 0 (complete data) and the
    asked fractions, each from its own trained models, beside the test-time rows."""
    root, _ = tables
    out = root / "out_missing"
    assert main(_args(root, out, "--models", "healnet", "--epochs", "1", "--missing-fractions", "0.5",
                      "--missing-train")) == 0
    curves = pd.read_csv(out / "missing_curves.tsv", sep="\t")
    trained = curves[curves["mode"] == "trained"]
    assert set(curves["mode"]) == {"test", "trained"}
    assert sorted(zip(trained["removed"], trained["fraction"])) == sorted(
        (r, f) for r in ("rna", "cnv", "rna+cnv") for f in (0.0, 0.5))
    assert (trained["n_folds"] == 3).all() and trained["harrell_mean"].between(0, 1).all()
    # complete data is the same training whichever set is removed later
    full = trained[trained["fraction"] == 0]["harrell_mean"]
    assert full.max() - full.min() < 1e-12


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


@pytest.mark.parametrize("block", ["seed: 3\nepochs: 2\n", "seed: 0\ntrain:\n  seed: 3\n  epochs: 2\n"])
def test_cv_refuses_a_seed_in_the_train_block_that_seed_would_override(tables, capsys, block):
    """--seed seeds folds and models; a train-block seed would be dropped silently, so it is an error."""
    root, _ = tables
    config = root / "train.yaml"
    config.write_text(block)
    assert main(_args(root, root / "seeded", "--config", str(config))) == 2
    err = capsys.readouterr().err
    assert f"{config}: 'seed' is not a training setting here" in err and "--seed" in err
    assert not (root / "seeded").exists()


def test_omics_arguments_name_or_path():
    assert _pairs(["rna=/d/rna.tsv", "/d/cnv_calls.csv.gz", "prot.parquet", "/a=b/meth.txt"]) == {
        "rna": "/d/rna.tsv", "cnv_calls": "/d/cnv_calls.csv.gz", "prot": "prot.parquet", "meth": "/a=b/meth.txt"}
    for bad, message in (("=x.tsv", "NAME=PATH"), ("rna=", "NAME=PATH"), ("/d/1st.tsv", "letters"),
                         ("wsi.tsv", "slide modality"), ("/d/rna.tsv", "twice")):
        with pytest.raises(SystemExit, match=message):
            _pairs(["rna=r.tsv", bad] if message == "twice" else [bad])


def test_cv_needs_tables_or_a_porpoise_table(tables, capsys):
    root, _ = tables
    with pytest.raises(SystemExit):
        main(["cv", "--omics", str(root / "rna.tsv"), "--out", str(root / "x")])
    assert "--clinical" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["cv", "--porpoise", "t.csv", "--clinical", str(root / "clinical.tsv"), "--out", str(root / "x")])
    assert "--porpoise replaces" in capsys.readouterr().err


def test_cv_keeps_every_patient_in_one_part_of_each_fold(tables, caplog, capsys):
    """Two samples per patient (tumour and normal barcodes; the omics table named after its file
    stem): no fold of any repeat splits a patient; progress is logged per model and fold."""
    root, clin = tables
    rna = pd.read_csv(root / "rna.tsv", sep="\t", index_col=0)
    samples = pd.concat([rna.rename(index=lambda c: f"{c}-01A"), (rna * 1.1).rename(index=lambda c: f"{c}-11A")])
    samples.to_csv(root / "expr.tsv", sep="\t")
    ok = clin.iloc[:N]
    survival = pd.concat([ok.rename(index=lambda c: f"{c}-01A"), ok.rename(index=lambda c: f"{c}-11A")])
    survival.to_csv(root / "samples.tsv", sep="\t")
    out = root / "grouped"
    with caplog.at_level("INFO", logger="healnet.cli"):
        assert main(["cv", "--omics", str(root / "expr.tsv"), "--clinical", str(root / "samples.tsv"), "--models",
                     "coxnet", "--folds", "3", "--repeats", "2", "--device", "cpu", "--out", str(out)]) == 0
    meta = json.loads((out / "splits.json").read_text())
    folds = meta["folds"]
    assert len(folds) == 6 and (meta["n_repeats"], meta["n_cases"], meta["n_patients"]) == (2, 2 * (N - 1), N - 1)
    for k, fold in enumerate(folds):
        assert (fold["repeat"], fold["fold_in_repeat"]) == divmod(k, 3)
        parts = [{c[:12] for c in fold[p]} for p in ("train", "val", "test")]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    metrics = pd.read_csv(out / "metrics.tsv", sep="\t")
    assert sorted(metrics["fold"]) == list(range(6))
    assert "[1/6] coxnet fold 0 (repeat 0, fold 0): training on" in caplog.text
    assert "[6/6] coxnet fold 5 (repeat 1, fold 2): done, c-index" in caplog.text
    printed = capsys.readouterr().out
    summary = pd.read_csv(out / "metrics_summary.tsv", sep="\t")
    for column in ("harrell_mean", "harrell_ci_low", "harrell_ci_high", "delta_p"):
        assert (column in printed) == (column in summary.columns)


def test_patient_column(tables):
    root, _ = tables
    clinical = pd.DataFrame({"case_id": ["s1", "s2", "s3", "s4"], "time": 1, "event": 1,
                             "patient": ["p1", "p1", "p2", " "]})
    clinical.to_csv(root / "pc.tsv", sep="\t", index=False)
    assert patient_groups(["s2", "s1", "s3"], str(root / "pc.tsv"), "patient") == ["p1", "p1", "p2"]
    assert patient_groups(["TCGA-AB-0001-01A", "s1"]) == ["TCGA-AB-0001", "s1"]
    with pytest.raises(ValueError, match=r"pc\.tsv: no patient in column 'patient' for 1 case\(s\): s4"):
        patient_groups(["s1", "s4"], str(root / "pc.tsv"), "patient")
    with pytest.raises(ValueError, match=r"pc\.tsv: no column 'donor'"):
        patient_groups(["s1"], str(root / "pc.tsv"), "donor")


def test_cv_on_a_porpoise_table(tmp_path, caplog):
    """--porpoise: rna, cnv and mutations of one PORPOISE table, one row per patient, no log2."""
    from test_tabular import porpoise_frame

    porpoise_frame(n=30, seed=1).to_csv(tmp_path / "tcga_x_all_clean.csv.zip")
    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        assert main(["cv", "--porpoise", str(tmp_path / "tcga_x_all_clean.csv.zip"), "--models", "healnet",
                     "--folds", "2", "--epochs", "1", "--device", "cpu", "--out", str(out)]) == 0
    metrics = json.loads((out / "models" / "healnet" / "fold0" / "metrics.json").read_text())
    assert sorted(metrics["modalities"]) == ["cnv", "mutations", "rna"]
    assert metrics["omics"]["rna"]["log2"] is False and "negative" in metrics["omics"]["rna"]["log_reason"]
    assert "rna: log2(x + 1) skipped" in caplog.text
    tested = [c for f in json.loads((out / "splits.json").read_text())["folds"] for c in f["test"]]
    assert sorted(tested) == [f"TCGA-AB-{i:04d}" for i in range(30)]
