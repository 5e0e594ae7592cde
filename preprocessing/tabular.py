"""Bring your own tables: omics and clinical data of any cohort as plain tables.

An omics table has one row per case and one column per feature; a clinical table has the
columns ``case_id``, ``time`` (days, or any unit used consistently) and ``event`` (1 = event,
0 = censored). Format by extension: ``.tsv``/``.txt`` (tab), ``.csv`` (comma), either optionally
``.gz``, or ``.parquet``. The case id is the ``case_id`` column if there is one, else (parquet)
a named index, else the first column.

Validation, each failure an error naming the file:

- omics: duplicated case ids, empty ids, non-numeric or infinite values, no feature left. Columns
  that are entirely empty (NaN) are dropped and counted in the log. Other NaN values are kept:
  imputation is fitted inside each training fold, never here;
- clinical: missing columns, duplicated case ids, any NaN in ``case_id``/``time``/``event`` (the
  rows are named), ``event`` other than 0/1. A negative time is not an error: the case is kept
  with status ``excluded`` and the reason, and counted in ``qc/cases.tsv``.

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


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A table with its case ids as a string index named ``case_id`` (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".parquet"):
        table = pd.read_parquet(path)
        if ID not in table.columns and (table.index.name is not None or not isinstance(table.index, pd.RangeIndex)):
            table = table.reset_index()
    elif name.endswith((".tsv", ".txt", ".csv")):
        table = pd.read_csv(path, sep="," if name.endswith(".csv") else "\t", dtype=str)
    else:
        raise ValueError(f"{path}: unknown table format; use .tsv, .txt, .csv (optionally .gz) or .parquet")
    if table.shape[1] == 0:
        raise ValueError(f"{path}: no columns")
    id_col = ID if ID in table.columns else table.columns[0]
    ids = table[id_col]
    empty = ids.isna() | ids.astype(str).str.strip().eq("")
    if empty.any():
        raise ValueError(f"{path}: {int(empty.sum())} row(s) without a case id in column {id_col!r} "
                         f"(rows {', '.join(str(i + 2) for i in np.flatnonzero(empty)[:10])}, counting the header as 1)")
    table = table.drop(columns=[id_col])
    table.index = pd.Index(ids.astype(str).str.strip(), name=ID)
    dup = table.index[table.index.duplicated()].unique()
    if len(dup):
        raise ValueError(f"{path}: {len(dup)} duplicated case id(s): {', '.join(dup[:10])}")
    return table


def read_omics_table(path: str | os.PathLike) -> pd.DataFrame:
    """Cases × features of an omics table, validated (module docstring); all-NaN columns dropped."""
    table = read_table(path)
    table.columns = table.columns.astype(str)
    numeric = table.apply(pd.to_numeric, errors="coerce")
    bad = (numeric.isna() & table.notna()).any()
    if bad.any():
        cols = list(bad[bad].index)
        raise ValueError(f"{path}: non-numeric values in {len(cols)} column(s): {', '.join(cols[:10])}")
    infinite = np.isinf(numeric.to_numpy(dtype=float)).any(axis=0)
    if infinite.any():
        cols = list(numeric.columns[infinite])
        raise ValueError(f"{path}: infinite values in {len(cols)} column(s): {', '.join(cols[:10])}")
    all_nan = numeric.isna().all()
    if all_nan.any():
        log.warning("%s: %d column(s) without any value dropped: %s", path, int(all_nan.sum()),
                    ", ".join(list(all_nan[all_nan].index)[:10]))
        numeric = numeric.loc[:, ~all_nan]
    if numeric.shape[1] == 0 or numeric.shape[0] == 0:
        raise ValueError(f"{path}: no feature with a value (shape {numeric.shape[0]} cases × {numeric.shape[1]} columns)")
    n_nan = int(numeric.isna().sum().sum())
    if n_nan:
        log.info("%s: %d missing value(s) kept for in-fold imputation", path, n_nan)
    return numeric.astype(float).sort_index()


def write_omics_table(path: str | os.PathLike, out: str | os.PathLike) -> pd.DataFrame:
    """:func:`read_omics_table` written atomically to ``out`` (parquet, index ``case_id``)."""
    from .io import atomic_path

    table = read_omics_table(path)
    with atomic_path(out) as tmp:
        table.to_parquet(tmp)
    log.info("%s: %d cases × %d features written to %s", path, *table.shape, out)
    return table


def read_clinical_table(path: str | os.PathLike, endpoint: str = "OS") -> pd.DataFrame:
    """Survival rows (:data:`~preprocessing.clinical.SURVIVAL_COLUMNS`) of a clinical table.

    NaN, duplicated ids and events other than 0/1 are errors naming the file and the rows;
    negative times give status ``excluded`` with the reason.
    """
    table = read_table(path)
    missing = [c for c in CLINICAL_REQUIRED[1:] if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing clinical column(s) {', '.join(missing)}; "
                         f"needs {', '.join(CLINICAL_REQUIRED)}")
    values = table[["time", "event"]].apply(pd.to_numeric, errors="coerce")
    nan = values.isna()
    if nan.any().any():
        rows = list(values.index[nan.any(axis=1)])
        cols = list(nan.columns[nan.any()])
        raise ValueError(f"{path}: missing or non-numeric values in column(s) {', '.join(cols)} "
                         f"for {len(rows)} case(s): {', '.join(rows[:10])}")
    bad_event = ~values["event"].isin([0, 1])
    if bad_event.any():
        rows = list(values.index[bad_event])
        raise ValueError(f"{path}: event must be 0 or 1; not so for {len(rows)} case(s): {', '.join(rows[:10])}")
    negative = values["time"] < 0
    out = pd.DataFrame({"case_id": values.index, "time": values["time"].astype(float).to_numpy(),
                        "event": values["event"].astype(int).to_numpy()})
    out["site"] = out["case_id"].map(tissue_source_site)
    out["status"] = np.where(negative, "excluded", "ok")
    out["reason"] = [f"negative survival time ({t:g} days)" if n else "" for t, n in zip(out["time"], negative)]
    out["endpoint"] = endpoint
    if negative.any():
        log.warning("%s: %d case(s) with a negative time excluded", path, int(negative.sum()))
    return out[SURVIVAL_COLUMNS].sort_values("case_id").reset_index(drop=True)


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
