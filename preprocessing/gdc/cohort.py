"""A queried cohort's metadata on disk: the gdc-client manifest, the portal's sample sheet, the
clinical TSV and the stale ids, written from :mod:`.api`'s tables after the cohort's choices
(preferred copy-number pipeline, slide sample types, a pilot's first cases, a given manifest).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from ..inventory import prefer_cnv_workflow, slide_policy
from ..io import write_tsv_atomic
from .api import MISSING, SAMPLE_FIELDS, query_clinical, query_files
from .core import DEFAULT_CNV_WORKFLOWS, DEFAULT_SLIDE_CODES, GDC_API, GDCError, check_file_record

log = logging.getLogger(__name__)


def write_clinical(clinical: pd.DataFrame, path: str | os.PathLike) -> None:
    """The clinical table as the portal's TSV (``'--`` for missing), written atomically."""
    write_tsv_atomic(clinical.fillna(MISSING), path)


def write_manifest(files: pd.DataFrame, path: str | os.PathLike) -> None:
    """A gdc-client manifest: ``id filename md5 size state``, tab separated."""
    m = pd.DataFrame({"id": files["file_id"], "filename": files["file_name"], "md5": files["md5sum"],
                      "size": files["file_size"].astype(int), "state": files["state"]})
    write_tsv_atomic(m, path)


def write_sample_sheet(files: pd.DataFrame, path: str | os.PathLike) -> None:
    """The portal's sample sheet in its 2.4.0 layout plus ``Sample Type`` (so both readers of
    :func:`preprocessing.inventory.read_sample_sheet` agree), the CNV ``Workflow Type``, the file's
    ``Access``, and the ``Download Status`` / ``Download Reason`` of files not fetched."""
    s = pd.DataFrame({"File ID": files["file_id"], "File Name": files["file_name"],
                      "Data Category": files["data_category"], "Data Type": files["data_type"],
                      "Project ID": files["project_id"], "Case ID": files["case_id"],
                      "Sample ID": files["sample_id"],
                      **{col: files[field] for field, col in SAMPLE_FIELDS.items()},
                      "Workflow Type": files["workflow_type"].where(files["kind"] == "cnv", ""),
                      "Access": files["access"],
                      "Download Status": files.get("download_status", pd.Series("", index=files.index)).fillna(""),
                      "Download Reason": files.get("download_reason", pd.Series("", index=files.index)).fillna("")})
    write_tsv_atomic(s, path)


def limit_cases(files: pd.DataFrame, max_cases: int | None) -> pd.DataFrame:
    """Only the files of the first ``max_cases`` case ids in sorted order (a pilot run); None keeps all."""
    if not max_cases:
        return files
    keep = sorted(files["case_id"].unique())[:max_cases]
    return files[files["case_id"].isin(keep)].reset_index(drop=True)


def fetch_cohort_metadata(project: str, kinds: list[str], out_dir: str | os.PathLike, base_url: str = GDC_API,
                          page_size: int = 500, max_cases: int | None = None,
                          only_ids: pd.DataFrame | set[str] | None = None,
                          access: list[str] | tuple[str, ...] = ("open",), cnv_workflows: list[str] | None = None,
                          slide_codes: list[str] | None = DEFAULT_SLIDE_CODES) -> dict[str, str]:
    """Query files and clinical data; write ``gdc_manifest.txt``, ``gdc_sample_sheet.tsv``,
    ``clinical.tsv`` and ``stale_ids.tsv``.

    Per case only the copy-number files of the first pipeline of ``cnv_workflows`` it has are kept.
    Slides of sample types other than ``slide_codes`` stay in the sample sheet, marked skipped with
    the reason (QC counts them), but not in the manifest. ``only_ids`` (a manifest table, or ids)
    keeps only those files; ids of it the GDC no longer returns are counted in the log and listed
    in ``stale_ids.tsv``, never dropped silently.
    """
    order = list(cnv_workflows or DEFAULT_CNV_WORKFLOWS)
    files = query_files(project, kinds, base_url, page_size, access, order)
    out = Path(out_dir)
    paths = {"manifest": out / "gdc_manifest.txt", "sample_sheet": out / "gdc_sample_sheet.tsv",
             "clinical": out / "clinical.tsv", "stale_ids": out / "stale_ids.tsv"}
    stale = pd.DataFrame(columns=["id", "filename"])
    if only_ids is not None:
        given = only_ids if isinstance(only_ids, pd.DataFrame) else pd.DataFrame({"id": sorted(only_ids)})
        for r in given.itertuples(index=False):
            check_file_record(r.id, getattr(r, "filename", "x"), "given manifest")
        stale = given[~given["id"].isin(files["file_id"])].reindex(columns=["id", "filename"])
        files = files[files["file_id"].isin(given["id"])].reset_index(drop=True)
        if len(stale):
            log.warning("%d of %d file id(s) of the given manifest are not among the GDC's %s files of %s "
                        "(removed, or given new ids in a data release, or of another kind / access), e.g. %s; "
                        "listed in %s", len(stale), len(given), "/".join(kinds), project,
                        ", ".join(stale["id"].head(3)), paths["stale_ids"])
    files, other_cnv = prefer_cnv_workflow(files, order)
    if len(other_cnv):
        log.info("%d copy-number file(s) of less preferred pipelines not fetched (order %s)", len(other_cnv), order)
    files, skipped = slide_policy(files, slide_codes)
    files = limit_cases(files, max_cases)
    skipped = skipped[skipped["case_id"].isin(files["case_id"])] if max_cases else skipped
    if files.empty:
        raise GDCError(f"{base_url}: no files of kinds {', '.join(kinds)} in project {project}")
    clinical = query_clinical(project, base_url, page_size)
    write_manifest(files, paths["manifest"])
    write_sample_sheet(pd.concat([files, skipped], ignore_index=True), paths["sample_sheet"])
    write_clinical(clinical, paths["clinical"])
    write_tsv_atomic(stale, paths["stale_ids"])
    log.info("%s: %d files of %d cases (%s), %d slide(s) of other sample types counted but not fetched, "
             "%d clinical records", project, len(files), files["case_id"].nunique(),
             ", ".join(f"{k} {n}" for k, n in files["kind"].value_counts().items()), len(skipped), len(clinical))
    return {k: str(v) for k, v in paths.items()}
