"""Bring your own tables: omics and clinical data of any cohort as plain tables.

An omics table has one row per case and one column per feature; a clinical table has the
columns ``case_id``, ``time`` (days, or any unit used consistently) and ``event`` (1 = event,
0 = censored). Format by extension: ``.tsv``/``.txt`` (tab), ``.csv`` (comma), either optionally
``.gz`` or ``.zip``, or ``.parquet``. The case id is the ``case_id`` column if there is one, else (parquet)
a named index, else the first column.

Validation, each failure an error naming the file:

- omics: duplicated case ids, empty ids, non-numeric or infinite values, no feature left. Columns
  that are entirely empty (NaN) are dropped and counted in the log. Other NaN values are kept:
  imputation is fitted inside each training fold, never here;
- clinical: missing columns, duplicated case ids, any NaN in ``case_id``/``time``/``event`` (the
  rows are named), ``event`` other than 0/1. A negative time is not an error: the case is kept
  with status ``excluded`` and the reason, and counted in ``qc/cases.tsv``.

A PORPOISE/MCAT table (``tcga_<project>_all_clean.csv[.zip]``, as PORPOISE, MCAT and HEALNet
published them) holds both, one row per diagnostic slide: :func:`read_porpoise_table` splits it
into the ``rna`` (``*_rnaseq``, already z-scored), ``cnv`` (``*_cnv``, -2..2) and ``mutations``
(``*_mut``, 0/1) tables, one row per patient, and the survival rows (``survival_months`` in days,
``event`` = 1 - ``censorship``), with the same checks plus: patients whose rows disagree.

Outputs follow the GDC path's contract: ``omics/{name}.parquet`` (cases × features, index
``case_id``) and ``clinical.parquet`` (:data:`preprocessing.clinical.SURVIVAL_COLUMNS` plus
``n_{modality}_files``).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .clinical import SURVIVAL_COLUMNS, attach_modalities, tissue_source_site, write_table

log = logging.getLogger(__name__)

ID = "case_id"
CLINICAL_REQUIRED = [ID, "time", "event"]
#: PORPOISE/MCAT tables: survival columns, and the feature suffix of each modality
PORPOISE_REQUIRED = [ID, "survival_months", "censorship"]
PORPOISE_SUFFIXES = {"rna": "_rnaseq", "cnv": "_cnv", "mutations": "_mut"}
DAYS_PER_MONTH = 30.44  # days in a month (365.25 / 12, rounded as TCGA-derived tables use it)


def read_table(path: str | os.PathLike, numbers: bool = False) -> pd.DataFrame:
    """A table with its case ids as a string index named ``case_id`` (see the module docstring).

    A text table is read as strings, or with ``numbers`` (an omics table) with its values parsed
    as numbers where they are (its case ids stay strings): a cohort's 60 000 genes as strings
    would take gigabytes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    name = path.name.lower().removesuffix(".gz").removesuffix(".zip")
    if name.endswith(".parquet"):
        table = pd.read_parquet(path)
        if ID not in table.columns and (table.index.name is not None or not isinstance(table.index, pd.RangeIndex)):
            table = table.reset_index()
    elif name.endswith((".tsv", ".txt", ".csv")):
        sep = "," if name.endswith(".csv") else "\t"
        dtype = str
        if numbers:
            header = pd.read_csv(path, sep=sep, nrows=0).columns
            dtype = {ID if ID in header else header[0]: str} if len(header) else str
        table = pd.read_csv(path, sep=sep, dtype=dtype, float_precision="round_trip")
    else:
        raise ValueError(f"{path}: unknown table format; use .tsv, .txt, .csv (optionally .gz) or .parquet")
    return index_by_case(table, path)


