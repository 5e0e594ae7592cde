"""preprocessing.omics: STAR-counts parsing, one tumour aliquot per case, and the cases × genes matrix."""
from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from preprocessing.omics import (STAR_COLUMNS, choose_aliquots, read_star_counts, rna_matrix, sample_type_code,
                                 write_rna_tables)

HEADER = "\t".join(STAR_COLUMNS)


def _star(path, genes: list[tuple[str, str, float]], header: str = HEADER):
    """A STAR-counts file in GDC's layout: comment line, header, N_* rows, then one row per gene."""
    lines = ["# gene-model: GENCODE v36", header]
    lines += [f"{k}\t\t\t{n}\t{n}\t{n}\t\t\t" for k, n in
              (("N_unmapped", 100), ("N_multimapping", 50), ("N_noFeature", 20), ("N_ambiguous", 7))]
    for i, (gid, name, tpm) in enumerate(genes):
        lines.append(f"{gid}\t{name}\tprotein_coding\t{10 + i}\t{5 + i}\t{5}\t{tpm}\t{tpm / 2}\t{tpm * 3}")
    path.write_text("\n".join(lines) + "\n")
    return path


GENES = [("ENSG00000000003.15", "TSPAN6", 12.5), ("ENSG00000000005.6", "TNMD", 0.0),
         ("ENSG00000182378.14", "PLCXD1", 3.25), ("ENSG00000182378.14_PAR_Y", "PLCXD1", 0.0)]


def test_read_star_counts_strips_versions_and_summary_rows(tmp_path):
    table = read_star_counts(_star(tmp_path / "a.tsv", GENES))
    assert list(table.index) == ["ENSG00000000003", "ENSG00000000005", "ENSG00000182378"]
    assert not table.index.str.startswith("N_").any()
    assert table.loc["ENSG00000000003", "tpm_unstranded"] == 12.5
    assert table.loc["ENSG00000182378", "tpm_unstranded"] == 3.25  # the X copy, not its PAR_Y twin
    assert table.loc["ENSG00000000005", "gene_name"] == "TNMD"
    assert table.loc["ENSG00000000003", "unstranded"] == 10


def test_wrong_header_names_the_file(tmp_path):
    path = _star(tmp_path / "counts.tsv", GENES, header=HEADER.replace("tpm_unstranded", "tpm"))
    with pytest.raises(ValueError) as err:
        read_star_counts(path)
    assert str(path) in str(err.value)
    other = tmp_path / "not_star.tsv"
    other.write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="not_star.tsv"):
        read_star_counts(other)


@pytest.mark.parametrize("sample_id,code", [("TCGA-AA-0001-01A", 1), ("TCGA-AA-0001-02B", 2), ("TCGA-AA-0001-11A", 11),
                                            ("TCGA-AA-0001-06A", 6), ("TCGA-AA-0001", -1), ("junk", -1)])
def test_sample_type_code(sample_id, code):
    assert sample_type_code(sample_id) == code


def _files(rows):
    return pd.DataFrame(rows, columns=["case_id", "sample_id", "file_id", "path"])


def test_choose_aliquots_prefers_primary_tumour_and_drops_normals():
    files = _files([
        ["TCGA-AA-0001", "TCGA-AA-0001-02A", "f1", "p1"],  # recurrence
        ["TCGA-AA-0001", "TCGA-AA-0001-01B", "f2", "p2"],  # primary: chosen
        ["TCGA-AA-0001", "TCGA-AA-0001-11A", "f3", "p3"],  # normal
        ["TCGA-AA-0002", "TCGA-AA-0002-11A", "f4", "p4"],  # only a normal: the case has no RNA
        ["TCGA-AA-0003", "TCGA-AA-0003-01B", "f6", "p6"],
        ["TCGA-AA-0003", "TCGA-AA-0003-01A", "f5", "p5"],  # same type: lowest sample id
        ["TCGA-AA-0004", "TCGA-AA-0004-06A", "f7", "p7"],  # metastasis only: still a tumour
    ])
    chosen, aside = choose_aliquots(files)
    assert dict(zip(chosen["case_id"], chosen["file_id"])) == {"TCGA-AA-0001": "f2", "TCGA-AA-0003": "f5",
                                                                "TCGA-AA-0004": "f7"}
    assert chosen["case_id"].is_unique
    reasons = dict(zip(aside["file_id"], aside["reason"]))
    assert set(reasons) == {"f1", "f3", "f4", "f6"}  # every file is either chosen or set aside with a reason
    assert reasons["f3"] == reasons["f4"] == "not a tumour sample"
    assert "another aliquot" in reasons["f1"] and "another aliquot" in reasons["f6"]


