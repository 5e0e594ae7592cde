"""GDC omic files to cases × genes tables of raw values: what the formats share, and RNA.

Modalities (GDC sample-sheet ``Data Type`` → output under ``omics/``), a module per format:

- ``Gene Expression Quantification`` (STAR - Counts TSV) → ``rna.parquet`` (TPM) and
  ``rna_counts.parquet`` (raw ``unstranded`` read counts), read here;
- ``Gene Level Copy Number`` → ``cnv.parquet``: :mod:`preprocessing.copy_number`;
- ``Masked Somatic Mutation`` → ``mutations.parquet``: :mod:`preprocessing.mutations`.

This module holds what they share: selecting a data type's files, the aliquot choice and the
parsing helpers. Gene ids lose their Ensembl version suffix (``ENSG….15`` → ``ENSG…``). One file
per case and modality is used: tumour samples only, primary tumour (01) first
(:func:`choose_aliquots`); the others are set aside with the reason. Only parsing happens here:
normalisation (log2(TPM+1), z-scores), imputation and feature selection are fitted inside each
training fold.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from .io import write_tsv_atomic

log = logging.getLogger(__name__)

RNA_TYPE = "Gene Expression Quantification"
CNV_TYPE = "Gene Level Copy Number"
MAF_TYPE = "Masked Somatic Mutation"
STAR_COLUMNS = ["gene_id", "gene_name", "gene_type", "unstranded", "stranded_first", "stranded_second",
                "tpm_unstranded", "fpkm_unstranded", "fpkm_uq_unstranded"]


# ----------------------------------------------------------------------------------------------
# which files


def files_of_type(files: pd.DataFrame, data_type: str) -> pd.DataFrame:
    """Inventory rows of one GDC data type, sorted by case, sample and file id."""
    return files[files["data_type"] == data_type].sort_values(["case_id", "sample_id", "file_id"]).reset_index(drop=True)


def rna_files_of(files: pd.DataFrame) -> pd.DataFrame:
    """STAR-counts files of the inventory."""
    return files_of_type(files, RNA_TYPE)


def cnv_files_of(files: pd.DataFrame) -> pd.DataFrame:
    """Gene-level copy-number files of the inventory."""
    return files_of_type(files, CNV_TYPE)


def maf_files_of(files: pd.DataFrame) -> pd.DataFrame:
    """Masked somatic mutation (MAF) files of the inventory."""
    return files_of_type(files, MAF_TYPE)


def sample_type_code(sample_id: str) -> int:
    """Two-digit TCGA sample type: 01–09 tumour, 10–19 normal, 20–29 control; -1 if none."""
    parts = sample_id.split("-")
    return int(parts[3][:2]) if len(parts) > 3 and parts[3][:2].isdigit() else -1


def tumour_sample(sample_ids: str) -> str:
    """The tumour sample of a sample-sheet ``Sample ID`` cell.

    Copy-number and mutation files come from a tumour/normal pair, and the sample sheet lists
    both (``TCGA-…-01A, TCGA-…-10A``, in either order): the first tumour id, else the first id.
    """
    ids = [s.strip() for s in str(sample_ids).split(",") if s.strip()]
    tumours = [s for s in ids if 1 <= sample_type_code(s) <= 9]
    return (tumours or ids or [""])[0]


def with_tumour_samples(files: pd.DataFrame, sample_sheet: str | os.PathLike) -> pd.DataFrame:
    """``files`` with ``sample_id`` replaced by the tumour sample of the raw sample sheet's cell.

    The inventory keeps the first id of a paired cell, which may be the normal one.
    """
    sheet = pd.read_csv(sample_sheet, sep="\t", dtype=str, keep_default_na=False)
    if not {"File ID", "Sample ID"} <= set(sheet.columns):
        raise ValueError(f"{sample_sheet}: missing column(s) 'File ID' / 'Sample ID'")
    tumour = dict(zip(sheet["File ID"], sheet["Sample ID"].map(tumour_sample)))
    out = files.copy()
    out["sample_id"] = [tumour.get(f, s) or s for f, s in zip(out["file_id"], out["sample_id"])]
    return out


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


def _strip_version(gene_ids: pd.Series) -> pd.Series:
    """``ENSG00000000003.15`` → ``ENSG00000000003`` (``…_PAR_Y`` copies map to their X gene's id)."""
    return gene_ids.astype(str).str.split(".").str[0]


def _read_tsv_checked(path: str | os.PathLike, columns: list[str], kind: str) -> pd.DataFrame:
    """A TSV with ``#`` comment lines whose header must be exactly ``columns``; clear errors otherwise."""
    try:
        table = pd.read_csv(path, sep="\t", comment="#", dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty file, not a GDC {kind} file") from None
    header = list(table.columns)
    if header != columns:
        if header and header[0].startswith(("ENSG", "N_")):
            raise ValueError(f"{path}: not a GDC {kind} file: no header line (the first line is data, "
                             f"{header[0]!r}); expected the header {columns}")
        raise ValueError(f"{path}: not a GDC {kind} file; header is {header}, expected {columns}")
    return table


def _numeric(table: pd.DataFrame, columns: list[str], path: str | os.PathLike) -> pd.DataFrame:
    """Columns converted to numbers (empty → NaN); any other text is an error naming the file."""
    for col in columns:
        values = pd.to_numeric(table[col].where(table[col] != ""), errors="coerce")
        bad = values.isna() & table[col].ne("")
        if bad.any():
            row = bad.idxmax()
            raise ValueError(f"{path}: column {col} has {int(bad.sum())} non-numeric value(s), "
                             f"e.g. {table.at[row, col]!r} for gene {table.at[row, 'gene_id']}")
        table[col] = values
    return table


def _cases_by_genes(columns: dict[str, pd.Series]) -> pd.DataFrame:
    """Per-case series (gene id index) to a cases × genes frame indexed by ``case_id``."""
    matrix = pd.DataFrame(columns).T.sort_index() if columns else pd.DataFrame()
    matrix.index.name = "case_id"
    matrix.columns = matrix.columns.astype(str)
    return matrix


def _write_parquet(table: pd.DataFrame, path: str | os.PathLike) -> None:
    from .io import atomic_path

    with atomic_path(path) as tmp:
        table.to_parquet(tmp)


# ----------------------------------------------------------------------------------------------
# RNA


def read_star_counts(path: str | os.PathLike) -> pd.DataFrame:
    """Genes of a GDC 'STAR - Counts' TSV, without the N_* summary rows; Ensembl version suffix removed.

    A file without its header line (or with another header) is an error naming the file.
    """
    table = _read_tsv_checked(path, STAR_COLUMNS, "STAR-counts")
    genes = table[~table["gene_id"].str.startswith("N_")].copy()
    genes = _numeric(genes, STAR_COLUMNS[3:], path)
    genes["gene_id"] = _strip_version(genes["gene_id"])
    if genes["gene_id"].duplicated().any():  # PAR_Y copies share the id of their X gene
        genes = genes.drop_duplicates("gene_id", keep="first")
    return genes.set_index("gene_id")


def rna_matrices(files: pd.DataFrame, values: tuple[str, ...] = ("tpm_unstranded", "unstranded")
                 ) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, pd.DataFrame]:
    """Cases × genes of each of ``values`` from STAR-counts files, each file read once.

    ``files`` has columns ``case_id``, ``sample_id``, ``file_id`` and ``path``. Returns the
    matrices by value name, the gene table (id, name, type) and the files set aside.
    """
    chosen, set_aside = choose_aliquots(files)
    columns: dict[str, dict[str, pd.Series]] = {v: {} for v in values}
    genes = None
    for case_id, path in zip(chosen["case_id"], chosen["path"]):
        table = read_star_counts(path)
        for v in values:
            columns[v][case_id] = table[v]
        if genes is None:
            genes = table[["gene_name", "gene_type"]]
    matrices = {v: _cases_by_genes(columns[v]) for v in values}
    if genes is None:
        genes = pd.DataFrame(columns=["gene_name", "gene_type"], index=pd.Index([], name="gene_id"))
    return matrices, genes.reset_index(), set_aside


def write_rna_tables(files: pd.DataFrame, matrix_out: str | os.PathLike, genes_out: str | os.PathLike,
                     set_aside_out: str | os.PathLike, counts_out: str | os.PathLike | None = None,
                     value: str = "tpm_unstranded") -> pd.DataFrame:
    """RNA written atomically: TPM matrix (parquet), raw counts (parquet, when ``counts_out``),
    gene table and set-aside files (TSV). Returns the TPM matrix."""
    values = (value, "unstranded") if counts_out is not None else (value,)
    matrices, genes, set_aside = rna_matrices(files, values)
    log.info("RNA: %d cases × %d genes (%d files set aside)", *matrices[value].shape, len(set_aside))
    _write_parquet(matrices[value], matrix_out)
    if counts_out is not None:
        _write_parquet(matrices["unstranded"], counts_out)
    write_tsv_atomic(genes, genes_out)
    write_tsv_atomic(set_aside, set_aside_out)
    return matrices[value]


def omics_cases(paths: dict[str, str | os.PathLike]) -> dict[str, set[str]]:
    """The cases (row index) of each written omics parquet, by modality name."""
    return {name: set(pd.read_parquet(Path(p), columns=[]).index.astype(str)) for name, p in paths.items()}
