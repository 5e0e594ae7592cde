"""Bad omics and clinical input: each case is a clear error naming the file and the problem, or a
counted exclusion that ends in ``qc/cases.tsv`` with its reason."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from healnet.qc import slides_table, write_qc_tables
from healnet.splits import write_splits
from preprocessing.clinical import survival_table
from preprocessing.copy_number import read_gene_level_cnv
from preprocessing.inventory import RNA_TYPE, SLIDE_TYPE
from preprocessing.mutations import read_maf
from preprocessing.omics import CNV_TYPE, MAF_TYPE, STAR_COLUMNS, read_star_counts, write_rna_tables
from preprocessing.tabular import read_clinical_table, read_omics_table

M = "'--"
STAR_ROWS = ["N_unmapped\t\t\t10\t10\t10\t\t\t", "N_multimapping\t\t\t5\t5\t5\t\t\t",
             "N_noFeature\t\t\t2\t2\t2\t\t\t", "N_ambiguous\t\t\t1\t1\t1\t\t\t",
             "ENSG00000000003.15\tTSPAN6\tprotein_coding\t10\t5\t5\t12.5\t6.25\t37.5",
             "ENSG00000000005.6\tTNMD\tprotein_coding\t0\t0\t0\t0.0\t0.0\t0.0"]


def _star(path, comment: bool = True, header: bool = True):
    lines = (["# gene-model: GENCODE v36"] if comment else []) + (["\t".join(STAR_COLUMNS)] if header else []) + STAR_ROWS
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------------------------- clear errors


@pytest.mark.parametrize("comment", [True, False])
def test_star_file_without_its_header(tmp_path, comment):
    path = _star(tmp_path / "headless.rna_seq.augmented_star_gene_counts.tsv", comment=comment, header=False)
    with pytest.raises(ValueError, match=r"headless\.rna_seq\.augmented_star_gene_counts\.tsv: not a GDC STAR-counts "
                                         r"file: no header line \(the first line is data, 'N_unmapped'\)"):
        read_star_counts(path)
    # ... and in a cohort: the whole RNA step stops on it, naming it
    files = pd.DataFrame({"case_id": ["TCGA-AA-0001", "TCGA-AA-0002"], "sample_id": ["TCGA-AA-0001-01A", "TCGA-AA-0002-01A"],
                          "file_id": ["a", "b"], "path": [str(_star(tmp_path / "good.tsv")), str(path)]})
    with pytest.raises(ValueError, match="headless"):
        write_rna_tables(files, tmp_path / "rna.parquet", tmp_path / "genes.tsv", tmp_path / "aside.tsv")
    assert not (tmp_path / "rna.parquet").exists()


def test_empty_star_cnv_and_maf_files(tmp_path):
    for reader, name in ((read_star_counts, "empty.tsv"), (read_gene_level_cnv, "empty_cnv.tsv"), (read_maf, "empty.maf")):
        (tmp_path / name).write_text("")
        with pytest.raises(ValueError, match=rf"{name}: empty"):
            reader(tmp_path / name)


def test_cnv_file_without_its_header(tmp_path):
    path = tmp_path / "cnv_headless.tsv"
    path.write_text("ENSG00000000003.15\tTSPAN6\tchrX\t1\t100\t2\t2\t2\n")
    with pytest.raises(ValueError, match=r"cnv_headless\.tsv: not a GDC gene-level copy-number file: no header line"):
        read_gene_level_cnv(path)


def test_maf_without_its_header(tmp_path):
    path = tmp_path / "x.maf"
    path.write_text("#version gdc-1.0.0\nTP53\t7157\tMissense_Mutation\tTCGA-AA-0001-01A\n")
    with pytest.raises(ValueError, match=r"x\.maf: not a MAF file: missing column\(s\) Hugo_Symbol, "
                                         r"Variant_Classification, Tumor_Sample_Barcode"):
        read_maf(path)


def test_duplicated_case_rows_in_tables(tmp_path):
    omics = tmp_path / "proteome.tsv"
    pd.DataFrame({"case_id": ["TCGA-AA-0001", "TCGA-AA-0002", "TCGA-AA-0001", "TCGA-AA-0002", "TCGA-AA-0003"],
                  "P1": [1.0, 2, 3, 4, 5]}).to_csv(omics, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"proteome\.tsv: 2 duplicated case id\(s\): TCGA-AA-0001, TCGA-AA-0002"):
        read_omics_table(omics)
    clinical = tmp_path / "survival.csv"
    pd.DataFrame({"case_id": ["TCGA-AA-0001", "TCGA-AA-0001"], "time": [10, 20], "event": [1, 0]}).to_csv(clinical, index=False)
    with pytest.raises(ValueError, match=r"survival\.csv: 1 duplicated case id\(s\): TCGA-AA-0001"):
        read_clinical_table(clinical)


def test_nan_in_a_clinical_table(tmp_path):
    path = tmp_path / "survival.tsv"
    pd.DataFrame({"case_id": ["TCGA-AA-0001", "TCGA-AA-0002", "TCGA-AA-0003"], "time": [10.0, np.nan, 5.0],
                  "event": [1, 0, np.nan]}).to_csv(path, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"survival\.tsv: missing or non-numeric values in column\(s\) time, event "
                                         r"for 2 case\(s\): TCGA-AA-0002, TCGA-AA-0003"):
        read_clinical_table(path)


def test_nan_in_an_omics_table(tmp_path, caplog):
    """All-NaN columns are dropped (and counted in the log); other NaN stay for in-fold imputation."""
    path = tmp_path / "meth.csv"
    pd.DataFrame({"case_id": ["TCGA-AA-0001", "TCGA-AA-0002"], "cg1": [0.5, np.nan], "cg2": [np.nan, np.nan],
                  "cg3": [0.1, 0.2]}).to_csv(path, index=False)
    with caplog.at_level("INFO"):
        table = read_omics_table(path)
    assert list(table.columns) == ["cg1", "cg3"] and np.isnan(table.loc["TCGA-AA-0002", "cg1"])
    assert "meth.csv: 1 column(s) without any value dropped: cg2" in caplog.text
    assert "meth.csv: 1 missing value(s) kept for in-fold imputation" in caplog.text


# ---------------------------------------------------------------------------------------------- counted exclusions

CLINICAL = [  # case, vital status, days to death, days to last follow-up
    ["TCGA-AA-0001", "Alive", M, "400"],  # fine, has RNA
    ["TCGA-AA-0002", "Not Reported", M, "300"],  # unknown vital status, has RNA
    ["TCGA-AA-0003", "", M, "250"],  # empty vital status, has a CNV file
    ["TCGA-AA-0004", "Alive", M, "-12"],  # negative time, has RNA
    ["TCGA-AA-0005", "Dead", "-1", M],  # negative time of death, has a MAF
    ["TCGA-AA-0006", "Dead", "90", M],  # fine, but no slide, RNA, CNV or MAF at all
    ["TCGA-AA-0007", "Dead", "120", M],  # fine, has a slide that was never processed
]


def test_bad_clinical_rows_are_counted_in_the_qc_table(tmp_path):
    clinical = tmp_path / "clinical.tsv"
    pd.DataFrame(CLINICAL, columns=["case_submitter_id", "vital_status", "days_to_death", "days_to_last_follow_up"]
                 ).to_csv(clinical, sep="\t", index=False)
    files = pd.DataFrame({"case_id": ["TCGA-AA-0001", "TCGA-AA-0002", "TCGA-AA-0004", "TCGA-AA-0003", "TCGA-AA-0005",
                                      "TCGA-AA-0007"],
                          "data_type": [RNA_TYPE, RNA_TYPE, RNA_TYPE, CNV_TYPE, MAF_TYPE, SLIDE_TYPE]})
    survival = survival_table(clinical, files)
    survival.to_parquet(tmp_path / "clinical.parquet", index=False)
    rna = tmp_path / "rna.parquet"
    pd.DataFrame({"g": [1.0, 2.0, 3.0]}, index=pd.Index(["TCGA-AA-0001", "TCGA-AA-0002", "TCGA-AA-0004"], name="case_id")
                 ).to_parquet(rna)
    ok = survival[survival["status"] == "ok"]
    assert sorted(ok["case_id"]) == ["TCGA-AA-0001", "TCGA-AA-0007"]
    write_splits(tmp_path / "splits.json", [{"train": ["TCGA-AA-0007"], "val": [], "test": ["TCGA-AA-0001"]},
                                            {"train": ["TCGA-AA-0001"], "val": [], "test": ["TCGA-AA-0007"]}])
    slides = pd.DataFrame({"slide_id": ["TCGA-AA-0007-01Z-00-DX1.X"], "case_id": ["TCGA-AA-0007"], "path": ["nowhere.svs"]})
    write_qc_tables(slides, None, tmp_path / "clinical.parquet", {"rna": rna},
                    tmp_path / "splits.json", tmp_path / "qc" / "slides.tsv", tmp_path / "qc" / "cases.tsv")
    cases = pd.read_csv(tmp_path / "qc" / "cases.tsv", sep="\t", keep_default_na=False).set_index("case_id")
    assert sorted(cases.index) == sorted(r[0] for r in CLINICAL)  # every case of the clinical file, once
    assert cases["reason"].to_dict() == {
        "TCGA-AA-0001": "",
        "TCGA-AA-0002": "unknown vital status (Not Reported)",
        "TCGA-AA-0003": "unknown vital status (missing)",
        "TCGA-AA-0004": "negative survival time (-12 days)",
        "TCGA-AA-0005": "negative survival time (-1 days)",
        "TCGA-AA-0006": "no modality (no slide, RNA, CNV or mutation data)",
        "TCGA-AA-0007": "no usable modality (no tissue patches, no RNA)",  # its only slide failed
    }
    assert cases["status"].value_counts().to_dict() == {"excluded": 6, "used": 1}
    assert cases.loc["TCGA-AA-0006", ["n_slide_files", "n_rna_files", "n_cnv_files", "n_mutations_files"]].tolist() == [0, 0, 0, 0]
    qc_slides = slides_table(slides, None)
    assert qc_slides[["status", "reason"]].values.tolist() == [["failed", "not processed"]]
