"""healnet.qc: every inventory slide and every case gets exactly one row saying what happened."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from healnet.qc import cases_table, slides_table, write_qc_tables
from healnet.splits import make_splits, write_splits
from preprocessing.clinical import survival_table
from preprocessing.feature_store import write_index
from preprocessing.features import extract_features
from preprocessing.inventory import SLIDE_TYPE
from preprocessing.tiling import read_coords, tile_slide
from preprocessing.tissue_geojson import read_tissue, segment_slide

BROKEN = "TCGA-ZZ-0001-01Z-00-DX1.BROKEN"  # a corrupt file: fails, and its case has no clinical record
UNPROCESSED = "TCGA-ZZ-0002-01Z-00-DX1.NEVER"  # in the inventory, but no stage ever ran on it


@pytest.fixture
def outputs(processed, demo_files, blank_slide_id, tmp_path):
    """The processed cohort copied, plus a corrupt slide, an unprocessed one, and one ok slide
    whose feature store is missing."""
    dirs = {k: tmp_path / k for k in ("tissue", "patches", "features")}
    for k, d in dirs.items():
        shutil.copytree(processed[k], d)
    broken = tmp_path / f"{BROKEN}.svs"
    broken.write_bytes(np.random.default_rng(0).bytes(5000))
    segment_slide(broken, dirs["tissue"] / f"{BROKEN}.geojson", dirs["tissue"] / f"{BROKEN}.png")
    tile_slide(dirs["tissue"] / f"{BROKEN}.geojson", dirs["patches"] / f"{BROKEN}.h5")
    extract_features(broken, dirs["patches"] / f"{BROKEN}.h5", dirs["features"] / f"{BROKEN}.zarr")  # 0 patches
    ok = sorted(s for s in processed["tiling"] if s != blank_slide_id)
    no_store = ok[0]
    index = tmp_path / "index.tsv"  # as rule feature_index writes it, before the store of no_store went
    stores = sorted(dirs["features"].glob("*.zarr"))
    ids = [store.stem for store in stores]
    write_index(stores, index, {"tissue": {s: str(dirs["tissue"] / f"{s}.geojson") for s in ids},
                                "patches": {s: str(dirs["patches"] / f"{s}.h5") for s in ids}})
    shutil.rmtree(dirs["features"] / f"{no_store}.zarr")
    extra = pd.DataFrame([
        {"file_id": "x1", "file_name": f"{BROKEN}.svs", "data_type": SLIDE_TYPE, "case_id": "TCGA-ZZ-0001",
         "path": str(broken)},
        {"file_id": "x2", "file_name": f"{UNPROCESSED}.svs", "data_type": SLIDE_TYPE, "case_id": "TCGA-ZZ-0002",
         "path": str(tmp_path / f"{UNPROCESSED}.svs")},
    ])
    files = pd.concat([demo_files, extra], ignore_index=True)
    slides = files[files["data_type"] == SLIDE_TYPE].copy()
    slides["slide_id"] = slides["file_name"].str.removesuffix(".svs")
    return {**dirs, "index": index, "files": files, "slides": slides, "ok": ok[1:], "no_store": no_store}


def test_every_slide_has_one_row_with_its_status(outputs, processed, blank_slide_id):
    table = slides_table(outputs["slides"], outputs["index"])
    assert sorted(table["slide_id"]) == sorted(outputs["slides"]["slide_id"])
    assert table["slide_id"].is_unique
    row = table.set_index("slide_id")
    assert row.loc[blank_slide_id, "status"] == "skipped" and row.loc[blank_slide_id, "reason"] == "no tissue found"
    assert row.loc[BROKEN, "status"] == "failed" and "cannot open slide" in row.loc[BROKEN, "reason"]
    assert row.loc[BROKEN, "n_patches"] == 0
    assert row.loc[UNPROCESSED, ["status", "reason"]].tolist() == ["failed", "not processed"]
    assert row.loc[outputs["no_store"], ["status", "reason"]].tolist() == ["failed", "no feature store"]
    for sid in outputs["ok"]:
        assert row.loc[sid, "status"] == "ok" and row.loc[sid, "features"]
        coords, _ = read_coords(outputs["patches"] / f"{sid}.h5")
        _, meta = read_tissue(outputs["tissue"] / f"{sid}.geojson")
        assert row.loc[sid, "n_patches"] == len(coords) > 0
        assert row.loc[sid, "tissue_area_mm2"] == meta["tissue_area_mm2"] > 0
        assert (row.loc[sid, "mpp"], row.loc[sid, "width"], row.loc[sid, "height"]) == (0.5, 1024, 768)
    assert set(table["status"]) == {"ok", "skipped", "failed"}


def test_every_case_has_one_row_with_its_status(outputs, demo_cohort, demo_truth, blank_slide_id):
    slides_qc = slides_table(outputs["slides"], outputs["index"])
    survival = survival_table(demo_cohort["clinical"], outputs["files"])
    truth = demo_truth.set_index("case_submitter_id")
    blank_case = slides_qc.set_index("slide_id").loc[blank_slide_id, "case_id"]
    rna_cases = set(truth[truth["has_rna"] == 1].index) - {blank_case}  # the blank slide's case loses its RNA too
    ok = survival[survival["status"] == "ok"]
    folds = make_splits(ok["case_id"].tolist(), ok["event"].to_numpy(), n_folds=2, val_fraction=0.25, seed=0)
    table = cases_table(survival, slides_qc, rna_cases, folds)

    expected_cases = set(truth.index) | {"TCGA-ZZ-0001", "TCGA-ZZ-0002"}
    assert sorted(table["case_id"]) == sorted(expected_cases) and table["case_id"].is_unique
    row = table.set_index("case_id")
    assert row.loc[blank_case, ["status", "reason"]].tolist() == ["excluded", "no usable modality (no tissue patches, no RNA)"]
    for case in ("TCGA-ZZ-0001", "TCGA-ZZ-0002"):
        assert row.loc[case, ["status", "reason"]].tolist() == ["excluded", "no clinical record"]
    # what each case has, counted independently from the slide table and the truth
    usable = slides_qc[slides_qc["status"] == "ok"].groupby("case_id").size()
    for case in truth.index:
        assert row.loc[case, "n_slides_usable"] == usable.get(case, 0)
        assert row.loc[case, "has_rna"] == (case in rna_cases)
    used = row[row["status"] == "used"]
    expected_used = {c for c in truth.index if usable.get(c, 0) > 0 or c in rna_cases}
    assert blank_case not in expected_used and len(expected_used) >= len(truth) - 1
    assert set(used.index) == expected_used
    # every used case is tested in exactly the fold the splits put it in; the others in none
    fold_of = {c: k for k, f in enumerate(folds) for c in f["test"]}
    assert all(used["test_fold"][c] == fold_of[c] for c in used.index)
    assert row.loc[row["status"] != "used", "test_fold"].isna().all()


def test_write_qc_tables(outputs, demo_cohort, tmp_path):
    clinical = tmp_path / "survival.parquet"
    survival = survival_table(demo_cohort["clinical"], outputs["files"])
    survival.to_parquet(clinical, index=False)
    rna = tmp_path / "rna.parquet"
    cases = sorted(outputs["files"].loc[outputs["files"]["data_type"] != SLIDE_TYPE, "case_id"])
    pd.DataFrame({"g": np.ones(len(cases))}, index=pd.Index(cases, name="case_id")).to_parquet(rna)
    ok = survival[survival["status"] == "ok"]
    splits = tmp_path / "splits.json"
    write_splits(splits, make_splits(ok["case_id"].tolist(), ok["event"].to_numpy(), n_folds=2, seed=1))
    write_qc_tables(outputs["slides"], outputs["index"], clinical, rna,
                    splits, tmp_path / "qc" / "slides.tsv", tmp_path / "qc" / "cases.tsv")
    slides = pd.read_csv(tmp_path / "qc" / "slides.tsv", sep="\t")
    cases_qc = pd.read_csv(tmp_path / "qc" / "cases.tsv", sep="\t")
    assert sorted(slides["slide_id"]) == sorted(outputs["slides"]["slide_id"])
    assert sorted(cases_qc["case_id"]) == sorted(survival["case_id"])
    assert sorted(p.name for p in (tmp_path / "qc").iterdir()) == ["cases.tsv", "slides.tsv"]


def test_cases_table_counts_each_omics_modality():
    """Hand-built: which modalities a case has, and which of them the model uses, decide 'used'."""
    survival = pd.DataFrame({"case_id": ["A", "B", "C", "D", "E"], "time": [10.0, 20, 30, 40, np.nan],
                             "event": [1, 0, 1, 0, 0], "status": ["ok"] * 4 + ["excluded"],
                             "reason": [""] * 4 + ["no survival time"]})
    slides_qc = pd.DataFrame({"slide_id": ["a1", "b1"], "case_id": ["A", "B"], "status": ["ok", "skipped"]})
    omics = {"rna": {"A"}, "cnv": {"B", "E"}, "mutations": {"C"}}
    folds = [{"test": ["A", "B"]}, {"test": ["C", "D"]}]
    table = cases_table(survival, slides_qc, omics, folds).set_index("case_id")
    assert table.loc[:, ["has_rna", "has_cnv", "has_mutations"]].values.tolist() == [
        [True, False, False], [False, True, False], [False, False, True], [False, False, False], [False, True, False]]
    assert table["status"].to_dict() == {"A": "used", "B": "used", "C": "used", "D": "excluded", "E": "excluded"}
    assert table.loc["D", "reason"] == "no usable modality (no tissue patches, no RNA, no CNV, no mutations)"
    assert table.loc["E", "reason"] == "no survival time"
    # a model on slides and RNA only: B (CNV only) and C (mutations only) cannot be used
    wsi_rna = cases_table(survival, slides_qc, omics, folds, modalities=["wsi", "rna"]).set_index("case_id")
    assert wsi_rna["status"].to_dict() == {"A": "used", "B": "excluded", "C": "excluded", "D": "excluded",
                                           "E": "excluded"}
    assert wsi_rna.loc["B", "reason"] == "no usable modality (no tissue patches, no RNA)"
    assert wsi_rna["test_fold"].isna().tolist() == [False, True, True, True, True]


def test_write_qc_tables_reads_every_omics_output(outputs, demo_cohort, demo_truth, tmp_path):
    survival = survival_table(demo_cohort["clinical"], outputs["files"])
    clinical = tmp_path / "survival.parquet"
    survival.to_parquet(clinical, index=False)
    truth = demo_truth.set_index("case_submitter_id")
    paths = {}
    for name, col in (("rna", "has_rna"), ("cnv", "has_cnv"), ("mutations", "has_maf")):
        cases = sorted(truth.index[truth[col] == 1])
        paths[name] = tmp_path / f"{name}.parquet"
        pd.DataFrame({"g": np.ones(len(cases))}, index=pd.Index(cases, name="case_id")).to_parquet(paths[name])
    ok = survival[survival["status"] == "ok"]
    splits = tmp_path / "splits.json"
    write_splits(splits, make_splits(ok["case_id"].tolist(), ok["event"].to_numpy(), n_folds=2, seed=1))
    write_qc_tables(outputs["slides"], outputs["index"], clinical, paths,
                    splits, tmp_path / "qc" / "slides.tsv", tmp_path / "qc" / "cases.tsv")
    cases_qc = pd.read_csv(tmp_path / "qc" / "cases.tsv", sep="\t").set_index("case_id")
    for name, col in (("rna", "has_rna"), ("cnv", "has_cnv"), ("mutations", "has_maf")):
        assert cases_qc.loc[truth.index, f"has_{name}"].tolist() == (truth[col] == 1).tolist()
    assert len(cases_qc) == len(survival)


def test_test_fold_is_the_fold_of_repeat_0():
    """Repeated CV tests every case once per repeat: test_fold is its fold in repeat 0 (0..n_folds-1),
    not the last repeat's; with one repeat it is the fold index, as before."""
    ids = [f"C{i:02d}" for i in range(12)]
    survival = pd.DataFrame({"case_id": ids, "time": np.arange(1.0, 13), "event": [1, 0] * 6, "status": "ok",
                             "reason": ""})
    slides_qc = pd.DataFrame(columns=["slide_id", "case_id", "status"])
    omics = {"rna": set(ids)}
    # hand-built: repeat 1 puts every case in the other fold than repeat 0
    folds = [{"test": ids[:6], "repeat": 0, "fold_in_repeat": 0}, {"test": ids[6:], "repeat": 0, "fold_in_repeat": 1},
             {"test": ids[6:], "repeat": 1, "fold_in_repeat": 0}, {"test": ids[:6], "repeat": 1, "fold_in_repeat": 1}]
    table = cases_table(survival, slides_qc, omics, folds).set_index("case_id")
    assert table["test_fold"].tolist() == [0] * 6 + [1] * 6
    # the listing order does not matter: repeat 0 is found wherever it sits
    table = cases_table(survival, slides_qc, omics, folds[2:] + folds[:2]).set_index("case_id")
    assert table["test_fold"].tolist() == [0] * 6 + [1] * 6

    events = survival["event"].to_numpy()
    repeated = make_splits(ids, events, n_folds=3, seed=4, n_repeats=3)
    table = cases_table(survival, slides_qc, omics, repeated).set_index("case_id")
    expected = {c: i for i, f in enumerate(repeated[:3]) for c in f["test"]}
    assert table["test_fold"].to_dict() == expected and set(expected.values()) == {0, 1, 2}
    # n_repeats = 1: the fold index k, exactly as the single-repeat splits put it
    single = make_splits(ids, events, n_folds=3, seed=4)
    assert "repeat" not in single[0]
    table = cases_table(survival, slides_qc, omics, single).set_index("case_id")
    assert table["test_fold"].to_dict() == {c: k for k, f in enumerate(single) for c in f["test"]}