def test_rna_matrix_from_hand_built_files(tmp_path):
    p1 = _star(tmp_path / "1.tsv", [(g, n, t + 1) for g, n, t in GENES])
    p2 = _star(tmp_path / "2.tsv", [(g, n, t * 2) for g, n, t in GENES])
    p3 = _star(tmp_path / "3.tsv", [(g, n, 999.0) for g, n, t in GENES])  # a normal sample
    files = _files([["TCGA-BB-0002", "TCGA-BB-0002-01A", "a", str(p2)],
                    ["TCGA-BB-0001", "TCGA-BB-0001-01A", "b", str(p1)],
                    ["TCGA-BB-0001", "TCGA-BB-0001-11A", "c", str(p3)]])
    matrix, genes, aside = rna_matrix(files)
    assert list(matrix.index) == ["TCGA-BB-0001", "TCGA-BB-0002"]
    assert list(matrix.columns) == ["ENSG00000000003", "ENSG00000000005", "ENSG00000182378"]
    np.testing.assert_array_equal(matrix.loc["TCGA-BB-0001"], [13.5, 1.0, 4.25])
    np.testing.assert_array_equal(matrix.loc["TCGA-BB-0002"], [25.0, 0.0, 6.5])
    assert list(genes["gene_id"]) == list(matrix.columns) and list(genes["gene_name"]) == ["TSPAN6", "TNMD", "PLCXD1"]
    assert list(aside["file_id"]) == ["c"]
    counts, _, _ = rna_matrix(files, value="unstranded")
    np.testing.assert_array_equal(counts.loc["TCGA-BB-0002"], [10, 11, 12])


def _tpm_by_hand(path) -> dict[str, float]:
    """TPM per versionless gene id, read with the csv module."""
    out = {}
    with open(path, newline="") as f:
        rows = csv.DictReader((line for line in f if not line.startswith("#")), delimiter="\t")
        for row in rows:
            if not row["gene_id"].startswith("N_"):
                out.setdefault(row["gene_id"].split(".")[0], float(row["tpm_unstranded"]))
    return out


def test_rna_matrix_of_the_generated_cohort_is_the_files_tpm(demo_files, demo_truth, tmp_path):
    from preprocessing.inventory import rna_files_of

    files = rna_files_of(demo_files)
    matrix_path = tmp_path / "rna.parquet"
    matrix = write_rna_tables(files, matrix_path, tmp_path / "genes.tsv", tmp_path / "aside.tsv")
    assert set(matrix.index) == set(demo_truth.loc[demo_truth["has_rna"] == 1, "case_submitter_id"])
    assert matrix.shape[1] == 200
    for case_id, path in zip(files["case_id"], files["path"]):
        by_hand = _tpm_by_hand(path)
        assert list(matrix.columns) == list(by_hand)
        np.testing.assert_allclose(matrix.loc[case_id].to_numpy(), list(by_hand.values()))
    pd.testing.assert_frame_equal(pd.read_parquet(matrix_path), matrix, check_column_type=False, check_index_type=False)
    genes = pd.read_csv(tmp_path / "genes.tsv", sep="\t")
    assert list(genes["gene_id"]) == list(matrix.columns)
    assert len(pd.read_csv(tmp_path / "aside.tsv", sep="\t")) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aside.tsv", "genes.tsv", "rna.parquet"]
