"""Clinical records to one survival row per case (time in days, event 0/1), with status and reason.

Two sources:

- the GDC clinical export (overall survival): ``time`` is days_to_death for the dead, else the
  latest of days_to_last_follow_up and (when the export has follow-up records)
  days_to_follow_up over the case's rows; ``event`` = dead. A case whose rows disagree on vital
  status counts as dead ("dead wins": a death is recorded once, later rows are often stale
  copies), and this is logged;
- a TCGA-CDR table (Liu et al., Cell 2018; TSV or CSV, e.g. exported from the xlsx) with
  ``bcr_patient_barcode`` and ``<E>``, ``<E>.time`` for an endpoint E in OS, DSS, DFI, PFI.

The GDC export comes as one TSV (before 2025) or as a folder of per-entity TSVs (``clinical.tsv``,
``follow_up.tsv``, ``exposure.tsv``, …; portal 2.x): :func:`read_gdc_clinical` reads either. Sex is
``sex_at_birth`` (data dictionary 4.0.3) or the older ``gender``; both names are given.

Every case of the clinical file or the inventory gets one row. Cases that cannot be used (unknown
vital status, missing or negative time, no clinical record, no data of any modality) keep a row
with ``status = excluded`` and the ``reason``, so that ``qc/cases.tsv`` counts them.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

REQUIRED = ["case_submitter_id", "vital_status", "days_to_death", "days_to_last_follow_up"]
ENDPOINTS = ("OS", "DSS", "DFI", "PFI")
CDR_ID = "bcr_patient_barcode"
SURVIVAL_COLUMNS = ["case_id", "time", "event", "site", "status", "reason", "endpoint"]
#: GDC modalities counted per case from the inventory: column ``n_{name}_files``.
GDC_MODALITIES = ("slide", "rna", "cnv", "mutations")
LABELS = {"slide": "slide", "rna": "RNA", "cnv": "CNV", "mutations": "mutation"}
_DEAD, _ALIVE = {"dead", "deceased"}, {"alive", "living"}


# ----------------------------------------------------------------------------------------------
# GDC clinical export


def _unprefixed(columns: list[str]) -> dict[str, str]:
    """Renames for the portal's newer export (``cases.submitter_id``, ``demographic.vital_status``, …)."""
    renames = {"cases.submitter_id": "case_submitter_id"}
    for col in columns:
        short = col.split(".", 1)[-1]
        if "." in col and col not in renames and short not in columns:
            renames[col] = short
    targets = pd.Series(list(renames.values()))
    return {k: v for k, v in renames.items() if (targets == v).sum() == 1}


def _read_clinical_tsv(path: Path) -> pd.DataFrame:
    table = pd.read_csv(path, sep="\t", dtype=str, na_values=["'--", "--", ""], keep_default_na=False)
    if "case_submitter_id" not in table.columns:
        table = table.rename(columns=_unprefixed(list(table.columns)))
    return table


def read_gdc_clinical(path: str | os.PathLike) -> pd.DataFrame:
    """The GDC clinical export with ``'--`` read as missing (table prefixes like ``demographic.`` dropped).

    ``path`` is one TSV, or a folder of the portal's per-entity TSVs: its ``clinical.tsv`` and, when
    there, ``follow_up.tsv``, whose rows (``days_to_follow_up``) join the case's rows. The other
    entity files (exposure, family history, pathology detail) hold nothing survival needs.
    """
    path = Path(path)
    if path.is_dir():
        main = path / "clinical.tsv"
        if not main.is_file():
            raise FileNotFoundError(f"{path}: a clinical folder needs clinical.tsv (found "
                                    f"{', '.join(sorted(p.name for p in path.iterdir())) or 'nothing'})")
        tables = [_read_clinical_tsv(main)]
        if (path / "follow_up.tsv").is_file():
            follow = _read_clinical_tsv(path / "follow_up.tsv")
            if "case_submitter_id" not in follow.columns:
                raise ValueError(f"{path / 'follow_up.tsv'}: missing clinical column case_submitter_id")
            keep = [c for c in ("case_submitter_id", "days_to_follow_up") if c in follow.columns]
            tables.append(follow[keep])
        table = pd.concat(tables, ignore_index=True)
        where = main
    else:
        table, where = _read_clinical_tsv(path), path
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(f"{where}: missing clinical column(s) {', '.join(missing)}")
    for new, old in (("sex_at_birth", "gender"), ("gender", "sex_at_birth")):
        if new not in table.columns and old in table.columns:
            table[new] = table[old]
    return table


def tissue_source_site(case_id: str) -> str:
    """The two-character TCGA tissue source site of a barcode (``TCGA-XX-…``)."""
    parts = case_id.split("-")
    return parts[1] if len(parts) > 2 else ""


def _row(case_id: str, time: float, event: int, reason: str, endpoint: str) -> dict:
    return {"case_id": case_id, "time": float(time) if not pd.isna(time) else np.nan, "event": int(event),
            "site": tissue_source_site(case_id), "status": "excluded" if reason else "ok", "reason": reason,
            "endpoint": endpoint}


