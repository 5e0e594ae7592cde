"""preprocessing.inventory: the GDC sample sheet joined with the manifest, and clear errors."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from preprocessing.inventory import RNA_TYPE, SLIDE_TYPE, read_inventory, read_manifest, rna_files_of, slide_id, slides_of


def test_inventory_of_the_generated_cohort(demo_cohort, demo_files):
    sheet = pd.read_csv(demo_cohort["sample_sheet"], sep="\t", dtype=str)
    assert len(demo_files) == len(sheet) == sum(demo_cohort[k] for k in ("n_slides", "n_rna", "n_cnv", "n_maf"))
    assert list(demo_files["file_id"]) == list(sheet["File ID"])
    for row in demo_files.itertuples():
        path = Path(row.path)
        assert path == Path(demo_cohort["out_dir"]) / row.file_id / row.file_name
        # the manifest's md5 and size are those of the file on disk
        assert row.md5 == hashlib.md5(path.read_bytes()).hexdigest()
        assert int(row.size) == path.stat().st_size
        assert row.manifest_file_name == row.file_name
    assert sorted(demo_files["path"][demo_files["data_type"] == SLIDE_TYPE]) == sorted(demo_cohort["slides"])
    assert sorted(demo_files["path"][demo_files["data_type"] == RNA_TYPE]) == sorted(demo_cohort["rna"])


def test_slides_and_rna_files(demo_files, demo_truth):
    slides = slides_of(demo_files)
    assert len(slides) == demo_truth["n_slides"].sum()
    assert list(slides["slide_id"]) == sorted(slides["slide_id"])
    assert all(f == f"{s}.svs" for s, f in zip(slides["slide_id"], slides["file_name"]))
    per_case = slides.groupby("case_id").size()
    expected = demo_truth.set_index("case_submitter_id")["n_slides"]
    assert per_case.to_dict() == expected[expected > 0].to_dict()
    rna = rna_files_of(demo_files)
    assert set(rna["case_id"]) == set(demo_truth.loc[demo_truth["has_rna"] == 1, "case_submitter_id"])
    assert (rna["data_type"] == RNA_TYPE).all()


def test_slide_id_drops_only_the_extension():
    assert slide_id("TCGA-A1-0001-01Z-00-DX1.0A1B2C3D-AAAA-BBBB-CCCC-0123456789AB.svs") == \
        "TCGA-A1-0001-01Z-00-DX1.0A1B2C3D-AAAA-BBBB-CCCC-0123456789AB"


# ---------------------------------------------------------------------------------------------
# hand-built sheets


SHEET_COLUMNS = ["File ID", "File Name", "Data Category", "Data Type", "Project ID", "Case ID", "Sample ID", "Sample Type"]


def _sheet(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=SHEET_COLUMNS)


def _write(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, sep="\t", index=False)
    return path


@pytest.fixture
def tiny(tmp_path):
    sheet = _sheet([
        ["f1", "TCGA-AA-0001-01Z-00-DX1.X.svs", "Biospecimen", SLIDE_TYPE, "P", "TCGA-AA-0001", "TCGA-AA-0001-01A", "Primary Tumor"],
        ["f2", "r2.tsv", "Transcriptome Profiling", RNA_TYPE, "P", "TCGA-AA-0002, TCGA-AA-0002",
         "TCGA-AA-0002-01A, TCGA-AA-0002-11A", "Primary Tumor, Solid Tissue Normal"],
    ])
    manifest = pd.DataFrame({"id": ["f2", "f1"], "filename": ["r2.tsv", "TCGA-AA-0001-01Z-00-DX1.X.svs"],
                             "md5": ["b" * 32, "a" * 32], "size": ["20", "10"], "state": ["released"] * 2})
    return tmp_path, sheet, manifest


def test_join_by_file_id_and_first_of_listed_ids(tiny):
    tmp_path, sheet, manifest = tiny
    files = read_inventory(_write(sheet, tmp_path / "s.tsv"), _write(manifest, tmp_path / "m.txt"), "/data")
    assert list(files["file_id"]) == ["f1", "f2"]
    assert list(files["md5"]) == ["a" * 32, "b" * 32]  # joined by id, not by row order
    assert files.loc[1, "case_id"] == "TCGA-AA-0002"
    assert files.loc[1, "sample_id"] == "TCGA-AA-0002-01A"
    assert files.loc[1, "sample_type"] == "Primary Tumor"
    assert files.loc[0, "path"] == str(Path("/data") / "f1" / "TCGA-AA-0001-01Z-00-DX1.X.svs")


@pytest.mark.parametrize("column", ["Case ID", "File Name", "Data Type"])
def test_missing_sample_sheet_column_names_file_and_column(tiny, column):
    tmp_path, sheet, manifest = tiny
    path = _write(sheet.drop(columns=[column]), tmp_path / "sheet.tsv")
    with pytest.raises(ValueError) as err:
        read_inventory(path, _write(manifest, tmp_path / "m.txt"), "/data")
    assert str(path) in str(err.value) and column in str(err.value)


def test_missing_manifest_column_names_file_and_column(tiny):
    tmp_path, sheet, manifest = tiny
    path = _write(manifest.drop(columns=["md5"]), tmp_path / "manifest.txt")
    with pytest.raises(ValueError) as err:
        read_inventory(_write(sheet, tmp_path / "s.tsv"), path, "/data")
    assert str(path) in str(err.value) and "md5" in str(err.value)
    with pytest.raises(ValueError, match="md5"):
        read_manifest(path)


def test_file_absent_from_manifest_is_an_error(tiny):
    tmp_path, sheet, manifest = tiny
    path = _write(manifest[manifest["id"] != "f2"], tmp_path / "manifest.txt")
    with pytest.raises(ValueError) as err:
        read_inventory(_write(sheet, tmp_path / "s.tsv"), path, "/data")
    assert str(path) in str(err.value) and "f2" in str(err.value)


def test_duplicate_manifest_entry_is_an_error(tiny):
    tmp_path, sheet, manifest = tiny
    path = _write(pd.concat([manifest, manifest.iloc[[0]]]), tmp_path / "manifest.txt")
    with pytest.raises(ValueError):
        read_inventory(_write(sheet, tmp_path / "s.tsv"), path, "/data")


def test_missing_file_is_file_not_found(tiny):
    tmp_path, sheet, _ = tiny
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_inventory(_write(sheet, tmp_path / "s.tsv"), tmp_path / "nope.txt", "/data")
