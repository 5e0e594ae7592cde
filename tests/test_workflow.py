"""The whole Snakemake DAG on a tiny generated cohort, in a temporary folder."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
import zarr

from generators.demo import generate_cohort
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
    assert metrics["harrell"].between(0, 1).all() and "c_index" not in metrics.columns
    summary = pd.read_csv(res / "metrics_summary.tsv", sep="\t")
    assert summary.loc[0, "oracle_c_index"] == pytest.approx(cohort["oracle_c_index"], abs=1e-4)
    assert summary.loc[0, "harrell_mean"] == pytest.approx(metrics["harrell"].mean(), abs=1e-3)

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
    # the store index that training reads: every store, with the case its sample sheet names
    index = pd.read_csv(res / "features" / "demo-cnn" / "index.tsv", sep="\t", keep_default_na=False)
    case_of = dict(zip(sheet["File Name"].str.rsplit(".", n=1).str[0], sheet["Case ID"]))
    assert sorted(index["slide_id"]) == sorted(slide_ids)
    assert dict(zip(index["slide_id"], index["case_id"])) == {s: case_of[s] for s in slide_ids}
    assert dict(zip(index["slide_id"], index["n_patches"])) == dict(zip(slides["slide_id"], slides["n_patches"]))

    # every case accounted for; cases with a survival time and a modality are used
    cases = pd.read_csv(res / "qc" / "cases.tsv", sep="\t")
    assert set(cases["case_id"]) == set(truth["case_submitter_id"]) and len(cases) == len(truth)
    assert (cases["status"] == "used").sum() == sum(len(pd.read_csv(p, sep="\t"))
                                                    for p in res.glob("models/healnet/fold*/predictions.tsv"))
    folds = json.loads((res / "splits.json").read_text())["folds"]
    tests = [c for f in folds for c in f["test"]]
    assert len(tests) == len(set(tests))  # a case is tested once

    # the slide viewer of the report's slides
    viewer = res / "viewer"
    heatmaps = list((res / "attention" / "heatmaps").glob("*__*.png"))
    assert (viewer / "index.html").is_file() and (viewer / "openseadragon" / "openseadragon.min.js").is_file()
    assert heatmaps and len(list((viewer / "data").glob("slide-*.js"))) == len(heatmaps)

    # nothing half-written is visible
    assert not [p for p in res.rglob("*") if ".tmp-" in p.name]


def test_second_invocation_has_nothing_to_do(finished_run):
    work, _ = finished_run
    dry = snakemake(work, "-n")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_changing_a_tiling_setting_reruns_the_slides_jobs_and_downstream_only(finished_run):
    work, _ = finished_run
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["tiling"]["min_tissue"] = 0.6
    changed = work / "config_changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    planned = _dry_run_rules(work, changed)
    assert {"features", "train"} <= planned, planned  # one job per slide: tissue, patches, features
    assert not planned & {"rna", "clinical", "splits", "inventory"}, planned


def _dry_run_rules(work: Path, config: Path) -> set[str]:
    """Names of the rules a dry run with ``config`` would run."""
    dry = subprocess.run(SNAKEMAKE + ["-d", str(work), "--configfile", str(config), "-n", "--quiet", "rules"],
                         capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-2000:]
    table = (dry.stdout + dry.stderr).split("job", 1)[-1]
    return {line.split()[0] for line in table.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit()}


def _with_features(work: Path, name: str, **features) -> Path:
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["features"].update(features)
    path = work / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_stain_normalisation_reruns_features_and_what_follows_only(finished_run, tmp_path):
    """Turning stain normalisation on, or changing its method, reruns the stain target, every
    feature store (each slide's one job: tissue, patches, features) and everything downstream of them;
    the omics stay as they are.
    The stores written name the method and the target they were normalised to."""
    import shutil

    work = tmp_path / "dag"
    shutil.copytree(finished_run[0], work, symlinks=True)
    upstream = {"rna", "clinical", "splits"}
    macenko = _with_features(work, "macenko.yaml", stain_norm="macenko")
    planned = _dry_run_rules(work, macenko)
    assert {"stain_target", "features", "train", "evaluate", "qc"} <= planned, planned
    assert not planned & upstream, planned

    # one slide's store, written by the rules (stain_target, then features), names method and target
    res = work / "results" / "tiny"
    store = sorted((res / "features" / "demo-cnn").glob("*.zarr"), key=lambda p: p.name)[0]
    run = subprocess.run(SNAKEMAKE + ["-d", str(work), "--configfile", str(macenko), "--cores", "2",
                                      str(store.relative_to(work))], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    target = json.loads((res / "stain" / "target.json").read_text())
    assert target["method"] == "macenko" and target["source"] == "cohort" and len(target["stain_matrix"]) == 3
    root = zarr.open_group(str(store), mode="r")
    stain = root.attrs["stain_norm"]
    assert stain["method"] == "macenko" and stain["target"] == target
    assert stain["n_normalised"] + stain["n_fallback"] == root["features"].shape[0] == root["stain_status"].shape[0]
    assert stain["n_normalised"] > 0 and np.array(stain["stain_matrix"]).shape == (3, 2)

    planned = _dry_run_rules(work, _with_features(work, "reinhard.yaml", stain_norm="reinhard"))
    assert {"stain_target", "features", "train"} <= planned and not planned & upstream, planned
    # and back to none: the stores are rewritten without normalisation, nothing before them
    planned = _dry_run_rules(work, work / "config.yaml")
    assert "features" in planned and "stain_target" not in planned and not planned & upstream, planned
