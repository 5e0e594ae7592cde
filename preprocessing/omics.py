"""GDC omic files to a cases × genes table of raw values.

Only parsing and choosing aliquots happens here. Normalisation (log2(TPM+1), z-scores) and
feature selection are fitted inside each training fold, so they never see test cases.
"""
from __future__ import annotations

import logging
import os

import pandas as pd

log = logging.getLogger(__name__)

STAR_COLUMNS = ["gene_id", "gene_name", "gene_type", "unstranded", "stranded_first", "stranded_second",
                "tpm_unstranded", "fpkm_unstranded", "fpkm_uq_unstranded"]


def read_star_counts(path: str | os.PathLike) -> pd.DataFrame:
    """Genes of a GDC 'STAR - Counts' TSV, without the N_* summary rows; Ensembl version suffix removed."""
    table = pd.read_csv(path, sep="\t", comment="#")
    if list(table.columns) != STAR_COLUMNS:
        raise ValueError(f"{path}: not a GDC STAR-counts file; header is {list(table.columns)}, expected {STAR_COLUMNS}")
    genes = table[~table["gene_id"].str.startswith("N_")].copy()
    genes["gene_id"] = genes["gene_id"].str.split(".").str[0]
    if genes["gene_id"].duplicated().any():  # PAR_Y copies share the id of their X gene
        genes = genes.drop_duplicates("gene_id", keep="first")
    return genes.set_index("gene_id")


def sample_type_code(sample_id: str) -> int:
    """Two-digit TCGA sample type: 01–09 tumour, 10–19 normal, 20–29 control."""
    parts = sample_id.split("-")
    return int(parts[3][:2]) if len(parts) > 3 and parts[3][:2].isdigit() else -1


def choose_aliquots(files: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One file per case: tumour samples only, primary tumour (01) first, then the lowest sample id.

    Returns the chosen files and the ones set aside with the reason.
    """
    files = files.assign(type_code=files["sample_id"].map(sample_type_code))
    normal = files[(files["type_code"] < 1) | (files["type_code"] > 9)].assign(reason="not a tumour sample")
    tumour = files.drop(normal.index).sort_values(["case_id", "type_code", "sample_id", "file_id"])
    chosen = tumour.drop_duplicates("case_id", keep="first")
    duplicate = tumour.drop(chosen.index).assign(reason="another aliquot of the case was chosen")
    return chosen, pd.concat([normal, duplicate])


def rna_matrix(files: pd.DataFrame, value: str = "tpm_unstranded") -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Cases × genes of ``value`` from STAR-counts files (columns ``case_id``, ``sample_id``, ``path``).

    Returns the matrix, the gene table (id, name, type) and the files set aside.
    """
    chosen, set_aside = choose_aliquots(files)
    columns, genes = {}, None
    for case_id, path in zip(chosen["case_id"], chosen["path"]):
        table = read_star_counts(path)
        columns[case_id] = table[value]
        if genes is None:
            genes = table[["gene_name", "gene_type"]]
    matrix = pd.DataFrame(columns).T.sort_index()
    matrix.index.name = "case_id"
    if genes is None:
        genes = pd.DataFrame(columns=["gene_name", "gene_type"])
    log.info("RNA: %d cases × %d genes (%d files set aside)", *matrix.shape, len(set_aside))
    return matrix, genes.reset_index(), set_aside


def write_rna_tables(files: pd.DataFrame, matrix_out: str | os.PathLike, genes_out: str | os.PathLike,
                     set_aside_out: str | os.PathLike, value: str = "tpm_unstranded") -> pd.DataFrame:
    """:func:`rna_matrix` written atomically: parquet matrix, gene table and set-aside files (TSV)."""
    from .io import atomic_path

    matrix, genes, set_aside = rna_matrix(files, value)
    with atomic_path(matrix_out) as tmp:
        matrix.to_parquet(tmp)
    for table, path in ((genes, genes_out), (set_aside, set_aside_out)):
        with atomic_path(path) as tmp:
            table.to_csv(tmp, sep="\t", index=False)
    return matrix
