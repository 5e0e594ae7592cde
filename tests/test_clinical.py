"""preprocessing.clinical: overall survival per case from the GDC export, and what each case has."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from preprocessing.clinical import overall_survival, read_gdc_clinical, survival_table, tissue_source_site, write_survival_table
from preprocessing.inventory import RNA_TYPE, SLIDE_TYPE

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
    }
    assert (ok["reason"] == "").all()
    excluded = surv[surv["status"] == "excluded"]["reason"].to_dict()
    assert excluded == {"TCGA-A2-0003": "no survival time", "TCGA-BH-0004": "negative survival time (-5 days)",
                        "TCGA-E2-0006": "no vital status", "TCGA-E2-0007": "no survival time"}
    assert np.isnan(surv.loc["TCGA-A2-0003", "time"])
    assert surv.loc["TCGA-E2-0007", "event"] == 1
    assert surv["site"].to_dict() == {c: c.split("-")[1] for c in surv.index}


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
                        ["TCGA-BH-0005", RNA_TYPE], ["TCGA-A2-0003", SLIDE_TYPE],
                        ["TCGA-ZZ-0099", SLIDE_TYPE]])  # no clinical record
    table = survival_table(clinical_path, files).set_index("case_id")
    assert set(table.index) == {r[0] for r in ROWS} | {"TCGA-ZZ-0099"}
    assert table.index.is_unique
    assert table.loc["TCGA-A1-0001", ["n_slide_files", "n_rna_files"]].tolist() == [2, 1]
    assert table.loc["TCGA-BH-0005", ["n_slide_files", "n_rna_files"]].tolist() == [0, 1]
    status = table["status"].to_dict()
    assert {c for c, s in status.items() if s == "ok"} == {"TCGA-A1-0001", "TCGA-BH-0005"}
    assert table.loc["TCGA-A2-0002", "reason"] == "no slide or RNA file"  # valid survival, nothing to learn from
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
