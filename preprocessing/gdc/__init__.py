"""GDC API client: find a project's files, write its manifest, sample sheet and clinical TSV,
plan the download, and fetch files one at a time, resumably, md5-checked, faults kept to the file.

Files land where gdc-client puts them, ``{out_dir}/{file_id}/{file_name}``, so that
:mod:`preprocessing.inventory` reads a downloaded cohort exactly like one fetched by hand. The
base URL is a parameter everywhere (tests point it at a local stand-in); nothing here runs at
import time.

One module per step, each importing only those before it:

* :mod:`.core` — the API address, data kinds, errors, the file-record safety check, sizes;
* :mod:`.auth` — where the token for controlled files comes from;
* :mod:`.api` — search filters, paging, the ``files`` and ``cases`` queries as tables;
* :mod:`.cohort` — a queried cohort's manifest, sample sheet, clinical TSV and stale ids on disk;
* :mod:`.plan` — files, bytes and free space before anything is fetched;
* :mod:`.transfer` — one file: resumed, retried, md5-verified, refusals explained;
* :mod:`.records` — the workflow's per-file records, progress and final download table;
* :mod:`.batch` — a whole manifest at once (download, verify) for the command line;
* :mod:`.cli` — ``python -m preprocessing.gdc``.

The public names are re-exported here, so callers import them from ``preprocessing.gdc``.
"""
from __future__ import annotations

from .api import clinical_row, file_filters, query_clinical, query_files
from .auth import TOKEN_ENV, TOKEN_FILE_ENV, read_token, token_source
from .batch import download, read_manifest_table, verify_local
from .cli import main
from .cohort import fetch_cohort_metadata, limit_cases, write_clinical, write_manifest, write_sample_sheet
from .core import (ACCESS, DEFAULT_CNV_WORKFLOWS, DEFAULT_SLIDE_CODES, GDC_API, KINDS, FileRefused, GDCError,
                   UnsafeRecord, check_file_record, human, kind_of)
from .plan import (FREE_BYTES_ENV, check_space, download_plan, free_bytes, plan_of, plan_summary, space_needed,
                   write_plan)
from .records import RECORD_COLUMNS, collect_downloads, fetch_record, progress_table, read_records, write_progress
from .transfer import download_file

__all__ = [
    "ACCESS", "DEFAULT_CNV_WORKFLOWS", "DEFAULT_SLIDE_CODES", "FREE_BYTES_ENV", "GDC_API", "KINDS", "RECORD_COLUMNS",
    "TOKEN_ENV", "TOKEN_FILE_ENV", "FileRefused", "GDCError", "UnsafeRecord", "check_file_record", "check_space",
    "clinical_row", "collect_downloads", "download", "download_file", "download_plan", "fetch_cohort_metadata",
    "fetch_record", "file_filters", "free_bytes", "human", "kind_of", "limit_cases", "main", "plan_of",
    "plan_summary", "progress_table", "query_clinical", "query_files", "read_manifest_table", "read_records",
    "read_token", "space_needed", "token_source", "verify_local", "write_clinical", "write_manifest",
    "write_plan", "write_progress", "write_sample_sheet",
]