def index_by_case(table: pd.DataFrame, source: str | os.PathLike, unique: bool = True) -> pd.DataFrame:
    """``table`` indexed by its ``case_id`` column (else its first column) as stripped strings.

    Empty ids, and with ``unique`` duplicated ids, are errors naming ``source`` and the rows."""
    if table.shape[1] == 0:
        raise ValueError(f"{source}: no columns")
    id_col = ID if ID in table.columns else table.columns[0]
    ids = table[id_col]
    empty = ids.isna() | ids.astype(str).str.strip().eq("")
    if empty.any():
        raise ValueError(f"{source}: {int(empty.sum())} row(s) without a case id in column {id_col!r} "
                         f"(rows {', '.join(str(i + 2) for i in np.flatnonzero(empty)[:10])}, counting the header as 1)")
    table = table.drop(columns=[id_col])
    table.index = pd.Index(ids.astype(str).str.strip(), name=ID)
    dup = table.index[table.index.duplicated()].unique()
    if unique and len(dup):
        raise ValueError(f"{source}: {len(dup)} duplicated case id(s): {', '.join(dup[:10])}")
    return table


def validate_omics(table: pd.DataFrame, source: str | os.PathLike) -> pd.DataFrame:
    """Cases × features (index ``case_id``) as floats, checked (module docstring); all-NaN columns
    dropped. ``source`` names the file in errors and the log."""
    table = table.set_axis(table.columns.astype(str), axis=1)
    words = [c for c, kind in zip(table.columns, table.dtypes) if kind.kind not in "iuf"]  # text, True/False
    numeric = table.apply(pd.to_numeric, errors="coerce") if words else table.astype(float, copy=False)
    bad = (numeric[words].isna() & table[words].notna()).any() | (table[words].dtypes == bool)
    if bad.any():
        cols = list(bad[bad].index)
        raise ValueError(f"{source}: non-numeric values in {len(cols)} column(s): {', '.join(cols[:10])}")
    infinite = np.isinf(numeric.to_numpy(dtype=float)).any(axis=0)
    if infinite.any():
        cols = list(numeric.columns[infinite])
        raise ValueError(f"{source}: infinite values in {len(cols)} column(s): {', '.join(cols[:10])}")
    all_nan = numeric.isna().all()
    if all_nan.any():
        log.warning("%s: %d column(s) without any value dropped: %s", source, int(all_nan.sum()),
                    ", ".join(list(all_nan[all_nan].index)[:10]))
        numeric = numeric.loc[:, ~all_nan]
    if numeric.shape[1] == 0 or numeric.shape[0] == 0:
        raise ValueError(f"{source}: no feature with a value (shape {numeric.shape[0]} cases × {numeric.shape[1]} columns)")
    n_nan = int(numeric.isna().sum().sum())
    if n_nan:
        log.info("%s: %d missing value(s) kept for in-fold imputation", source, n_nan)
    return numeric.astype(float).sort_index()


def read_omics_table(path: str | os.PathLike) -> pd.DataFrame:
    """Cases × features of an omics table, validated (module docstring); all-NaN columns dropped."""
    return validate_omics(read_table(path, numbers=True), path)


def write_omics_table(path: str | os.PathLike, out: str | os.PathLike) -> pd.DataFrame:
    """:func:`read_omics_table` written atomically to ``out`` (parquet, index ``case_id``)."""
    table = read_omics_table(path)
    _write_parquet(table, out)
    log.info("%s: %d cases × %d features written to %s", path, *table.shape, out)
    return table


def _write_parquet(table: pd.DataFrame, out: str | os.PathLike) -> None:
    from .io import atomic_path

    with atomic_path(out) as tmp:
        table.to_parquet(tmp)


def _numbers(table: pd.DataFrame, columns: list[str], source: str | os.PathLike) -> pd.DataFrame:
    """``columns`` as numbers; a missing or non-numeric value is an error naming the cases."""
    values = table[columns].apply(pd.to_numeric, errors="coerce")
    nan = values.isna()
    if nan.any().any():
        rows = list(values.index[nan.any(axis=1)])
        cols = list(nan.columns[nan.any()])
        raise ValueError(f"{source}: missing or non-numeric values in column(s) {', '.join(cols)} "
                         f"for {len(rows)} case(s): {', '.join(rows[:10])}")
    return values


