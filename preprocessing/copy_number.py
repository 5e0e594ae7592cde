"""GDC gene-level copy number to a cases × genes table of absolute copies.

``Gene Level Copy Number`` (ASCAT gene-level TSV, one per tumour/normal pair) → ``omics/cnv.parquet``
(``copy_number``, absolute integer copies; empty where no segment covers the gene, kept as NaN),
with the gene table (id, name, chromosome, start, end) and the files set aside. Genes are
versionless Ensembl ids, as for RNA; file selection and the aliquot choice are those of
:mod:`preprocessing.omics`.
"""
from __future__ import annotations

import logging
import os

import pandas as pd

from .io import write_tsv_atomic
from .omics import _cases_by_genes, _numeric, _read_tsv_checked, _strip_version, _write_parquet, choose_aliquots

log = logging.getLogger(__name__)

CNV_COLUMNS = ["gene_id", "gene_name", "chromosome", "start", "end", "copy_number", "min_copy_number",
               "max_copy_number"]


def read_gene_level_cnv(path: str | os.PathLike) -> pd.DataFrame:
    """Genes of a GDC 'Gene Level Copy Number' TSV, indexed by versionless Ensembl id.

    ``copy_number`` (and min/max) are absolute copies; an empty cell (gene in no segment) is NaN.
    """
    table = _numeric(_read_tsv_checked(path, CNV_COLUMNS, "gene-level copy-number"),
                     ["start", "end", "copy_number", "min_copy_number", "max_copy_number"], path)
    table["gene_id"] = _strip_version(table["gene_id"])
    return table.drop_duplicates("gene_id", keep="first").set_index("gene_id")


def cnv_matrix(files: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Cases × genes of ``copy_number`` from gene-level copy-number files (one aliquot per case).

    Returns the matrix, the gene table (id, name, chromosome, start, end) and the files set aside.
    """
    chosen, set_aside = choose_aliquots(files)
    columns, genes = {}, []
    for case_id, path in zip(chosen["case_id"], chosen["path"]):
        table = read_gene_level_cnv(path)
        columns[case_id] = table["copy_number"]
        genes.append(table[["gene_name", "chromosome", "start", "end"]])
    matrix = _cases_by_genes(columns)
    if genes:
        gene_table = pd.concat(genes)
        gene_table = gene_table[~gene_table.index.duplicated()].reindex(matrix.columns)
    else:
        gene_table = pd.DataFrame(columns=["gene_name", "chromosome", "start", "end"])
    gene_table.index.name = "gene_id"
    log.info("CNV: %d cases × %d genes (%d files set aside)", *matrix.shape, len(set_aside))
    return matrix, gene_table.reset_index(), set_aside


def write_cnv_tables(files: pd.DataFrame, matrix_out: str | os.PathLike, genes_out: str | os.PathLike,
                     set_aside_out: str | os.PathLike) -> pd.DataFrame:
    """:func:`cnv_matrix` written atomically: parquet matrix, gene table and set-aside files (TSV)."""
    matrix, genes, set_aside = cnv_matrix(files)
    _write_parquet(matrix, matrix_out)
    write_tsv_atomic(genes, genes_out)
    write_tsv_atomic(set_aside, set_aside_out)
    return matrix
