"""The workflow's one-job-per-file download: each job's record (one TSV row of what happened), the
cohort's progress against the plan as the records come in, and at the end one table of all
records and the sample sheet marked with each file's download status and reason.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from ..io import write_tsv_atomic
from .core import FileRefused, GDCError, human
from .transfer import download_file

log = logging.getLogger(__name__)

RECORD_COLUMNS = ["file_id", "file_name", "kind", "size", "status", "reason", "bytes_received", "resumed_from",
                  "attempts", "seconds"]


def fetch_record(file_id: str, file_name: str, md5: str, size: int, kind: str, out_dir: str | os.PathLike,
                 record: str | os.PathLike, **download_args) -> dict:
    """:func:`download_file` for one workflow job: what happened is written to ``record`` (one TSV
    row, :data:`RECORD_COLUMNS`). A :class:`FileRefused` marks the file failed with its reason and
    returns; other errors (the network gone, 5xx after every retry) raise, so that the job is retried.
    """
    try:
        row = download_file(file_id, file_name, md5, size, out_dir, **download_args)
        row["reason"] = ""
    except FileRefused as e:
        log.error("%s", e)
        row = {"file_id": file_id, "file_name": file_name, "status": "failed", "reason": e.reason}
    row.update(kind=kind, size=size)
    write_tsv_atomic(pd.DataFrame([row]).reindex(columns=RECORD_COLUMNS), record)
    return row


def read_records(paths: list[str | os.PathLike]) -> pd.DataFrame:
    """The records of :func:`fetch_record`, one row each."""
    tables = [pd.read_csv(p, sep="\t", dtype={"file_id": str, "reason": str}, keep_default_na=False) for p in paths]
    return (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=RECORD_COLUMNS)
            ).reindex(columns=RECORD_COLUMNS)


def progress_table(plan: str | os.PathLike, records_dir: str | os.PathLike) -> pd.DataFrame:
    """The plan's totals with what the finished download jobs (their records) have done so far."""
    planned = pd.read_csv(plan, sep="\t")
    done = read_records(sorted(Path(records_dir).glob("*.tsv")))
    done["size"] = pd.to_numeric(done["size"], errors="coerce").fillna(0)
    ok = done[done["status"] != "failed"]
    rows = []
    for r in planned.itertuples(index=False):
        sel = (lambda t: t) if r.kind == "total" else (lambda t, k=r.kind: t[t["kind"] == k])
        rows.append({"kind": r.kind, "files": r.files, "bytes": r.bytes, "files_done": len(sel(ok)),
                     "bytes_done": int(sel(ok)["size"].sum()), "files_failed": len(sel(done)) - len(sel(ok))})
    return pd.DataFrame(rows)


def write_progress(plan: str | os.PathLike, records_dir: str | os.PathLike, out: str | os.PathLike) -> None:
    """:func:`progress_table` logged and written to ``out`` (each job rewrites it whole)."""
    table = progress_table(plan, records_dir)
    total = table[table["kind"] == "total"].iloc[0]
    log.info("cohort so far: %d of %d files, %s of %s (%.0f%%), %d failed", total["files_done"], total["files"],
             human(total["bytes_done"]), human(total["bytes"]),
             100 * total["bytes_done"] / max(int(total["bytes"]), 1), total["files_failed"])
    write_tsv_atomic(table, out)


def collect_downloads(sample_sheet: str | os.PathLike, records: list[str | os.PathLike],
                      out_table: str | os.PathLike, out_sheet: str | os.PathLike) -> pd.DataFrame:
    """The records of every file in one table, and the sample sheet with each file's
    ``Download Status`` (ok / failed / skipped) and ``Download Reason``, both written atomically."""
    table = read_records(records)
    sheet = pd.read_csv(sample_sheet, sep="\t", dtype=str, keep_default_na=False)
    for col in ("Download Status", "Download Reason"):
        if col not in sheet.columns:
            sheet[col] = ""
    by_id = table.set_index("file_id")
    todo = sheet["Download Status"] == ""
    missing = sorted(set(sheet.loc[todo, "File ID"]) - set(by_id.index))
    if missing:
        raise GDCError(f"{sample_sheet}: {len(missing)} file(s) without a download record, e.g. {missing[0]}")
    failed = sheet["File ID"].map(by_id["status"]).eq("failed")
    sheet.loc[todo, "Download Status"] = ["failed" if f else "ok" for f in failed[todo]]
    sheet.loc[todo & failed, "Download Reason"] = sheet.loc[todo & failed, "File ID"].map(by_id["reason"])
    write_tsv_atomic(sheet, out_sheet)
    write_tsv_atomic(table, out_table)
    log.info("%d files: %s", len(table), table["status"].value_counts().to_dict())
    for r in table[table["status"] == "failed"].itertuples(index=False):
        log.warning("failed: %s", r.reason)
    return table