def test_slides_table_finds_each_slides_files_through_the_index_alone(outputs, tmp_path):
    """QC knows no folder layout: with every tissue, patch and store file moved and renamed, an index
    that names them gives the same table; a slide the index leaves out was not processed."""
    expected = slides_table(outputs["slides"], outputs["index"])
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    ids = [s.stem for s in sorted(outputs["features"].glob("*.zarr"))]
    for k, sid in enumerate(ids):
        shutil.copy(outputs["tissue"] / f"{sid}.geojson", moved / f"t{k}.geojson")
        shutil.copy(outputs["patches"] / f"{sid}.h5", moved / f"p{k}.h5")
        shutil.copytree(outputs["features"] / f"{sid}.zarr", moved / f"s{k}" / f"{sid}.zarr")
    index = tmp_path / "moved.tsv"
    write_index([moved / f"s{k}" / f"{sid}.zarr" for k, sid in enumerate(ids)], index,
                {"tissue": {sid: str(moved / f"t{k}.geojson") for k, sid in enumerate(ids)},
                 "patches": {sid: str(moved / f"p{k}.h5") for k, sid in enumerate(ids)}})
    for folder in ("tissue", "patches", "features"):
        shutil.rmtree(outputs[folder])
    table = slides_table(outputs["slides"], index).set_index("slide_id")
    # every slide that still has a store reads as before; no_store is no longer listed at all
    cols = ["status", "reason", "mpp", "width", "height", "tissue_area_mm2", "n_patches", "features"]
    pd.testing.assert_frame_equal(table.loc[ids, cols], expected.set_index("slide_id").loc[ids, cols])
    assert table.loc[outputs["no_store"], ["status", "reason"]].tolist() == ["failed", "not processed"]