def _time_reason(time: float) -> str:
    if pd.isna(time):
        return "no survival time"
    if time < 0:
        return f"negative survival time ({time:g} days)"
    return ""


def overall_survival(clinical: pd.DataFrame) -> pd.DataFrame:
    """Per case: ``time`` (days), ``event`` (1 = died), ``site``, ``status``, ``reason``, ``endpoint``.

    The export repeats a case once per treatment; rows are combined per case (see the module
    docstring). Unknown vital status ("Not Reported", empty), missing or negative times are kept
    with status ``excluded`` so that the QC table can count them.
    """
    c = clinical.copy()
    times = ["days_to_death", "days_to_last_follow_up"] + [x for x in ("days_to_follow_up",) if x in c.columns]
    for col in times:
        c[col] = pd.to_numeric(c[col], errors="coerce")
    vital = c["vital_status"].fillna("").str.strip().str.lower()
    c["dead"], c["alive"] = vital.isin(_DEAD), vital.isin(_ALIVE)
    rows, conflicts = [], []
    for case_id, g in c.groupby("case_submitter_id", sort=True):
        dead, alive = bool(g["dead"].any()), bool(g["alive"].any())
        if dead and alive:
            conflicts.append(case_id)
        if not (dead or alive):
            raw = sorted({str(v) for v in g["vital_status"].dropna()}) or ["missing"]
            rows.append(_row(case_id, np.nan, 0, f"unknown vital status ({', '.join(raw)})", "OS"))
            continue
        time = g["days_to_death"].max() if dead else g[times[1:]].max().max()
        rows.append(_row(case_id, time, int(dead), _time_reason(time), "OS"))
    if conflicts:
        log.warning("%d case(s) with both Dead and Alive rows counted as dead: %s", len(conflicts),
                    ", ".join(conflicts[:10]))
    return pd.DataFrame(rows, columns=SURVIVAL_COLUMNS)


# ----------------------------------------------------------------------------------------------
# TCGA-CDR


def read_cdr(path: str | os.PathLike, endpoint: str = "OS") -> pd.DataFrame:
    """A TCGA-CDR table (TSV, or CSV for ``.csv``), indexed by ``bcr_patient_barcode``.

    Values like ``#N/A`` or ``[Not Available]`` become NaN. A missing column or a duplicated
    barcode is an error naming the file.
    """
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {', '.join(ENDPOINTS)}")
    sep = "," if str(path).lower().endswith((".csv", ".csv.gz")) else "\t"
    table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    needed = [CDR_ID, endpoint, f"{endpoint}.time"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing TCGA-CDR column(s) {', '.join(missing)}")
    table[CDR_ID] = table[CDR_ID].str.strip()
    dup = table.loc[table[CDR_ID].duplicated(), CDR_ID].unique()
    if len(dup):
        raise ValueError(f"{path}: {len(dup)} duplicated {CDR_ID}(s): {', '.join(dup[:10])}")
    for col in needed[1:]:
        table[col] = pd.to_numeric(table[col], errors="coerce")
    return table.set_index(CDR_ID)[needed[1:]]


def cdr_survival(cdr: pd.DataFrame, cases: list[str], endpoint: str = "OS") -> pd.DataFrame:
    """Survival rows of ``cases`` for ``endpoint`` from :func:`read_cdr`; the same columns as
    :func:`overall_survival`. Cases absent from the table, or without a 0/1 status, are excluded."""
    rows = []
    for case_id in sorted(set(cases)):
        if case_id not in cdr.index:
            rows.append(_row(case_id, np.nan, 0, "not in the TCGA-CDR table", endpoint))
            continue
        event, time = cdr.at[case_id, endpoint], cdr.at[case_id, f"{endpoint}.time"]
        if event not in (0, 1):
            rows.append(_row(case_id, time, 0, f"no {endpoint} status in the TCGA-CDR table", endpoint))
            continue
        rows.append(_row(case_id, time, int(event), _time_reason(time), endpoint))
    return pd.DataFrame(rows, columns=SURVIVAL_COLUMNS)


# ----------------------------------------------------------------------------------------------
# one row per case, with what it has


def no_modality_reason(names: list[str]) -> str:
    """``no modality (no slide, RNA, CNV or mutation data)`` for the given modality names."""
    labels = [LABELS.get(n, n) for n in names]
    listed = labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} or {labels[-1]}"
    return f"no modality (no {listed} data)"


