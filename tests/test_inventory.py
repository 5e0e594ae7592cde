"""preprocessing.inventory: the GDC sample sheet (both portal layouts) joined with the manifest, clear
errors, files the download step failed or skipped, the slide policy and the CNV pipeline choice."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from preprocessing.inventory import (RNA_TYPE, SLIDE_TYPE, cnv_workflow_of, not_usable, prefer_cnv_workflow,
                                     read_checked_inventory, read_inventory, read_manifest, rna_files_of, slide_id,
                                     slide_policy, slides_of)
from preprocessing.settings import validate_rows
from preprocessing.omics import CNV_TYPE


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


# ---------------------------------------------------------------------------------------------
# the portal's sample sheet before 2025 and since 2.4.0; what the download step marks


def _portal_hits():
    from gdc_standin import cnv_hit, file_hit

    slide = file_hit("1" * 8 + "-0000-4000-8000-" + "1" * 12, "TCGA-AA-0001-01Z-00-DX1.X.svs", b"s", "TCGA-X",
                     "TCGA-AA-0001", SLIDE_TYPE, data_category="Biospecimen")
    met = file_hit("2" * 8 + "-0000-4000-8000-" + "2" * 12, "TCGA-AA-0002-06Z-00-DX1.Y.svs", b"m", "TCGA-X",
                   "TCGA-AA-0002", SLIDE_TYPE, samples=["TCGA-AA-0002-06A"], data_category="Biospecimen")
    cnv = cnv_hit("3" * 8 + "-0000-4000-8000-" + "3" * 12, "TCGA-AA-0001", "TCGA-X", "ASCAT2", b"c")
    return [slide, met, cnv]


@pytest.mark.parametrize("layout", ["pre-2025", "2.4.0"])
def test_both_portal_layouts_give_the_same_inventory(tmp_path, layout):
    from gdc_standin import portal_sample_sheet

    hits = _portal_hits()
    sheet = _write(portal_sample_sheet(hits, layout), tmp_path / "sheet.tsv")
    assert ("Sample Type" in sheet.read_text()) == (layout == "pre-2025")
    manifest = _write(pd.DataFrame({"id": [h["file_id"] for h in hits], "filename": [h["file_name"] for h in hits],
                                    "md5": [h["md5sum"] for h in hits], "size": [h["file_size"] for h in hits],
                                    "state": "released"}), tmp_path / "m.txt")
    files = read_inventory(sheet, manifest, "/data").set_index("file_name")
    assert files["sample_type"].to_dict() == {"TCGA-AA-0001-01Z-00-DX1.X.svs": "Primary Tumor",
                                              "TCGA-AA-0002-06Z-00-DX1.Y.svs": "Metastatic",
                                              hits[2]["file_name"]: "Blood Derived Normal"}  # first of the pair
    assert files.loc[hits[2]["file_name"], "sample_id"] == "TCGA-AA-0001-10A"
    if layout == "2.4.0":
        assert files.loc["TCGA-AA-0002-06Z-00-DX1.Y.svs", "tumor_descriptor"] == "Metastatic"
        assert files.loc["TCGA-AA-0001-01Z-00-DX1.X.svs", "preservation_method"] == "FFPE"
    assert not files.attrs  # no download status: nothing set aside


def test_sheet_without_either_layout_names_both(tiny):
    tmp_path, sheet, manifest = tiny
    path = _write(sheet.drop(columns=["Sample Type"]), tmp_path / "sheet.tsv")
    with pytest.raises(ValueError) as err:
        read_inventory(path, _write(manifest, tmp_path / "m.txt"), "/data")
    assert str(path) in str(err.value) and "Sample Type" in str(err.value) and "Tumor Descriptor" in str(err.value)


def test_failed_and_skipped_files_leave_the_table_and_stay_for_qc(tiny):
    tmp_path, sheet, manifest = tiny
    sheet = pd.concat([sheet, _sheet([["f3", "TCGA-AA-0003-06Z-00-DX1.Z.svs", "Biospecimen", SLIDE_TYPE, "P",
                                       "TCGA-AA-0003", "TCGA-AA-0003-06A", "Metastatic"]])], ignore_index=True)
    sheet["Download Status"] = ["failed", "ok", "skipped"]
    sheet["Download Reason"] = ["HTTP 403: no", "", "slide policy: sample type 06"]
    files = read_inventory(_write(sheet, tmp_path / "s.tsv"), _write(manifest, tmp_path / "m.txt"), "/data")
    assert list(files["file_id"]) == ["f2"]  # f3 is not in the manifest: a skipped file need not be
    gone = not_usable(files).set_index("file_id")
    assert gone["download_status"].to_dict() == {"f1": "failed", "f3": "skipped"}
    assert gone.loc["f1", "path"] == str(Path("/data") / "f1" / "TCGA-AA-0001-01Z-00-DX1.X.svs")
    assert list(slides_of(files)["file_id"]) == ["f1", "f3"] and slides_of(files, usable_only=True).empty
    assert list(rna_files_of(files)["file_id"]) == ["f2"]
    assert pd.concat([files, files]).attrs == files.attrs  # pandas can still compare (and carry) them


def test_slide_policy_and_cnv_preference():
    files = pd.DataFrame({
        "file_id": ["s1", "s2", "s3", "c1", "c2", "c3", "c4"],
        "file_name": ["a.svs", "b.svs", "c.svs", "x.ascat2.gene_level_copy_number.v36.tsv",
                      "x.ascat3.gene_level_copy_number.v36.tsv", "y.absolute_liftover.gene_level_copy_number.v36.tsv",
                      "z.wgs.ascat.gene_level.copy_number_variation.tsv"],
        "data_type": [SLIDE_TYPE] * 3 + [CNV_TYPE] * 4,
        "case_id": ["TCGA-A-1", "TCGA-A-1", "CPTAC-9", "TCGA-A-1", "TCGA-A-1", "TCGA-B-2", "TCGA-C-3"],
        "sample_id": ["TCGA-A-1-01A", "TCGA-A-1-11A", "C3L-9", "TCGA-A-1-01A", "TCGA-A-1-01A", "TCGA-B-2-01A",
                      "TCGA-C-3-01A"],
        "sample_type": ["Primary Tumor", "Solid Tissue Normal", "Primary Tumor"] + ["Primary Tumor"] * 4})
    kept, skipped = slide_policy(files, ["01"])
    assert list(skipped["file_id"]) == ["s2"]
    assert "sample type 11 (Solid Tissue Normal)" in skipped["download_reason"].iloc[0]
    assert "s3" in set(kept["file_id"])  # not a TCGA barcode: its sample type says primary
    assert len(slide_policy(files, None)[0]) == 7
    assert [cnv_workflow_of(n) for n in files["file_name"][3:]] == ["ASCAT2", "ASCAT3", "ABSOLUTE LiftOver", "AscatNGS"]
    chosen, other = prefer_cnv_workflow(files, ["ASCAT3", "ASCAT2", "ABSOLUTE LiftOver"])
    assert set(chosen["file_id"]) == {"s1", "s2", "s3", "c2", "c3"}
    assert other.set_index("file_id")["reason"].to_dict() == {
        "c1": "CNV pipeline ASCAT2 not preferred for this case",
        "c4": "CNV pipeline AscatNGS not in cnv_workflows ['ASCAT3', 'ASCAT2', 'ABSOLUTE LiftOver']"}
    assert set(prefer_cnv_workflow(files, ["AscatNGS", "ASCAT2"])[0]["file_id"]) == {"s1", "s2", "s3", "c1", "c4"}


SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "sample_sheet.schema.yaml"


@pytest.mark.parametrize("column, value, problem", [(None, None, None), ("md5", "not-a-digest", "md5"),
                                                    ("Case ID", "nobarcode", "case_id")])
def test_checked_inventory_agrees_with_snakemake_validate(tiny, column, value, problem):
    """Planning validates each row against the sample-sheet schema compiled once (fastjsonschema); what it
    rejects, Snakemake's own validate (jsonschema, one validator per row) rejects too, and its error
    names the sheet, row and field."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    tmp_path, sheet, manifest = tiny
    if column == "md5":
        manifest.loc[manifest["id"] == "f2", "md5"] = value
    elif column:
        sheet.loc[sheet["File ID"] == "f2", column] = value
    paths = _write(sheet, tmp_path / "s.tsv"), _write(manifest, tmp_path / "m.txt"), "/data"
    if problem is None:
        files = read_checked_inventory(*paths, SCHEMA)
        validate(files.copy(), str(SCHEMA))
        pd.testing.assert_frame_equal(files, read_inventory(*paths))
        return
    with pytest.raises(WorkflowError):
        validate(read_inventory(*paths), str(SCHEMA))
    with pytest.raises(ValueError) as err:
        read_checked_inventory(*paths, SCHEMA)
    assert str(paths[0]) in str(err.value) and "row 2 (r2.tsv)" in str(err.value) and problem in str(err.value)