def _binary(values: pd.Series, source: str | os.PathLike) -> None:
    bad = ~values.isin([0, 1])
    if bad.any():
        rows = list(values.index[bad])
        raise ValueError(f"{source}: {values.name} must be 0 or 1; "
                         f"not so for {len(rows)} case(s): {', '.join(rows[:10])}")


def validate_clinical(table: pd.DataFrame, source: str | os.PathLike, endpoint: str = "OS") -> pd.DataFrame:
    """Survival rows (:data:`~preprocessing.clinical.SURVIVAL_COLUMNS`) of a table indexed by
    ``case_id`` with ``time`` (days) and ``event`` (0/1).

    NaN and events other than 0/1 are errors naming ``source`` and the cases; negative times give
    status ``excluded`` with the reason.
    """
    missing = [c for c in CLINICAL_REQUIRED[1:] if c not in table.columns]
    if missing:
        raise ValueError(f"{source}: missing clinical column(s) {', '.join(missing)}; "
                         f"needs {', '.join(CLINICAL_REQUIRED)}")
    values = _numbers(table, ["time", "event"], source)
    _binary(values["event"], source)
    negative = values["time"] < 0
    out = pd.DataFrame({"case_id": values.index, "time": values["time"].astype(float).to_numpy(),
                        "event": values["event"].astype(int).to_numpy()})
    out["site"] = out["case_id"].map(tissue_source_site)
    out["status"] = np.where(negative, "excluded", "ok")
    out["reason"] = [f"negative survival time ({t:g} days)" if n else "" for t, n in zip(out["time"], negative)]
    out["endpoint"] = endpoint
    if negative.any():
        log.warning("%s: %d case(s) with a negative time excluded", source, int(negative.sum()))
    return out[SURVIVAL_COLUMNS].sort_values("case_id").reset_index(drop=True)


def read_clinical_table(path: str | os.PathLike, endpoint: str = "OS") -> pd.DataFrame:
    """Survival rows of a clinical table file, validated by :func:`validate_clinical`."""
    return validate_clinical(read_table(path), path, endpoint)


# ----------------------------------------------------------------------------------------------
# PORPOISE / MCAT tables (``tcga_<project>_all_clean.csv[.zip]``)