def attach_modalities(survival: pd.DataFrame, counts: dict[str, pd.Series]) -> pd.DataFrame:
    """Survival rows of every case in ``survival`` or in any of ``counts`` (per modality: files
    or rows per case), with ``n_{modality}_files`` columns.

    A case without a survival row is excluded ("no clinical record"); an ``ok`` case with no
    data of any modality is excluded ("no modality (…)").
    """
    surv = survival.set_index("case_id")
    cases = surv.index
    for series in counts.values():
        cases = cases.union(series.index.astype(str))
    table = surv.reindex(cases)
    table["site"] = [tissue_source_site(c) for c in cases]
    total = pd.Series(0, index=cases)
    for name, series in counts.items():
        table[f"n_{name}_files"] = series.groupby(level=0).sum().reindex(cases).fillna(0).astype(int)
        total += table[f"n_{name}_files"]
    table.loc[~table.index.isin(surv.index), ["status", "reason"]] = ["excluded", "no clinical record"]
    table.loc[(table["status"] == "ok") & (total == 0), ["status", "reason"]] = ["excluded", no_modality_reason(list(counts))]
    table["event"] = table["event"].fillna(0).astype(int)
    table["endpoint"] = table["endpoint"].fillna(survival["endpoint"].iloc[0] if len(survival) else "OS")
    table.index.name = "case_id"
    return table.reset_index()


def inventory_counts(files: pd.DataFrame) -> dict[str, pd.Series]:
    """Files per case of each GDC modality (:data:`GDC_MODALITIES`) in the inventory."""
    from .inventory import SLIDE_TYPE
    from .omics import CNV_TYPE, MAF_TYPE, RNA_TYPE

    types = {"slide": SLIDE_TYPE, "rna": RNA_TYPE, "cnv": CNV_TYPE, "mutations": MAF_TYPE}
    return {name: files[files["data_type"] == t].groupby("case_id").size() for name, t in types.items()}


def survival_table(clinical_path: str | os.PathLike, files: pd.DataFrame, cdr: str | os.PathLike | None = None,
                   endpoint: str = "OS", extra: dict[str, set[str]] | None = None) -> pd.DataFrame:
    """Survival of every case that has a clinical record or a file, with what it has.

    ``files`` is the cohort inventory (:func:`preprocessing.inventory.read_inventory`); ``cdr``
    an optional TCGA-CDR table giving ``endpoint`` (OS, DSS, DFI or PFI; without it only OS,
    from the GDC export); ``extra`` the cases of further omics tables by name. A case is ``ok``
    when it has a valid survival time and data of at least one modality; otherwise its status is
    ``excluded`` and ``reason`` says why.
    """
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {', '.join(ENDPOINTS)}")
    clinical = read_gdc_clinical(clinical_path)
    if cdr is None:
        if endpoint != "OS":
            raise ValueError(f"endpoint {endpoint} needs a TCGA-CDR table (cohort key `cdr`); "
                             f"{clinical_path} gives overall survival (OS) only")
        surv = overall_survival(clinical)
    else:
        cases = set(clinical["case_submitter_id"].dropna()) | set(files["case_id"])
        surv = cdr_survival(read_cdr(cdr, endpoint), sorted(cases), endpoint)
    counts = inventory_counts(files)
    for name, cases in (extra or {}).items():
        counts[name] = pd.Series(1, index=sorted(cases), dtype=int)
    from .inventory import not_usable

    return with_download_failures(attach_modalities(surv, counts), not_usable(files))


def with_download_failures(table: pd.DataFrame, unusable: pd.DataFrame | None) -> pd.DataFrame:
    """Survival rows with ``download_failed``: per case the files the GDC download could not fetch
    (``data type file name: reason``), from :func:`preprocessing.inventory.not_usable` (None for a
    cohort not downloaded by the workflow: no column). A case left without any modality by them says so."""
    if unusable is None:  # not a GDC download: the table as before
        return table
    table = table.copy()
    notes: dict[str, list[str]] = {}
    for r in unusable[unusable["download_status"].str.lower() == "failed"].itertuples(index=False):
        notes.setdefault(r.case_id, []).append(f"{r.data_type} {r.file_name}: {r.download_reason}")
    table["download_failed"] = table["case_id"].map({c: "; ".join(v) for c, v in notes.items()}).fillna("")
    lost = table["reason"].fillna("").str.startswith("no modality") & (table["download_failed"] != "")
    table.loc[lost, "reason"] = table.loc[lost, "reason"] + " - download failed: " + table.loc[lost, "download_failed"]
    return table


def write_table(table: pd.DataFrame, out: str | os.PathLike) -> pd.DataFrame:
    """A survival table written atomically to parquet (no index)."""
    from .io import atomic_path

    with atomic_path(Path(out)) as tmp:
        table.to_parquet(tmp, index=False)
    counts = table["status"].value_counts().to_dict()
    log.info("clinical: %d cases, %s", len(table), counts)
    return table


def write_survival_table(clinical_path: str | os.PathLike, files: pd.DataFrame, out: str | os.PathLike,
                         cdr: str | os.PathLike | None = None, endpoint: str = "OS",
                         extra: dict[str, set[str]] | None = None) -> pd.DataFrame:
    """:func:`survival_table` written atomically to parquet."""
    return write_table(survival_table(clinical_path, files, cdr, endpoint, extra), out)
