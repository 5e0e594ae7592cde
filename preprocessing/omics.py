"""GDC omic files to cases × genes tables of raw values, one table per modality.

Modalities (GDC sample-sheet ``Data Type`` → output under ``omics/``):

- ``Gene Expression Quantification`` (STAR - Counts TSV) → ``rna.parquet`` (TPM) and
  ``rna_counts.parquet`` (raw ``unstranded`` read counts);
- ``Gene Level Copy Number`` (ASCAT gene-level TSV) → ``cnv.parquet`` (``copy_number``, absolute
  integer copies; empty where no segment covers the gene, kept as NaN);
- ``Masked Somatic Mutation`` (MAF, may be gzipped) → ``mutations.parquet``: 1 where the case has
  a non-silent mutation (:data:`NON_SILENT`) in the gene, else 0.

Gene ids lose their Ensembl version suffix (``ENSG….15`` → ``ENSG…``). One file per case and
modality is used: tumour samples only, primary tumour (01) first (:func:`choose_aliquots`); the
others are set aside with the reason. Only parsing happens here: normalisation (log2(TPM+1),
z-scores), imputation and feature selection are fitted inside each training fold.
"""
from __future__ import annotations

import gzip
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
CNV_COLUMNS = ["gene_id", "gene_name", "chromosome", "start", "end", "copy_number", "min_copy_number",
               "max_copy_number"]
MAF_REQUIRED = ["Hugo_Symbol", "Variant_Classification", "Tumor_Sample_Barcode"]
#: Variant classifications that change the protein (or its splicing): a gene is "mutated" in a
#: case when at least one of its variants has one of these. Silent, intronic, UTR, flanking,
#: intergenic and RNA variants are not counted.
NON_SILENT = frozenset({"Missense_Mutation", "Nonsense_Mutation", "Frame_Shift_Del", "Frame_Shift_Ins",
                        "In_Frame_Del", "In_Frame_Ins", "Splice_Site", "Nonstop_Mutation",
                        "Translation_Start_Site"})


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


# ----------------------------------------------------------------------------------------------
# copy number


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


# ----------------------------------------------------------------------------------------------
# mutations


def _is_gzip(path: str | os.PathLike) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def read_maf(path: str | os.PathLike) -> pd.DataFrame:
    """The variants of a MAF (``#`` comment lines first; plain or gzipped): Hugo_Symbol,
    Variant_Classification, Tumor_Sample_Barcode and ``case_id`` (the barcode's first 12 characters).

    A missing required column (or a missing header) is an error naming the file.
    """
    gz = _is_gzip(path)
    opener = gzip.open if gz else open
    n_comments = 0
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.startswith("#"):
                break
            n_comments += 1
    try:
        table = pd.read_csv(path, sep="\t", skiprows=n_comments, dtype=str, keep_default_na=False,
                            compression="gzip" if gz else None, low_memory=False)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty MAF file (no header line)") from None
    missing = [c for c in MAF_REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: not a MAF file: missing column(s) {', '.join(missing)} "
                         f"(header starts {list(table.columns)[:5]})")
    table = table[MAF_REQUIRED].copy()
    table["case_id"] = table["Tumor_Sample_Barcode"].str[:12]
    return table


def mutation_matrix(files: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Binary cases × genes (Hugo symbols): 1 where the case has a :data:`NON_SILENT` variant.

    Cases are those of the chosen MAF files (one per case) plus any case named by a tumour
    barcode in them; a case whose MAF has no non-silent variant is a row of zeros. Variants
    without a gene symbol (``Unknown``, empty) or from a non-tumour barcode are not counted
    (logged). Returns the matrix and the files set aside.
    """
    chosen, set_aside = choose_aliquots(files)
    cases, hits = set(chosen["case_id"]), []
    for path in chosen["path"]:
        maf = read_maf(path)
        tumour = maf["Tumor_Sample_Barcode"].map(sample_type_code).between(1, 9)
        if (~tumour).any():
            log.warning("%s: %d variant(s) of non-tumour barcodes not counted", path, int((~tumour).sum()))
        maf = maf[tumour]
        cases |= set(maf["case_id"])
        non_silent = maf[maf["Variant_Classification"].isin(NON_SILENT)]
        no_gene = non_silent["Hugo_Symbol"].isin(["", "Unknown"])
        if no_gene.any():
            log.warning("%s: %d non-silent variant(s) without a gene symbol not counted", path, int(no_gene.sum()))
        hits.append(non_silent.loc[~no_gene, ["case_id", "Hugo_Symbol"]])
    pairs = pd.concat(hits, ignore_index=True).drop_duplicates() if hits else pd.DataFrame(columns=["case_id", "Hugo_Symbol"])
    matrix = pd.crosstab(pairs["case_id"], pairs["Hugo_Symbol"]).clip(upper=1) if len(pairs) else pd.DataFrame()
    matrix = matrix.reindex(index=sorted(cases), columns=sorted(matrix.columns), fill_value=0).astype("int8")
    matrix.index.name, matrix.columns.name = "case_id", None
    matrix.columns = matrix.columns.astype(str)
    log.info("Mutations: %d cases × %d genes with a non-silent mutation (%d files set aside)",
             *matrix.shape, len(set_aside))
    return matrix, set_aside


def write_mutation_tables(files: pd.DataFrame, matrix_out: str | os.PathLike,
                          set_aside_out: str | os.PathLike) -> pd.DataFrame:
    """:func:`mutation_matrix` written atomically: parquet matrix and set-aside files (TSV)."""
    matrix, set_aside = mutation_matrix(files)
    _write_parquet(matrix, matrix_out)
    write_tsv_atomic(set_aside, set_aside_out)
    return matrix


def omics_cases(paths: dict[str, str | os.PathLike]) -> dict[str, set[str]]:
    """The cases (row index) of each written omics parquet, by modality name."""
    return {name: set(pd.read_parquet(Path(p), columns=[]).index.astype(str)) for name, p in paths.items()}
