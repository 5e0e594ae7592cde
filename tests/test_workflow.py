"""The whole Snakemake DAG on a tiny generated cohort, in a temporary folder."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import pandas as pd
import pytest
import yaml
import zarr

from preprocessing.demo import generate_cohort
from tiny_dag import write_tiny_config

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
N_FOLDS = 3


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = SNAKEMAKE + ["-d", str(workdir), "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("dag")
    cohort = generate_cohort(work / "raw", n_cases=12, seed=5, slide_size=(1024, 768), n_genes=120)
    write_tiny_config(work, work / "raw", n_folds=N_FOLDS, batch_size=16, epochs=3, omic_top_k=16)
    run = snakemake(work)
    assert run.returncode == 0, run.stderr[-4000:]
    return work, cohort


def test_dag_outputs_are_complete(finished_run):
    work, cohort = finished_run
    res = work / "results" / "tiny"
    sheet = pd.read_csv(work / "raw" / "gdc_sample_sheet.tsv", sep="\t")
    slide_ids = {n.rsplit(".", 1)[0] for n in sheet.loc[sheet["Data Type"] == "Slide Image", "File Name"]}

    metrics = pd.read_csv(res / "metrics.tsv", sep="\t")
    assert list(metrics["fold"]) == list(range(N_FOLDS)) and set(metrics["model"]) == {"healnet"}
    assert metrics["c_index"].between(0, 1).all()
    summary = pd.read_csv(res / "metrics_summary.tsv", sep="\t")
    assert summary.loc[0, "oracle_c_index"] == pytest.approx(cohort["oracle_c_index"], abs=1e-4)
    assert summary.loc[0, "c_index_mean"] == pytest.approx(metrics["c_index"].mean(), abs=1e-3)

    # every slide accounted for, the blank one skipped, the others with patches and features
    slides = pd.read_csv(res / "qc" / "slides.tsv", sep="\t")
    assert set(slides["slide_id"]) == slide_ids and len(slides) == len(slide_ids)
    truth = pd.read_csv(work / "raw" / "truth.tsv", sep="\t")
    blank_cases = set(truth.loc[truth["n_blank_slides"] > 0, "case_submitter_id"])
    assert set(slides.loc[slides["status"] == "skipped", "case_id"]) == blank_cases
    ok = slides[slides["status"] == "ok"]
    assert (ok["n_patches"] > 0).all() and len(ok) == len(slide_ids) - len(blank_cases)
    for sid in slide_ids:
        with h5py.File(res / "patches" / f"{sid}.h5") as f:
            n = len(f["coords"])
        store = zarr.open_group(str(res / "features" / "demo-cnn" / f"{sid}.zarr"), mode="r")
        assert store["features"].shape == (n, 512) and store["coords"].shape == (n, 2)
        assert store.attrs["weights"].startswith("random:")

    # every case accounted for; cases with a survival time and a modality are used
    cases = pd.read_csv(res / "qc" / "cases.tsv", sep="\t")
    assert set(cases["case_id"]) == set(truth["case_submitter_id"]) and len(cases) == len(truth)
    assert (cases["status"] == "used").sum() == sum(len(pd.read_csv(p, sep="\t"))
                                                    for p in res.glob("models/healnet/fold*/predictions.tsv"))
    folds = json.loads((res / "splits.json").read_text())["folds"]
    tests = [c for f in folds for c in f["test"]]
    assert len(tests) == len(set(tests))  # a case is tested once

    # nothing half-written is visible
    assert not [p for p in res.rglob("*") if ".tmp-" in p.name]


def test_second_invocation_has_nothing_to_do(finished_run):
    work, _ = finished_run
    dry = snakemake(work, "-n")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_changing_a_tiling_setting_reruns_tiling_and_downstream_only(finished_run):
    work, _ = finished_run
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["tiling"]["min_tissue"] = 0.6
    changed = work / "config_changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    dry = subprocess.run(SNAKEMAKE + ["-d", str(work), "--configfile", str(changed), "-n", "--quiet", "rules"],
                         capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-2000:]
    out = dry.stdout + dry.stderr
    assert "tiling" in out and "features" in out and "train" in out
    assert "tissue" not in out.replace("tissue_", "") and "rna" not in out.split()
