"""preprocessing.tabular: omics and clinical data of any cohort as plain tables (TSV, CSV, parquet)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from preprocessing.tabular import (read_clinical_table, read_omics_table, read_table, tabular_survival_table,
                                   write_omics_table, write_tabular_survival_table)

REPO = Path(__file__).resolve().parents[1]
IDS = ["TCGA-AA-0001", "TCGA-AA-0002", "TCGA-AA-0003", "TCGA-AA-0004"]
VALUES = np.array([[1.5, 0.0, np.nan], [2.0, -1.0, 3.0], [0.25, 4.0, 1.0], [7.0, 8.0, 9.0]])
OMICS = pd.DataFrame(VALUES, columns=["g1", "g2", "g3"]).assign(case_id=IDS)


def _save(df: pd.DataFrame, path: Path, index: bool = False) -> Path:
    name = path.name.removesuffix(".gz")
    if name.endswith(".parquet"):
        df.to_parquet(path, index=index)
    else:
        df.to_csv(path, sep="," if name.endswith(".csv") else "\t", index=index)
    return path


@pytest.mark.parametrize("layout", ["id_last.tsv", "id_first.csv", "id_first.tsv.gz", "column.parquet",
                                    "index.parquet", "first.txt"])
def test_read_table_formats_and_id_column(tmp_path, layout):
    df = OMICS
    if layout.startswith("id_first") or layout.startswith("first"):
        df = OMICS[["case_id", "g1", "g2", "g3"]]
    if layout == "first.txt":
        df = df.rename(columns={"case_id": "patient"})  # no case_id column: the first column is the id
    if layout == "index.parquet":
        _save(OMICS.set_index("case_id"), tmp_path / layout, index=True)
    else:
        _save(df, tmp_path / layout)
    table = read_omics_table(tmp_path / layout)
    assert table.index.name == "case_id" and list(table.index) == IDS
    assert list(table.columns) == ["g1", "g2", "g3"]
    np.testing.assert_array_equal(table.to_numpy(), VALUES)  # the NaN stays for in-fold imputation


def test_unknown_format_names_the_file(tmp_path):
    path = tmp_path / "omics.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(ValueError, match=r"omics\.xlsx: unknown table format"):
        read_table(path)
    with pytest.raises(FileNotFoundError, match=r"absent\.tsv"):
        read_table(tmp_path / "absent.tsv")


def test_omics_all_nan_columns_are_dropped_and_counted(tmp_path, caplog):
    df = OMICS.assign(empty1=np.nan, empty2=np.nan)
    path = _save(df, tmp_path / "prot.tsv")
    with caplog.at_level("WARNING"):
        table = write_omics_table(path, tmp_path / "omics" / "prot.parquet")
    assert list(table.columns) == ["g1", "g2", "g3"]
    assert "2 column(s) without any value dropped: empty1, empty2" in caplog.text
    back = pd.read_parquet(tmp_path / "omics" / "prot.parquet")
    pd.testing.assert_frame_equal(back, table, check_index_type=False, check_column_type=False)
    assert back.loc["TCGA-AA-0001"].isna().tolist() == [False, False, True]


def test_omics_bad_values_name_the_file_and_columns(tmp_path):
    text = OMICS.astype(object)
    text.loc[1, "g2"] = "high"
    with pytest.raises(ValueError, match=r"words\.tsv: non-numeric values in 1 column\(s\): g2"):
        read_omics_table(_save(text, tmp_path / "words.tsv"))
    with pytest.raises(ValueError, match=r"inf\.tsv: infinite values in 1 column\(s\): g1"):
        read_omics_table(_save(OMICS.assign(g1=[1, np.inf, 2, 3]), tmp_path / "inf.tsv"))
    with pytest.raises(ValueError, match=r"nothing\.tsv: no feature with a value"):
        read_omics_table(_save(OMICS[["case_id"]].assign(x=np.nan), tmp_path / "nothing.tsv"))
    missing_id = OMICS.astype(object)
    missing_id.loc[2, "case_id"] = ""
    with pytest.raises(ValueError, match=r"noid\.csv: 1 row\(s\) without a case id in column 'case_id' \(rows 4"):
        read_omics_table(_save(missing_id, tmp_path / "noid.csv"))


CLINICAL = pd.DataFrame({"case_id": IDS, "time": [100.0, 250.5, -4.0, 30.0], "event": [1, 0, 1, 0]})


def test_clinical_table_by_hand(tmp_path):
    surv = read_clinical_table(_save(CLINICAL, tmp_path / "clin.csv"), endpoint="PFI").set_index("case_id")
    assert surv.loc[["TCGA-AA-0001", "TCGA-AA-0002", "TCGA-AA-0004"], ["time", "event"]].values.tolist() == [
        [100.0, 1], [250.5, 0], [30.0, 0]]
    assert surv["status"].tolist() == ["ok", "ok", "excluded", "ok"]
    assert surv.loc["TCGA-AA-0003", "reason"] == "negative survival time (-4 days)"
    assert set(surv["endpoint"]) == {"PFI"} and surv.loc["TCGA-AA-0001", "site"] == "AA"


def test_clinical_table_errors(tmp_path):
    with pytest.raises(ValueError, match=r"noevent\.tsv: missing clinical column\(s\) event"):
        read_clinical_table(_save(CLINICAL.drop(columns="event"), tmp_path / "noevent.tsv"))
    with pytest.raises(ValueError, match=r"events\.tsv: event must be 0 or 1; not so for 1 case\(s\): TCGA-AA-0002"):
        read_clinical_table(_save(CLINICAL.assign(event=[1, 2, 0, 0]), tmp_path / "events.tsv"))


def test_tabular_survival_table_accounts_for_every_case(tmp_path):
    omics = {"prot": tmp_path / "prot.parquet", "meth": tmp_path / "meth.parquet"}
    pd.DataFrame({"x": [1.0, 2.0]}, index=pd.Index(["TCGA-AA-0001", "TCGA-ZZ-0009"], name="case_id")).to_parquet(omics["prot"])
    pd.DataFrame({"y": [1.0]}, index=pd.Index(["TCGA-AA-0002"], name="case_id")).to_parquet(omics["meth"])
    slides = pd.Series({"TCGA-AA-0001": 2, "TCGA-AA-0003": 1})
    clinical = _save(CLINICAL, tmp_path / "clin.tsv")
    table = tabular_survival_table(clinical, omics, slides=slides).set_index("case_id")
    assert sorted(table.index) == sorted(IDS + ["TCGA-ZZ-0009"])
    assert table[["n_slide_files", "n_prot_files", "n_meth_files"]].to_dict("index") == {
        "TCGA-AA-0001": {"n_slide_files": 2, "n_prot_files": 1, "n_meth_files": 0},
        "TCGA-AA-0002": {"n_slide_files": 0, "n_prot_files": 0, "n_meth_files": 1},
        "TCGA-AA-0003": {"n_slide_files": 1, "n_prot_files": 0, "n_meth_files": 0},
        "TCGA-AA-0004": {"n_slide_files": 0, "n_prot_files": 0, "n_meth_files": 0},
        "TCGA-ZZ-0009": {"n_slide_files": 0, "n_prot_files": 1, "n_meth_files": 0}}
    assert table["status"].to_dict() == {"TCGA-AA-0001": "ok", "TCGA-AA-0002": "ok", "TCGA-AA-0003": "excluded",
                                         "TCGA-AA-0004": "excluded", "TCGA-ZZ-0009": "excluded"}
    assert table.loc["TCGA-AA-0003", "reason"] == "negative survival time (-4 days)"  # the first reason is kept
    assert table.loc["TCGA-AA-0004", "reason"] == "no modality (no slide, prot or meth data)"
    assert table.loc["TCGA-ZZ-0009", "reason"] == "no clinical record"
    out = tmp_path / "clinical.parquet"
    written = write_tabular_survival_table(clinical, omics, out, slides=slides)
    pd.testing.assert_frame_equal(pd.read_parquet(out), written, check_dtype=False)


def test_snakemake_tabular_rules(demo_cohort, demo_truth, tmp_path):
    """The tabular rules on the generated cohort: a proteome table and a clinical table replace the GDC ones."""
    raw = Path(demo_cohort["out_dir"])
    cases = demo_truth["case_submitter_id"].tolist()
    prot = pd.DataFrame({"case_id": cases[:5], "P1": np.arange(5.0), "empty": np.nan})
    _save(prot, tmp_path / "prot.csv")
    clinical = demo_truth[["case_submitter_id", "time", "event"]].rename(columns={"case_submitter_id": "case_id"})
    _save(clinical, tmp_path / "clin.tsv")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["cohort_files"] = []
    config["cohorts"] = {"byo": {"data_dir": str(raw), "sample_sheet": demo_cohort["sample_sheet"],
                                 "manifest": demo_cohort["manifest"], "clinical": demo_cohort["clinical"],
                                 "omics_tables": {"proteome": str(tmp_path / "prot.csv")},
                                 "clinical_table": str(tmp_path / "clin.tsv")}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    res = "results/byo"
    run = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                          "--configfile", str(tmp_path / "config.yaml"), "--cores", "1",
                          f"{res}/clinical.parquet", f"{res}/omics/proteome.parquet"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    proteome = pd.read_parquet(tmp_path / res / "omics" / "proteome.parquet")
    assert list(proteome.index) == sorted(cases[:5]) and list(proteome.columns) == ["P1"]
    table = pd.read_parquet(tmp_path / res / "clinical.parquet").set_index("case_id")
    assert sorted(table.index) == sorted(cases) and (table["status"] == "ok").all()
    assert table.loc[cases[:5], "n_proteome_files"].tolist() == [1] * 5
    np.testing.assert_array_equal(table.loc[cases, "time"], demo_truth["time"])