def porpoise_modalities(path: str | os.PathLike) -> list[str]:
    """The modalities (:data:`PORPOISE_SUFFIXES` keys) with columns in a PORPOISE table, from its
    header alone: the pipeline plans its outputs from this before reading the table."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    columns = pd.read_csv(path, nrows=0).columns.astype(str)
    return [m for m, suffix in PORPOISE_SUFFIXES.items() if any(c.endswith(suffix) for c in columns)]


def _one_row_per_case(rows: pd.DataFrame, source: str | os.PathLike) -> pd.DataFrame:
    """Rows (one per slide, index ``case_id``) collapsed to one per patient; rows of a patient
    that disagree are an error naming the cases and columns."""
    unique = rows.reset_index().drop_duplicates().set_index(ID)
    clash = unique.index[unique.index.duplicated()].unique()
    if len(clash):
        differs = unique.loc[clash].groupby(level=0).nunique(dropna=False).gt(1).any()
        cols = list(differs[differs].index)
        raise ValueError(f"{source}: rows of one patient disagree for {len(clash)} case(s): {', '.join(clash[:10])} "
                         f"(in column(s) {', '.join(cols[:10])})")
    return unique.sort_index()


def read_porpoise_table(path: str | os.PathLike,
                        endpoint: str = "OS") -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Omics and survival of a PORPOISE/MCAT table (one row per diagnostic slide).

    Returns ``{modality: cases × features}`` for ``rna``, ``cnv``, ``mutations`` (those with
    columns; the suffix is stripped from the feature names, index ``case_id``, one row per
    patient) and the survival rows as :func:`read_clinical_table` gives them: ``time`` =
    ``survival_months`` × :data:`DAYS_PER_MONTH` (days), ``event`` = 1 − ``censorship``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    raw = pd.read_csv(path, low_memory=False)  # .zip / .gz by extension
    raw.columns = raw.columns.astype(str)
    missing = [c for c in PORPOISE_REQUIRED if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; a PORPOISE/MCAT table needs "
                         f"{', '.join(PORPOISE_REQUIRED)} and feature columns "
                         f"*{', *'.join(PORPOISE_SUFFIXES.values())}")
    features = {m: [c for c in raw.columns if c.endswith(suffix)] for m, suffix in PORPOISE_SUFFIXES.items()}
    features = {m: cols for m, cols in features.items() if cols}
    if not features:
        raise ValueError(f"{path}: no feature column (names ending in {', '.join(PORPOISE_SUFFIXES.values())})")
    survival = PORPOISE_REQUIRED[1:]
    rows = index_by_case(raw[[ID, *survival, *(c for cols in features.values() for c in cols)]], path, unique=False)
    cases = _one_row_per_case(rows, path)
    values = _numbers(cases, survival, path)
    _binary(values["censorship"], path)
    clinical = validate_clinical(pd.DataFrame({"time": values["survival_months"] * DAYS_PER_MONTH,
                                               "event": 1 - values["censorship"]}), path, endpoint)
    omics = {m: validate_omics(cases[cols].rename(columns=lambda c, s=PORPOISE_SUFFIXES[m]: c.removesuffix(s)),
                               f"{path} ({m})") for m, cols in features.items()}
    log.info("%s: %d slide rows, %d patients; %s", path, len(raw), len(cases),
             ", ".join(f"{m} {t.shape[1]} features" for m, t in omics.items()))
    return omics, clinical


def write_porpoise_tables(path: str | os.PathLike, omics_out: dict[str, str | os.PathLike],
                          clinical_out: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """:func:`read_porpoise_table` split into one parquet per modality (``omics_out``, which must
    name exactly the table's modalities) and a ``case_id``/``time``/``event`` TSV (days)."""
    omics, clinical = read_porpoise_table(path)
    if sorted(omics) != sorted(omics_out):
        raise ValueError(f"{path}: has modalities {sorted(omics)}, outputs were planned for {sorted(omics_out)}")
    for m, table in omics.items():
        _write_parquet(table, omics_out[m])
    from .io import atomic_path

    with atomic_path(clinical_out) as tmp:
        clinical[CLINICAL_REQUIRED].to_csv(tmp, sep="\t", index=False)
    return omics


def tabular_survival_table(path: str | os.PathLike, omics: dict[str, str | os.PathLike],
                           slides: pd.Series | None = None, endpoint: str = "OS") -> pd.DataFrame:
    """Survival rows of every case in the clinical table, an omics parquet or ``slides``
    (slide files per case, from an inventory), with ``n_{modality}_files`` (1 per table row)."""
    from .omics import omics_cases

    counts: dict[str, pd.Series] = {}
    if slides is not None:
        counts["slide"] = slides
    for name, cases in omics_cases(omics).items():
        counts[name] = pd.Series(1, index=sorted(cases), dtype=int)
    return attach_modalities(read_clinical_table(path, endpoint), counts)


def write_tabular_survival_table(path: str | os.PathLike, omics: dict[str, str | os.PathLike],
                                 out: str | os.PathLike, slides: pd.Series | None = None,
                                 endpoint: str = "OS") -> pd.DataFrame:
    """:func:`tabular_survival_table` written atomically to parquet."""
    return write_table(tabular_survival_table(path, omics, slides, endpoint), out)
