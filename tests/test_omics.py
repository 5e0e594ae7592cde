"""preprocessing.omics, copy_number, mutations: STAR/CNV/MAF parsing, one tumour aliquot per case, the matrices."""
from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from preprocessing.copy_number import CNV_COLUMNS, cnv_matrix, read_gene_level_cnv, write_cnv_tables
from preprocessing.mutations import NON_SILENT, mutation_matrix, read_maf, write_mutation_tables
from preprocessing.omics import (STAR_COLUMNS, choose_aliquots, maf_files_of, read_star_counts, rna_matrices,
                                 sample_type_code, tumour_sample, with_tumour_samples, write_rna_tables)

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


def test_rna_matrices_from_hand_built_files(tmp_path):
    p1 = _star(tmp_path / "1.tsv", [(g, n, t + 1) for g, n, t in GENES])
    p2 = _star(tmp_path / "2.tsv", [(g, n, t * 2) for g, n, t in GENES])
    p3 = _star(tmp_path / "3.tsv", [(g, n, 999.0) for g, n, t in GENES])  # a normal sample
    files = _files([["TCGA-BB-0002", "TCGA-BB-0002-01A", "a", str(p2)],
                    ["TCGA-BB-0001", "TCGA-BB-0001-01A", "b", str(p1)],
                    ["TCGA-BB-0001", "TCGA-BB-0001-11A", "c", str(p3)]])
    matrices, genes, aside = rna_matrices(files, ("tpm_unstranded",))
    matrix = matrices["tpm_unstranded"]
    assert list(matrix.index) == ["TCGA-BB-0001", "TCGA-BB-0002"]
    assert list(matrix.columns) == ["ENSG00000000003", "ENSG00000000005", "ENSG00000182378"]
    np.testing.assert_array_equal(matrix.loc["TCGA-BB-0001"], [13.5, 1.0, 4.25])
    np.testing.assert_array_equal(matrix.loc["TCGA-BB-0002"], [25.0, 0.0, 6.5])
    assert list(genes["gene_id"]) == list(matrix.columns) and list(genes["gene_name"]) == ["TSPAN6", "TNMD", "PLCXD1"]
    assert list(aside["file_id"]) == ["c"]
    counts = rna_matrices(files, ("unstranded",))[0]["unstranded"]
    np.testing.assert_array_equal(counts.loc["TCGA-BB-0002"], [10, 11, 12])


def _tpm_by_hand(path, column: str = "tpm_unstranded") -> dict[str, float]:
    """TPM (or another column) per versionless gene id, read with the csv module."""
    out = {}
    with open(path, newline="") as f:
        rows = csv.DictReader((line for line in f if not line.startswith("#")), delimiter="\t")
        for row in rows:
            if not row["gene_id"].startswith("N_"):
                out.setdefault(row["gene_id"].split(".")[0], float(row[column]))
    return out


def test_rna_matrix_of_the_generated_cohort_is_the_files_tpm(demo_files, demo_truth, tmp_path):
    from preprocessing.inventory import rna_files_of

    files = rna_files_of(demo_files)
    matrix_path = tmp_path / "rna.parquet"
    matrix = write_rna_tables(files, matrix_path, tmp_path / "genes.tsv", tmp_path / "aside.tsv",
                              counts_out=tmp_path / "rna_counts.parquet")
    counts = pd.read_parquet(tmp_path / "rna_counts.parquet")
    assert set(matrix.index) == set(demo_truth.loc[demo_truth["has_rna"] == 1, "case_submitter_id"])
    assert matrix.shape[1] == 200
    for case_id, path in zip(files["case_id"], files["path"]):
        by_hand = _tpm_by_hand(path)
        assert list(matrix.columns) == list(by_hand)
        np.testing.assert_allclose(matrix.loc[case_id].to_numpy(), list(by_hand.values()))
        np.testing.assert_array_equal(counts.loc[case_id].to_numpy(), list(_tpm_by_hand(path, "unstranded").values()))
    pd.testing.assert_frame_equal(pd.read_parquet(matrix_path), matrix, check_column_type=False, check_index_type=False)
    assert counts.dtypes.map(lambda d: d.kind).eq("i").all() and counts.index.equals(matrix.index)
    genes = pd.read_csv(tmp_path / "genes.tsv", sep="\t")
    assert list(genes["gene_id"]) == list(matrix.columns)
    assert len(pd.read_csv(tmp_path / "aside.tsv", sep="\t")) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aside.tsv", "genes.tsv", "rna.parquet", "rna_counts.parquet"]


# ---------------------------------------------------------------------------------------------
# gene-level copy number


