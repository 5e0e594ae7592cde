"""GDC masked somatic mutations (MAF) to a binary cases × genes table.

``Masked Somatic Mutation`` (MAF, tab-separated after ``#`` comment lines, plain or gzipped) →
``omics/mutations.parquet``: 1 where the case has a non-silent mutation (:data:`NON_SILENT`) in
the gene, else 0, and the files set aside. Genes are Hugo symbols (the MAF's ``Hugo_Symbol``), not
the Ensembl ids of RNA and copy number; file selection and the aliquot choice are those of
:mod:`preprocessing.omics`.
"""
from __future__ import annotations

import gzip
import logging
import os

import pandas as pd

from .io import write_tsv_atomic
from .omics import _write_parquet, choose_aliquots, sample_type_code

log = logging.getLogger(__name__)

MAF_REQUIRED = ["Hugo_Symbol", "Variant_Classification", "Tumor_Sample_Barcode"]
#: Variant classifications that change the protein (or its splicing): a gene is "mutated" in a
#: case when at least one of its variants has one of these. Silent, intronic, UTR, flanking,
#: intergenic and RNA variants are not counted.
NON_SILENT = frozenset({"Missense_Mutation", "Nonsense_Mutation", "Frame_Shift_Del", "Frame_Shift_Ins",
                        "In_Frame_Del", "In_Frame_Ins", "Splice_Site", "Nonstop_Mutation",
                        "Translation_Start_Site"})


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
