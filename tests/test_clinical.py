"""preprocessing.clinical: overall survival per case from the GDC export, and what each case has."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from preprocessing.clinical import (cdr_survival, overall_survival, read_cdr, read_gdc_clinical, survival_table,
                                   tissue_source_site, write_survival_table)
from preprocessing.inventory import RNA_TYPE, SLIDE_TYPE
from preprocessing.omics import CNV_TYPE, MAF_TYPE

M = "'--"  # GDC's missing value
COLUMNS = ["case_submitter_id", "vital_status", "days_to_death", "days_to_last_follow_up", "treatment_type"]
ROWS = [
    ["TCGA-A1-0001", "Dead", "500", "300", "Radiation"],  # dead: days_to_death
    ["TCGA-A1-0001", "Dead", "500", M, "Pharmaceutical"],
    ["TCGA-A2-0002", "Alive", M, "100", "Radiation"],  # alive: latest follow-up over the rows
    ["TCGA-A2-0002", "Alive", M, "400", "Pharmaceutical"],
    ["TCGA-A2-0003", "Alive", M, M, M],  # no time
    ["TCGA-BH-0004", "Alive", M, "-5", M],  # negative time
    ["TCGA-BH-0005", "Dead", M, "250", "Radiation"],  # dead with no days_to_death: no time
    ["TCGA-BH-0005", "Dead", "700", M, "Pharmaceutical"],  # ... on this row only
    ["TCGA-E2-0006", M, M, "200", M],  # no vital status
    ["TCGA-E2-0008", "Not Reported", M, "300", M],  # unknown vital status
    ["TCGA-E2-0009", "Alive", M, "100", "Radiation"],  # conflicting rows: dead wins
    ["TCGA-E2-0009", "Dead", "650", M, "Pharmaceutical"],
    ["TCGA-E2-0007", "Dead", M, "90", M],  # dead, death date missing everywhere
]


@pytest.fixture
def clinical_path(tmp_path):
    path = tmp_path / "clinical.tsv"
    pd.DataFrame(ROWS, columns=COLUMNS).to_csv(path, sep="\t", index=False)
    return path


def test_overall_survival_by_hand(clinical_path):
    surv = overall_survival(read_gdc_clinical(clinical_path)).set_index("case_id")
    assert list(surv.index) == sorted({r[0] for r in ROWS})  # one row per case
    ok = surv[surv["status"] == "ok"]
    assert ok[["time", "event"]].to_dict("index") == {
        "TCGA-A1-0001": {"time": 500.0, "event": 1},
        "TCGA-A2-0002": {"time": 400.0, "event": 0},
        "TCGA-BH-0005": {"time": 700.0, "event": 1},
        "TCGA-E2-0009": {"time": 650.0, "event": 1},
    }
    assert (ok["reason"] == "").all()
    excluded = surv[surv["status"] == "excluded"]["reason"].to_dict()
    assert excluded == {"TCGA-A2-0003": "no survival time", "TCGA-BH-0004": "negative survival time (-5 days)",
                        "TCGA-E2-0006": "unknown vital status (missing)",
                        "TCGA-E2-0008": "unknown vital status (Not Reported)", "TCGA-E2-0007": "no survival time"}
    assert np.isnan(surv.loc["TCGA-A2-0003", "time"])
    assert surv.loc["TCGA-E2-0007", "event"] == 1
    assert surv["site"].to_dict() == {c: c.split("-")[1] for c in surv.index}
    assert set(surv["endpoint"]) == {"OS"}


def test_conflicting_vital_status_is_logged(clinical_path, caplog):
    with caplog.at_level("WARNING"):
        overall_survival(read_gdc_clinical(clinical_path))
    assert "1 case(s) with both Dead and Alive rows counted as dead: TCGA-E2-0009" in caplog.text


def test_follow_up_records_extend_the_follow_up(tmp_path):
    rows = [["TCGA-A1-0001", "Alive", M, "300", M], ["TCGA-A1-0001", "Alive", M, M, "820"],  # follow-up record
            ["TCGA-A1-0002", "Dead", "90", "40", "500"]]  # dead: days_to_death, whatever the follow-ups say
    path = tmp_path / "c.tsv"
    pd.DataFrame(rows, columns=COLUMNS[:4] + ["days_to_follow_up"]).to_csv(path, sep="\t", index=False)
    surv = overall_survival(read_gdc_clinical(path)).set_index("case_id")
    assert surv[["time", "event"]].to_dict("index") == {"TCGA-A1-0001": {"time": 820.0, "event": 0},
                                                         "TCGA-A1-0002": {"time": 90.0, "event": 1}}


def test_portal_export_with_table_prefixes(tmp_path):
    cols = ["cases.submitter_id", "demographic.vital_status", "demographic.days_to_death",
            "diagnoses.days_to_last_follow_up", "treatments.treatment_type"]
    path = tmp_path / "clinical.tsv"
    pd.DataFrame(ROWS[:4], columns=cols).to_csv(path, sep="\t", index=False)
    surv = overall_survival(read_gdc_clinical(path)).set_index("case_id")
    assert surv[["time", "event"]].to_dict("index") == {"TCGA-A1-0001": {"time": 500.0, "event": 1},
                                                         "TCGA-A2-0002": {"time": 400.0, "event": 0}}


def test_tissue_source_site():
    assert tissue_source_site("TCGA-BH-A0BZ") == "BH"
    assert tissue_source_site("nonsense") == ""


def test_missing_clinical_column_names_the_file(tmp_path):
    path = tmp_path / "clin.tsv"
    pd.DataFrame(ROWS, columns=COLUMNS).drop(columns=["days_to_death"]).to_csv(path, sep="\t", index=False)
    with pytest.raises(ValueError) as err:
        read_gdc_clinical(path)
    assert str(path) in str(err.value) and "days_to_death" in str(err.value)


def _inventory(rows):
    return pd.DataFrame(rows, columns=["case_id", "data_type"])


def test_survival_table_marks_cases_without_files_and_files_without_records(clinical_path):
    files = _inventory([["TCGA-A1-0001", SLIDE_TYPE], ["TCGA-A1-0001", SLIDE_TYPE], ["TCGA-A1-0001", RNA_TYPE],
                        ["TCGA-BH-0005", RNA_TYPE], ["TCGA-A2-0003", SLIDE_TYPE], ["TCGA-E2-0009", CNV_TYPE],
                        ["TCGA-E2-0009", MAF_TYPE], ["TCGA-E2-0009", MAF_TYPE],
                        ["TCGA-ZZ-0099", SLIDE_TYPE]])  # no clinical record
    table = survival_table(clinical_path, files).set_index("case_id")
    assert set(table.index) == {r[0] for r in ROWS} | {"TCGA-ZZ-0099"}
    assert table.index.is_unique
    assert table.loc["TCGA-A1-0001", ["n_slide_files", "n_rna_files"]].tolist() == [2, 1]
    assert table.loc["TCGA-BH-0005", ["n_slide_files", "n_rna_files"]].tolist() == [0, 1]
    assert table.loc["TCGA-E2-0009", ["n_slide_files", "n_rna_files", "n_cnv_files", "n_mutations_files"]].tolist() == [0, 0, 1, 2]
    status = table["status"].to_dict()
    assert {c for c, s in status.items() if s == "ok"} == {"TCGA-A1-0001", "TCGA-BH-0005", "TCGA-E2-0009"}
    # valid survival, nothing to learn from
    assert table.loc["TCGA-A2-0002", "reason"] == "no modality (no slide, RNA, CNV or mutation data)"
    assert table.loc["TCGA-ZZ-0099", "reason"] == "no clinical record"
    assert table.loc["TCGA-ZZ-0099", "site"] == "ZZ"
    assert table.loc["TCGA-A2-0003", "reason"] == "no survival time"  # the first reason is kept
    assert table.loc["TCGA-A1-0001", "time"] == 500 and table.loc["TCGA-A1-0001", "event"] == 1
    assert table["event"].dtype.kind == "i"


def test_survival_of_the_generated_cohort_is_its_truth(demo_cohort, demo_files, demo_truth, tmp_path):
    out = tmp_path / "survival.parquet"
    table = write_survival_table(demo_cohort["clinical"], demo_files, out)
    pd.testing.assert_frame_equal(pd.read_parquet(out), table, check_dtype=False)
    table = table.set_index("case_id")
    truth = demo_truth.set_index("case_submitter_id")
    assert set(table.index) == set(truth.index)
    assert (table["status"] == "ok").all()
    np.testing.assert_array_equal(table.loc[truth.index, "time"], truth["time"])
    np.testing.assert_array_equal(table.loc[truth.index, "event"], truth["event"])
    np.testing.assert_array_equal(table.loc[truth.index, "n_slide_files"], truth["n_slides"])
    np.testing.assert_array_equal(table.loc[truth.index, "n_rna_files"], truth["has_rna"])
    np.testing.assert_array_equal(table.loc[truth.index, "n_cnv_files"], truth["has_cnv"])
    np.testing.assert_array_equal(table.loc[truth.index, "n_mutations_files"], truth["has_maf"])


# ---------------------------------------------------------------------------------------------
# TCGA-CDR

CDR = pd.DataFrame({"Unnamed: 0": [1, 2, 3, 4, 5, 6],  # the xlsx's row numbers, as an export keeps them
                    "bcr_patient_barcode": ["TCGA-A1-0001", "TCGA-A2-0002", "TCGA-BH-0005", "TCGA-E2-0006",
                                            "TCGA-E2-0007", "TCGA-OTHER-1"],
                    "OS": ["1", "0", "1", "0", "#N/A", "1"], "OS.time": ["510", "420", "#N/A", "-2", "80", "5"],
                    "PFI": ["1", "1", "0", "0", "1", "0"], "PFI.time": ["200", "150", "700", "210", "[Not Available]", "5"],
                    "DSS": ["1", "0", "0", "0", "0", "0"], "DSS.time": ["510", "420", "700", "210", "80", "5"],
                    "DFI": ["", "", "", "", "", ""], "DFI.time": ["", "", "", "", "", ""]})


@pytest.mark.parametrize("sep,suffix", [("\t", ".tsv"), (",", ".csv")])
def test_cdr_endpoints_by_hand(tmp_path, sep, suffix):
    path = tmp_path / f"cdr{suffix}"
    CDR.to_csv(path, sep=sep, index=False)
    cases = ["TCGA-A1-0001", "TCGA-A2-0002", "TCGA-BH-0005", "TCGA-E2-0006", "TCGA-E2-0007", "TCGA-ZZ-0404"]
    os_ = cdr_survival(read_cdr(path, "OS"), cases, "OS").set_index("case_id")
    assert os_.loc[os_["status"] == "ok", ["time", "event"]].to_dict("index") == {
        "TCGA-A1-0001": {"time": 510.0, "event": 1}, "TCGA-A2-0002": {"time": 420.0, "event": 0}}
    assert os_.loc[os_["status"] == "excluded", "reason"].to_dict() == {
        "TCGA-BH-0005": "no survival time", "TCGA-E2-0006": "negative survival time (-2 days)",
        "TCGA-E2-0007": "no OS status in the TCGA-CDR table", "TCGA-ZZ-0404": "not in the TCGA-CDR table"}
    pfi = cdr_survival(read_cdr(path, "PFI"), cases[:5], "PFI").set_index("case_id")
    assert pfi["time"].iloc[:4].tolist() == [200, 150, 700, 210] and pfi["event"].tolist() == [1, 1, 0, 0, 1]
    assert pfi.loc["TCGA-E2-0007", "reason"] == "no survival time" and set(pfi["endpoint"]) == {"PFI"}
    dfi = cdr_survival(read_cdr(path, "DFI"), cases[:2], "DFI")
    assert (dfi["status"] == "excluded").all()


def test_cdr_in_the_survival_table(clinical_path, tmp_path):
    path = tmp_path / "cdr.tsv"
    CDR.to_csv(path, sep="\t", index=False)
    files = _inventory([["TCGA-A1-0001", SLIDE_TYPE], ["TCGA-A2-0002", RNA_TYPE], ["TCGA-OTHER-1", RNA_TYPE]])
    table = survival_table(clinical_path, files, cdr=path, endpoint="DSS").set_index("case_id")
    # the cases of the clinical file and the inventory, not the whole CDR
    assert set(table.index) == {r[0] for r in ROWS} | {"TCGA-OTHER-1"}
    assert table.loc["TCGA-A1-0001", ["time", "event", "status"]].tolist() == [510, 1, "ok"]
    assert table.loc["TCGA-A2-0002", ["time", "event", "status"]].tolist() == [420, 0, "ok"]
    assert table.loc["TCGA-OTHER-1", ["time", "status"]].tolist() == [5, "ok"]
    assert table.loc["TCGA-E2-0008", "reason"] == "not in the TCGA-CDR table"
    assert table.loc["TCGA-BH-0005", "reason"] == "no modality (no slide, RNA, CNV or mutation data)"
    assert set(table["endpoint"]) == {"DSS"}


def test_cdr_errors_name_the_file(clinical_path, tmp_path):
    dup = tmp_path / "dup_cdr.tsv"
    pd.concat([CDR, CDR.iloc[[1]]]).to_csv(dup, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"dup_cdr\.tsv: 1 duplicated bcr_patient_barcode.*TCGA-A2-0002"):
        read_cdr(dup)
    short = tmp_path / "short_cdr.tsv"
    CDR.drop(columns=["PFI.time"]).to_csv(short, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"short_cdr\.tsv: missing TCGA-CDR column\(s\) PFI\.time"):
        read_cdr(short, "PFI")
    with pytest.raises(ValueError, match="endpoint PFI needs a TCGA-CDR table"):
        survival_table(clinical_path, _inventory([]), endpoint="PFI")
    with pytest.raises(ValueError, match="unknown endpoint 'EFS'"):
        survival_table(clinical_path, _inventory([]), cdr=short, endpoint="EFS")


# ---------------------------------------------------------------------------------------------
# the portal's clinical download as one TSV or as per-entity TSVs; files the download could not fetch


def _gdc_cases():
    def case(i, vital, death, follow, extra_follow, sex):
        return {"case_id": f"c{i}", "submitter_id": f"TCGA-AB-000{i}", "project": {"project_id": "TCGA-AB"},
                "demographic": {"vital_status": vital, "days_to_death": death, "sex_at_birth": sex},
                "diagnoses": [{"days_to_last_follow_up": follow}],
                "follow_ups": [{"days_to_follow_up": d} for d in extra_follow]}
    return [case(1, "Alive", None, 100, [350, 40], "female"), case(2, "Dead", 800, None, [], "male"),
            case(3, "Alive", None, 60, [], "female")]


def test_per_entity_clinical_folder_reads_like_one_tsv(tmp_path):
    from gdc_standin import portal_clinical

    cases = _gdc_cases()
    folder = portal_clinical(cases, tmp_path / "per_entity", "per-entity")
    single = portal_clinical(cases, tmp_path / "single", "single")
    assert sorted(p.name for p in folder.iterdir()) == ["clinical.tsv", "exposure.tsv", "follow_up.tsv"]
    new, old = read_gdc_clinical(folder), read_gdc_clinical(single)
    assert set(new["sex_at_birth"].dropna()) == set(old["sex_at_birth"].dropna()) == {"female", "male"}
    assert set(old["gender"].dropna()) == {"female", "male"}  # both names, whichever the export has
    by_folder = overall_survival(new).set_index("case_id")
    by_file = overall_survival(old).set_index("case_id")
    assert by_folder.loc["TCGA-AB-0001", "time"] == 350  # the follow-up records count (not in the single TSV)
    assert by_file.loc["TCGA-AB-0001", "time"] == 100
    pd.testing.assert_frame_equal(by_folder.drop("TCGA-AB-0001"), by_file.drop("TCGA-AB-0001"))
    (folder / "clinical.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="needs clinical.tsv .found exposure.tsv, follow_up.tsv"):
        read_gdc_clinical(folder)


def test_files_the_download_could_not_fetch_are_named_per_case(clinical_path):
    files = _inventory([["TCGA-A1-0001", RNA_TYPE], ["TCGA-A2-0002", RNA_TYPE]])
    assert "download_failed" not in survival_table(clinical_path, files).columns  # not a GDC download: as before
    files.attrs["not_usable"] = [
        {"case_id": "TCGA-A1-0001", "data_type": SLIDE_TYPE, "file_name": "a.svs", "download_status": "failed",
         "download_reason": "HTTP 403: file a"},
        {"case_id": "TCGA-BH-0005", "data_type": RNA_TYPE, "file_name": "r.tsv", "download_status": "failed",
         "download_reason": "HTTP 404: file r"},
        {"case_id": "TCGA-A2-0002", "data_type": SLIDE_TYPE, "file_name": "m.svs", "download_status": "skipped",
         "download_reason": "slide policy: sample type 06"}]
    table = survival_table(clinical_path, files).set_index("case_id")
    assert table.loc["TCGA-A1-0001", ["status", "download_failed"]].tolist() == [
        "ok", "Slide Image a.svs: HTTP 403: file a"]
    assert table.loc["TCGA-BH-0005", "status"] == "excluded"  # its only file failed
    assert table.loc["TCGA-BH-0005", "reason"] == ("no modality (no slide, RNA, CNV or mutation data) - download "
                                                   "failed: Gene Expression Quantification r.tsv: HTTP 404: file r")
    assert table.loc["TCGA-A2-0002", "download_failed"] == ""  # skipped by policy is not a failure