def _cnv(path, rows: list[tuple], header: list[str] = CNV_COLUMNS):
    """A GDC gene-level copy-number TSV: header, then (gene_id, name, chrom, start, end, cn, min, max)."""
    lines = ["\t".join(header)] + ["\t".join("" if v is None else str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


CNV_ROWS = [("ENSG00000000003.15", "TSPAN6", "chrX", 100627108, 100639991, 2, 2, 2),
            ("ENSG00000000005.6", "TNMD", "chrX", 100584936, 100599885, 3, 2, 3),
            ("ENSG00000000419.13", "DPM1", "chr20", 50934867, 50959140, None, None, None),  # in no segment
            ("ENSG00000182378.14", "PLCXD1", "chrX", 276322, 303356, 1, 1, 1),
            ("ENSG00000182378.14_PAR_Y", "PLCXD1", "chrY", 276322, 303356, 1, 1, 1)]


def test_read_gene_level_cnv(tmp_path):
    table = read_gene_level_cnv(_cnv(tmp_path / "a.tsv", CNV_ROWS))
    assert list(table.index) == ["ENSG00000000003", "ENSG00000000005", "ENSG00000000419", "ENSG00000182378"]
    assert table.loc["ENSG00000000005", "copy_number"] == 3 and table.loc["ENSG00000000005", "min_copy_number"] == 2
    assert np.isnan(table.loc["ENSG00000000419", "copy_number"])
    assert table.loc["ENSG00000182378", "chromosome"] == "chrX"  # the X copy, not its PAR_Y twin


def test_cnv_header_and_values_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"b\.tsv.*header"):
        read_gene_level_cnv(_cnv(tmp_path / "b.tsv", CNV_ROWS, header=CNV_COLUMNS[:5] + ["cn", "lo", "hi"]))
    bad = [r if i != 1 else r[:5] + ("three", 3, 3) for i, r in enumerate(CNV_ROWS)]
    with pytest.raises(ValueError, match=r"c\.tsv: column copy_number .*'three'.*ENSG00000000005"):
        read_gene_level_cnv(_cnv(tmp_path / "c.tsv", bad))


def test_cnv_matrix_by_hand(tmp_path):
    p1 = _cnv(tmp_path / "1.tsv", CNV_ROWS)
    p2 = _cnv(tmp_path / "2.tsv", [r[:5] + (4, 4, 4) for r in CNV_ROWS])
    p3 = _cnv(tmp_path / "3.tsv", [r[:5] + (9, 9, 9) for r in CNV_ROWS])  # normal sample
    files = _files([["TCGA-CC-0002", "TCGA-CC-0002-01A", "a", str(p2)],
                    ["TCGA-CC-0001", "TCGA-CC-0001-01A", "b", str(p1)],
                    ["TCGA-CC-0001", "TCGA-CC-0001-10A", "c", str(p3)]])
    matrix, genes, aside = cnv_matrix(files)
    assert list(matrix.index) == ["TCGA-CC-0001", "TCGA-CC-0002"]
    np.testing.assert_array_equal(matrix.loc["TCGA-CC-0001"], [2, 3, np.nan, 1])
    np.testing.assert_array_equal(matrix.loc["TCGA-CC-0002"], [4, 4, 4, 4])
    assert list(genes["gene_id"]) == list(matrix.columns)
    assert list(genes["chromosome"]) == ["chrX", "chrX", "chr20", "chrX"]
    assert list(aside["file_id"]) == ["c"] and aside["reason"].iloc[0] == "not a tumour sample"


@pytest.mark.parametrize("cell,expected", [("TCGA-AA-0001-10A, TCGA-AA-0001-01A", "TCGA-AA-0001-01A"),
                                           ("TCGA-AA-0001-01A, TCGA-AA-0001-11A", "TCGA-AA-0001-01A"),
                                           ("TCGA-AA-0001-11A", "TCGA-AA-0001-11A"), ("", "")])
def test_tumour_sample_of_a_paired_cell(cell, expected):
    assert tumour_sample(cell) == expected


def _cnv_by_hand(path) -> dict[str, float]:
    """copy_number per versionless gene id, read with the csv module (empty -> nan)."""
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            out.setdefault(row["gene_id"].split(".")[0], float(row["copy_number"] or "nan"))
    return out


def test_cnv_of_the_generated_cohort(demo_cohort, demo_files, demo_truth, tmp_path):
    from preprocessing.omics import cnv_files_of

    files = with_tumour_samples(cnv_files_of(demo_files), demo_cohort["sample_sheet"])
    assert files["sample_id"].str.endswith("-01A").all()  # the sheet lists the normal first
    matrix = write_cnv_tables(files, tmp_path / "cnv.parquet", tmp_path / "genes.tsv", tmp_path / "aside.tsv")
    assert set(matrix.index) == set(demo_truth.loc[demo_truth["has_cnv"] == 1, "case_submitter_id"])
    assert matrix.shape[1] == 200
    for case_id, path in zip(files["case_id"], files["path"]):
        by_hand = _cnv_by_hand(path)
        assert list(matrix.columns) == list(by_hand)
        np.testing.assert_array_equal(matrix.loc[case_id].to_numpy(), list(by_hand.values()))
    assert len(pd.read_csv(tmp_path / "aside.tsv", sep="\t")) == 0


# ---------------------------------------------------------------------------------------------
# MAF

MAF_HEADER = ["Hugo_Symbol", "Entrez_Gene_Id", "Chromosome", "Variant_Classification", "Tumor_Sample_Barcode",
              "Matched_Norm_Sample_Barcode"]


def _maf(path, variants: list[tuple[str, str, str]], gz: bool = False, header: list[str] = MAF_HEADER):
    """A MAF: ``#`` lines, header, one row per (gene, classification, tumour barcode)."""
    import gzip

    lines = ["#version gdc-1.0.0", "#annotation.spec gdc-1.0.1-public", "\t".join(header)]
    lines += ["\t".join([g, "0", "chr1", c, b, b[:13] + "10A"]) for g, c, b in variants]
    text = "\n".join(lines) + "\n"
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


B1, B2, B3 = "TCGA-DD-0001-01A-11D-A000-09", "TCGA-DD-0002-01A-11D-A000-09", "TCGA-DD-0003-01A-11D-A000-09"


def test_read_maf_plain_and_gzipped(tmp_path):
    variants = [("TP53", "Missense_Mutation", B1), ("TTN", "Silent", B1)]
    for gz in (False, True):
        maf = read_maf(_maf(tmp_path / f"x{gz}.maf", variants, gz=gz))
        assert maf[["Hugo_Symbol", "Variant_Classification", "case_id"]].values.tolist() == [
            ["TP53", "Missense_Mutation", "TCGA-DD-0001"], ["TTN", "Silent", "TCGA-DD-0001"]]
    with pytest.raises(ValueError, match=r"nohead\.maf.*Variant_Classification"):
        read_maf(_maf(tmp_path / "nohead.maf", variants, header=[h.replace("Variant_", "V_") for h in MAF_HEADER]))


def test_non_silent_set_is_explicit():
    assert NON_SILENT == {"Missense_Mutation", "Nonsense_Mutation", "Frame_Shift_Del", "Frame_Shift_Ins",
                          "In_Frame_Del", "In_Frame_Ins", "Splice_Site", "Nonstop_Mutation", "Translation_Start_Site"}
    assert not {"Silent", "Intron", "3'UTR", "5'UTR", "3'Flank", "5'Flank", "IGR", "RNA"} & NON_SILENT


def test_mutation_matrix_by_hand(tmp_path):
    p1 = _maf(tmp_path / "1.maf", [("TP53", "Missense_Mutation", B1), ("TP53", "Nonsense_Mutation", B1),
                                   ("PIK3CA", "In_Frame_Del", B1), ("TTN", "Silent", B1), ("GATA3", "Intron", B1),
                                   ("Unknown", "Missense_Mutation", B1)], gz=True)
    p2 = _maf(tmp_path / "2.maf", [("TTN", "Silent", B2), ("GATA3", "3'UTR", B2)])  # nothing non-silent
    p3 = _maf(tmp_path / "3.maf", [("GATA3", "Splice_Site", B3), ("KRAS", "Translation_Start_Site", B3)])
    p4 = _maf(tmp_path / "4.maf", [])  # no variant at all
    files = _files([["TCGA-DD-0001", "TCGA-DD-0001-01A", "a", str(p1)], ["TCGA-DD-0002", "TCGA-DD-0002-01A", "b", str(p2)],
                    ["TCGA-DD-0003", "TCGA-DD-0003-01A", "c", str(p3)], ["TCGA-DD-0004", "TCGA-DD-0004-01A", "d", str(p4)],
                    ["TCGA-DD-0003", "TCGA-DD-0003-11A", "e", str(p4)]])
    matrix, aside = mutation_matrix(files)
    expected = pd.DataFrame([[0, 0, 1, 1], [0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]],
                            index=["TCGA-DD-0001", "TCGA-DD-0002", "TCGA-DD-0003", "TCGA-DD-0004"],
                            columns=["GATA3", "KRAS", "PIK3CA", "TP53"])
    pd.testing.assert_frame_equal(matrix, expected, check_dtype=False, check_names=False, check_index_type=False,
                                  check_column_type=False)
    assert matrix.index.name == "case_id" and matrix.dtypes.eq("int8").all()
    assert list(aside["file_id"]) == ["e"]


def test_mutations_of_the_generated_cohort(demo_cohort, demo_files, demo_truth, tmp_path):
    import gzip

    files = with_tumour_samples(maf_files_of(demo_files), demo_cohort["sample_sheet"])
    matrix = write_mutation_tables(files, tmp_path / "mutations.parquet", tmp_path / "aside.tsv")
    assert set(matrix.index) == set(demo_truth.loc[demo_truth["has_maf"] == 1, "case_submitter_id"])
    assert (matrix.sum(axis=1) == 0).any()  # the cohort's silent-only case is a row of zeros
    # independently: non-silent (gene, case) pairs read with gzip + the csv module
    expected = set()
    for path in files["path"]:
        with gzip.open(path, "rt") as f:
            rows = csv.DictReader((line for line in f if not line.startswith("#")), delimiter="\t")
            expected |= {(r["Tumor_Sample_Barcode"][:12], r["Hugo_Symbol"]) for r in rows
                         if r["Variant_Classification"] not in ("Silent", "Intron", "3'UTR", "5'Flank")}
    got = {(c, g) for c, g in matrix.stack().loc[lambda x: x == 1].index}
    assert got == expected and len(expected) > 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "mutations.parquet"), matrix, check_column_type=False,
                                  check_index_type=False)