@pytest.mark.parametrize("change", [{}, {"md5": "A" * 32}, {"md5": "a" * 31}, {"file_name": ""}, {"case_id": 5},
                                    {"case_id": "TCGA-AA"}, {"case_id": "x TCGA-AA-0001"}, {"path": None},
                                    {"sample_id": 3.5}, {"mpp": "0.25"}, {"extra": [1]}])
def test_validate_rows_refuses_what_jsonschema_refuses(change):
    """The compiled fast path judges each row as jsonschema itself (the oracle) does on the same schema."""
    import jsonschema
    import yaml

    good = {"file_id": "f0", "file_name": "a.svs", "data_type": "Slide Image", "case_id": "TCGA-AA-0001",
            "sample_id": "TCGA-AA-0001-01A", "md5": "a" * 32, "path": "/data/f0/a.svs"}
    row = {**good, "file_id": "f1", **change}
    valid = jsonschema.Draft202012Validator(yaml.safe_load(SCHEMA.read_text())).is_valid(
        {k: v for k, v in row.items() if v is not None})
    table = pd.DataFrame([good, row])  # the changed row second: the error names it
    if valid:
        validate_rows(table, SCHEMA, source="sheet.tsv")
        return
    with pytest.raises(ValueError, match=r"^sheet\.tsv: row 2 "):
        validate_rows(table, SCHEMA, source="sheet.tsv")
