"""GDC clinical export to one survival row per case (overall survival, days)."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

REQUIRED = ["case_submitter_id", "vital_status", "days_to_death", "days_to_last_follow_up"]


def read_gdc_clinical(path: str | os.PathLike) -> pd.DataFrame:
    """The GDC clinical TSV with ``'--`` read as missing."""
    table = pd.read_csv(path, sep="\t", dtype=str, na_values=["'--", "--", ""], keep_default_na=False)
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing clinical column(s) {', '.join(missing)}")
    return table


def tissue_source_site(case_id: str) -> str:
    """The two-character TCGA tissue source site of a barcode (``TCGA-XX-…``)."""
    parts = case_id.split("-")
    return parts[1] if len(parts) > 2 else ""


def overall_survival(clinical: pd.DataFrame) -> pd.DataFrame:
    """Per case: ``time`` (days), ``event`` (1 = died), ``site``, ``status`` and ``reason``.

    Time is days_to_death for the dead, else the latest days_to_last_follow_up over the case's
    rows (the export repeats a case once per treatment). Missing or negative times are kept with
    status ``excluded`` so that the QC table can count them.
    """
    c = clinical.copy()
    for col in ("days_to_death", "days_to_last_follow_up"):
        c[col] = pd.to_numeric(c[col], errors="coerce")
    c["dead"] = c["vital_status"].str.lower().eq("dead")
    rows = []
    for case_id, g in c.groupby("case_submitter_id", sort=True):
        dead = bool(g["dead"].any())
        time = g["days_to_death"].max() if dead else g["days_to_last_follow_up"].max()
        status, reason = "ok", ""
        if pd.isna(time):
            status, reason = "excluded", "no survival time"
        elif time < 0:
            status, reason = "excluded", f"negative survival time ({time:g} days)"
        elif g["vital_status"].isna().all():
            status, reason = "excluded", "no vital status"
        rows.append({"case_id": case_id, "time": float(time) if not pd.isna(time) else np.nan,
                     "event": int(dead), "site": tissue_source_site(case_id), "status": status, "reason": reason})
    return pd.DataFrame(rows, columns=["case_id", "time", "event", "site", "status", "reason"])


def survival_table(clinical_path: str | os.PathLike, files: pd.DataFrame) -> pd.DataFrame:
    """Overall survival of every case that has a clinical record or a file, with what it has.

    ``files`` is the cohort inventory (:func:`preprocessing.inventory.read_inventory`). A case
    is ``ok`` when it has a valid survival time and at least one slide or RNA file; otherwise its
    status is ``excluded`` and ``reason`` says why.
    """
    from .inventory import RNA_TYPE, SLIDE_TYPE

    surv = overall_survival(read_gdc_clinical(clinical_path)).set_index("case_id")
    n_slides = files[files["data_type"] == SLIDE_TYPE].groupby("case_id").size()
    n_rna = files[files["data_type"] == RNA_TYPE].groupby("case_id").size()
    cases = surv.index.union(files["case_id"].unique())
    table = surv.reindex(cases)
    table["site"] = [tissue_source_site(c) for c in cases]
    table["n_slide_files"] = n_slides.reindex(cases).fillna(0).astype(int)
    table["n_rna_files"] = n_rna.reindex(cases).fillna(0).astype(int)
    no_record = ~table.index.isin(surv.index)
    table.loc[no_record, ["status", "reason"]] = ["excluded", "no clinical record"]
    no_files = (table["status"] == "ok") & (table["n_slide_files"] + table["n_rna_files"] == 0)
    table.loc[no_files, ["status", "reason"]] = ["excluded", "no slide or RNA file"]
    table["event"] = table["event"].fillna(0).astype(int)
    table.index.name = "case_id"
    return table.reset_index()


def write_survival_table(clinical_path: str | os.PathLike, files: pd.DataFrame, out: str | os.PathLike) -> pd.DataFrame:
    """:func:`survival_table` written atomically to parquet."""
    from .io import atomic_path

    table = survival_table(clinical_path, files)
    with atomic_path(out) as tmp:
        table.to_parquet(tmp, index=False)
    return table
