"""GDC API client: find a project's files, write its manifest, sample sheet and clinical TSV,
plan the download, and fetch files one at a time, resumably, md5-checked, faults kept to the file.

Files land where gdc-client puts them, ``{out_dir}/{file_id}/{file_name}``, so that
:mod:`preprocessing.inventory` reads a downloaded cohort exactly like one fetched by hand. The
base URL is a parameter everywhere (tests point it at a local stand-in); nothing here runs at
import time.

What the GDC documents and this module relies on (gdc-docs, API Users Guide): search endpoints take
``filters`` / ``fields`` / ``expand`` / ``from`` / ``size`` and answer 400 with a message for a
query they cannot run (e.g. an unknown field); ``data/{file_id}`` streams one file and honours
``Range``; controlled files need the user's token in the ``X-Auth-Token`` header and answer
401/403 without a valid one; every file record has ``access`` (open / controlled).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import requests

from .inventory import CNV_WORKFLOWS, SLIDE_TYPE, prefer_cnv_workflow, read_inventory, read_manifest, slide_policy
from .io import file_md5, write_text_atomic

log = logging.getLogger(__name__)

GDC_API = "https://api.gdc.cancer.gov"
MISSING = "'--"  # how the GDC portal's clinical export writes a missing value
CHUNK = 1 << 20  # bytes read per streamed chunk
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TOKEN_FILE_ENV, TOKEN_ENV = "GDC_TOKEN_FILE", "GDC_TOKEN"
FREE_BYTES_ENV = "HEALNET_GDC_FREE_BYTES"  # pretend this much space is free (tests; a dry rehearsal)

# Data kinds a cohort may ask for: GDC file fields and the values they must have. Every kind names
# its data_type: a workflow's files are of several types (STAR - Counts also writes Splice Junction
# Quantification files, which are controlled), and access is filtered separately (file_filters).
KINDS: dict[str, dict[str, list[str]]] = {
    "slides": {"data_type": [SLIDE_TYPE], "data_format": ["SVS"], "experimental_strategy": ["Diagnostic Slide"]},
    "rna": {"data_type": ["Gene Expression Quantification"], "analysis.workflow_type": ["STAR - Counts"]},
    "cnv": {"data_type": ["Gene Level Copy Number"]},
    "mutations": {"data_type": ["Masked Somatic Mutation"], "data_format": ["MAF"]},
}
KIND_OF_TYPE = {v["data_type"][0]: k for k, v in KINDS.items()}
#: gene-level copy number pipelines in order of preference; AscatNGS (WGS) only when asked for
DEFAULT_CNV_WORKFLOWS = ["ASCAT3", "ASCAT2", "ABSOLUTE LiftOver"]
DEFAULT_SLIDE_CODES = ["01"]  # primary tumour
ACCESS = ("open", "controlled")
FILE_FIELDS = ["file_id", "file_name", "md5sum", "file_size", "state", "access", "data_type", "data_category",
               "data_format", "experimental_strategy", "analysis.workflow_type", "cases.submitter_id",
               "cases.project.project_id", "cases.samples.submitter_id", "cases.samples.sample_type",
               "cases.samples.tissue_type", "cases.samples.tumor_descriptor", "cases.samples.specimen_type",
               "cases.samples.preservation_method"]
SAMPLE_FIELDS = {"sample_type": "Sample Type", "tissue_type": "Tissue Type", "tumor_descriptor": "Tumor Descriptor",
                 "specimen_type": "Specimen Type", "preservation_method": "Preservation Method"}
CASE_FIELDS = ["submitter_id", "case_id", "project.project_id"]
CASE_EXPAND = ["demographic", "diagnoses", "follow_ups"]
CLINICAL_COLUMNS = ["case_id", "case_submitter_id", "project_id", "vital_status", "days_to_death",
                    "days_to_last_follow_up", "sex_at_birth", "age_at_index"]
RECORD_COLUMNS = ["file_id", "file_name", "kind", "size", "status", "reason", "bytes_received", "resumed_from",
                  "attempts", "seconds"]


class GDCError(RuntimeError):
    """An answer from the GDC API that cannot be used, or a file that could not be fetched intact."""


class UnsafeRecord(GDCError, ValueError):
    """A file id that is not a UUID or a file name that could leave ``data_dir``: never written."""


class FileRefused(GDCError):
    """A fault of one file that retrying cannot fix (401/403, 404, md5 wrong every time): the file
    is marked failed with ``reason`` and the rest of the cohort goes on."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def check_file_record(file_id: str, file_name: str, source: str) -> None:
    """Refuse a file id that is not a lower-case UUID, or a file name with a path separator, ``..``
    or a control character: the file is written to ``{data_dir}/{file_id}/{file_name}``."""
    if not UUID.fullmatch(str(file_id)):
        raise UnsafeRecord(f"{source}: file id {file_id!r} is not a UUID; refused (files are written to "
                           "{data_dir}/{file_id}/{file_name})")
    name = str(file_name)
    if (not name or name in (".", "..") or "/" in name or "\\" in name or ".." in name
            or any(ord(ch) < 32 for ch in name)):
        raise UnsafeRecord(f"{source}: file {file_id}: file name {name!r} holds a path separator, '..' or a "
                           "control character; refused, nothing is written outside data_dir")


def human(n: float) -> str:
    """Bytes in decimal units (``1.23 GB``), as the GDC portal shows sizes."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


# ---------------------------------------------------------------------------------------------
# token


def token_source(token_file: str | os.PathLike | None = None) -> str | None:
    """Where the token comes from, for messages (never the token): the file named in the config,
    else ``$GDC_TOKEN_FILE``, else ``$GDC_TOKEN``; None without one."""
    if token_file:
        return str(token_file)
    if os.environ.get(TOKEN_FILE_ENV):
        return os.environ[TOKEN_FILE_ENV]
    return f"${TOKEN_ENV}" if os.environ.get(TOKEN_ENV) else None


def read_token(token_file: str | os.PathLike | None = None) -> str | None:
    """The GDC token (see :func:`token_source`), stripped; None without one. A named file that
    cannot be read is an error naming it (never its content)."""
    source = token_source(token_file)
    if source is None:
        return None
    if source == f"${TOKEN_ENV}":
        return os.environ[TOKEN_ENV].strip()
    try:
        token = Path(source).read_text().strip()
    except OSError as e:
        raise GDCError(f"GDC token file {source}: cannot be read ({e.strerror})") from None
    if not token:
        raise GDCError(f"GDC token file {source} is empty")
    return token


# ---------------------------------------------------------------------------------------------
# query


def _in(field: str, values: list[str] | str) -> dict:
    return {"op": "in", "content": {"field": field, "value": [values] if isinstance(values, str) else list(values)}}


def file_filters(project: str, kind: str, access: list[str] | tuple[str, ...] = ("open",),
                 cnv_workflows: list[str] | None = None) -> dict:
    """GDC filter JSON for one project's files of one kind (see :data:`KINDS`) and access; copy
    number only from the pipelines in ``cnv_workflows`` (default :data:`DEFAULT_CNV_WORKFLOWS`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown data kind {kind!r}; known: {', '.join(KINDS)}")
    bad = [a for a in access if a not in ACCESS]
    if bad:
        raise ValueError(f"unknown access {bad}; known: {', '.join(ACCESS)}")
    content = [_in("cases.project.project_id", project)] + [_in(f, v) for f, v in KINDS[kind].items()]
    if kind == "cnv":
        content.append(_in("analysis.workflow_type", list(cnv_workflows or DEFAULT_CNV_WORKFLOWS)))
    return {"op": "and", "content": content + [_in("access", list(access))]}


def _hits(endpoint: str, filters: dict, fields: list[str], base_url: str, page_size: int,
          expand: list[str] | None = None, timeout: float = 120.0) -> Iterator[dict]:
    """Every hit of a search endpoint, page by page (``from``/``size``) until ``pagination.total``.

    A 400 (the GDC's answer to a query it cannot run, e.g. an unknown field) is an error quoting
    the GDC's message."""
    url, start = f"{base_url.rstrip('/')}/{endpoint}", 0
    while True:
        body = {"filters": filters, "fields": ",".join(fields), "format": "json", "from": start, "size": page_size}
        if expand:
            body["expand"] = ",".join(expand)
        r = requests.post(url, json=body, timeout=timeout)
        if r.status_code == 400:
            try:
                message = r.json().get("message", r.text)
            except ValueError:
                message = r.text
            raise GDCError(f"{url}: the GDC refused the query (HTTP 400): {str(message)[:500]}")
        if r.status_code != 200:
            raise GDCError(f"{url}: HTTP {r.status_code}: {r.text[:300]}")
        try:
            data = r.json()["data"]
            hits, total = data["hits"], int(data["pagination"]["total"])
        except (ValueError, KeyError, TypeError) as e:
            raise GDCError(f"{url}: answer without data.hits / data.pagination.total ({e})") from e
        yield from hits
        start += len(hits)
        if not hits or start >= total:
            return


def _joined(values: list[str]) -> str:
    return ", ".join(dict.fromkeys(v for v in values if v))  # unique, in order, as the portal lists them


def _listed(values: list) -> str:
    return ", ".join("" if v is None else str(v) for v in values)  # one entry per sample, kept aligned


FILE_COLUMNS = ["file_id", "file_name", "md5sum", "file_size", "state", "access", "data_type", "data_category",
                "workflow_type", "kind", "project_id", "case_id", "sample_id", *SAMPLE_FIELDS]


def query_files(project: str, kinds: list[str], base_url: str = GDC_API, page_size: int = 500,
                access: list[str] | tuple[str, ...] = ("open",), cnv_workflows: list[str] | None = None
                ) -> pd.DataFrame:
    """One row per file of ``project`` of the given kinds and access, with its cases and samples.

    Multi-valued case / sample fields are joined with ``", "`` as in the portal's sample sheet.
    ``file_size`` is in bytes. A record whose id is not a UUID or whose name could leave the data
    folder is refused (:class:`UnsafeRecord`).
    """
    rows = []
    for kind in kinds:
        for h in _hits("files", file_filters(project, kind, access, cnv_workflows), FILE_FIELDS, base_url,
                       page_size):
            check_file_record(h.get("file_id", ""), h.get("file_name", ""), f"{base_url} files record")
            cases = h.get("cases") or []
            samples = [s for c in cases for s in (c.get("samples") or [])]
            rows.append({"file_id": h["file_id"], "file_name": h["file_name"], "md5sum": h.get("md5sum", ""),
                         "file_size": int(h.get("file_size") or 0), "state": h.get("state", ""),
                         "access": h.get("access", ""), "data_type": h.get("data_type", ""),
                         "data_category": h.get("data_category", ""),
                         "workflow_type": (h.get("analysis") or {}).get("workflow_type", ""), "kind": kind,
                         "project_id": _joined([(c.get("project") or {}).get("project_id", project) for c in cases])
                         or project,
                         "case_id": _joined([c.get("submitter_id", "") for c in cases]),
                         "sample_id": _listed([s.get("submitter_id", "") for s in samples]),
                         **{f: _listed([s.get(f, "") for s in samples]) for f in SAMPLE_FIELDS}})
    return pd.DataFrame(rows, columns=FILE_COLUMNS).drop_duplicates("file_id").reset_index(drop=True)


def _num(value) -> float | None:
    try:
        return None if value in (None, "", MISSING) else float(value)
    except (TypeError, ValueError):
        return None


def _latest(values: list) -> float | None:
    nums = [v for v in map(_num, values) if v is not None]
    return max(nums) if nums else None


def clinical_row(case: dict) -> dict:
    """A case from the ``cases`` endpoint as one row of the portal's clinical export.

    ``days_to_last_follow_up`` is the latest of the diagnoses' ``days_to_last_follow_up`` and the
    follow-up records' ``days_to_follow_up`` (days since diagnosis); missing values are ``'--``.
    ``sex_at_birth`` (data dictionary 4.0.3) falls back to the older ``gender``.
    """
    demo = case.get("demographic") or {}
    diagnoses, follow_ups = case.get("diagnoses") or [], case.get("follow_ups") or []
    death = _latest([demo.get("days_to_death")] + [d.get("days_to_death") for d in diagnoses])
    follow = _latest([d.get("days_to_last_follow_up") for d in diagnoses]
                     + [f.get("days_to_follow_up") for f in follow_ups])

    def fmt(v) -> str:
        if v is None or v == "":
            return MISSING
        return f"{v:g}" if isinstance(v, float) else str(v)

    return {"case_id": case.get("case_id", case.get("id", "")), "case_submitter_id": case["submitter_id"],
            "project_id": (case.get("project") or {}).get("project_id", ""),
            "vital_status": fmt(demo.get("vital_status")), "days_to_death": fmt(death),
            "days_to_last_follow_up": fmt(follow), "sex_at_birth": fmt(demo.get("sex_at_birth") or demo.get("gender")),
            "age_at_index": fmt(demo.get("age_at_index"))}


def query_clinical(project: str, base_url: str = GDC_API, page_size: int = 500) -> pd.DataFrame:
    """Overall-survival fields of every case of ``project``, one row per case (see :func:`clinical_row`)."""
    hits = _hits("cases", {"op": "and", "content": [_in("project.project_id", project)]}, CASE_FIELDS,
                 base_url, page_size, expand=CASE_EXPAND)
    rows = [clinical_row(h) for h in hits]
    return pd.DataFrame(rows, columns=CLINICAL_COLUMNS).sort_values("case_submitter_id").reset_index(drop=True)


def _tsv(table: pd.DataFrame) -> str:
    return table.to_csv(sep="\t", index=False, lineterminator="\n")


def write_clinical(clinical: pd.DataFrame, path: str | os.PathLike) -> None:
    """The clinical table as the portal's TSV (``'--`` for missing), written atomically."""
    write_text_atomic(path, _tsv(clinical.fillna(MISSING)))


def write_manifest(files: pd.DataFrame, path: str | os.PathLike) -> None:
    """A gdc-client manifest: ``id filename md5 size state``, tab separated."""
    m = pd.DataFrame({"id": files["file_id"], "filename": files["file_name"], "md5": files["md5sum"],
                      "size": files["file_size"].astype(int), "state": files["state"]})
    write_text_atomic(path, _tsv(m))


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
    write_text_atomic(path, _tsv(s))


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
    write_text_atomic(paths["stale_ids"], _tsv(stale))
    log.info("%s: %d files of %d cases (%s), %d slide(s) of other sample types counted but not fetched, "
             "%d clinical records", project, len(files), files["case_id"].nunique(),
             ", ".join(f"{k} {n}" for k, n in files["kind"].value_counts().items()), len(skipped), len(clinical))
    return {k: str(v) for k, v in paths.items()}


# ---------------------------------------------------------------------------------------------
# plan


def kind_of(data_type: str) -> str:
    """The cohort data kind of a GDC data type (``Slide Image`` → ``slides``); else the type itself."""
    return KIND_OF_TYPE.get(data_type, data_type)


def download_plan(files: pd.DataFrame) -> pd.DataFrame:
    """Per data kind and in total: files, cases, bytes, and what is already on disk and still to fetch.

    ``files`` is an inventory (:func:`preprocessing.inventory.read_inventory`: ``data_type``,
    ``case_id``, ``size``, ``path``). A file at its final name with its size is present; a
    ``.partial`` counts the bytes it holds.
    """
    rows = []
    for r in files.itertuples(index=False):
        size, path = int(r.size), Path(r.path)
        present = path.is_file() and path.stat().st_size == size
        partial = path.with_name(path.name + ".partial")
        have = size if present else min(partial.stat().st_size, size) if partial.is_file() else 0
        rows.append({"kind": kind_of(r.data_type), "case_id": r.case_id, "bytes": size, "present": present,
                     "present_bytes": size if present else 0, "to_fetch_bytes": size - have})
    t = pd.DataFrame(rows, columns=["kind", "case_id", "bytes", "present", "present_bytes", "to_fetch_bytes"])

    def summary(g: pd.DataFrame) -> dict:
        return {"files": len(g), "cases": g["case_id"].nunique(), "bytes": int(g["bytes"].sum()),
                "present_files": int(g["present"].sum()), "present_bytes": int(g["present_bytes"].sum()),
                "to_fetch_bytes": int(g["to_fetch_bytes"].sum())}

    plan = [{"kind": k, **summary(g)} for k, g in t.groupby("kind", sort=True)]
    return pd.DataFrame(plan + [{"kind": "total", **summary(t)}])


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes on the file system of ``path`` (its nearest existing parent if it does not exist
    yet); ``$HEALNET_GDC_FREE_BYTES`` overrides it (tests)."""
    if os.environ.get(FREE_BYTES_ENV):
        return int(os.environ[FREE_BYTES_ENV])
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def space_needed(plan: pd.DataFrame, margin: float) -> int:
    """Bytes the download needs free: what is still to fetch, plus ``margin`` (a fraction) of it."""
    to_fetch = int(plan.loc[plan["kind"] == "total", "to_fetch_bytes"].iloc[0])
    return math.ceil(to_fetch * (1 + margin))


def plan_summary(plan: pd.DataFrame, data_dir: str | os.PathLike, free: int, needed: int) -> str:
    """The plan as lines for a log: per kind files, cases, bytes and what is left to fetch; free space."""
    lines = [f"GDC download plan for {data_dir}:"]
    for r in plan.itertuples(index=False):
        lines.append(f"  {r.kind:<10} {r.files:>6} files {r.cases:>6} cases {human(r.bytes):>10}"
                     f"   present {r.present_files} files, to fetch {human(r.to_fetch_bytes)}")
    verdict = "enough" if free >= needed else "NOT ENOUGH"
    lines.append(f"  free at {data_dir}: {human(free)}; needed with margin: {human(needed)} ({verdict})")
    return "\n".join(lines)


def check_space(plan: pd.DataFrame, data_dir: str | os.PathLike, margin: float = 0.1,
                free: int | None = None) -> tuple[int, int]:
    """(needed, free) bytes; a :class:`GDCError` saying both when the free space is short."""
    needed = space_needed(plan, margin)
    free = free_bytes(data_dir) if free is None else free
    if free < needed:
        to_fetch = int(plan.loc[plan["kind"] == "total", "to_fetch_bytes"].iloc[0])
        raise GDCError(f"not enough space at {data_dir}: the download needs {human(needed)} ({human(to_fetch)} still "
                       f"to fetch + {margin:.0%} margin) but only {human(free)} is free. Free some space, point "
                       "data_dir at a larger disk, or try the cohort small first with max_cases.")
    return needed, free


def write_plan(files: pd.DataFrame, data_dir: str | os.PathLike, out: str | os.PathLike,
               margin: float = 0.1) -> pd.DataFrame:
    """:func:`download_plan` written to ``out`` and logged, after :func:`check_space` (which may stop it)."""
    plan = download_plan(files)
    needed, free = space_needed(plan, margin), free_bytes(data_dir)
    log.info("%s", plan_summary(plan, data_dir, free, needed))
    check_space(plan, data_dir, margin, free)
    write_text_atomic(out, _tsv(plan.assign(free_bytes=free, needed_bytes=needed)))
    return plan


# ---------------------------------------------------------------------------------------------
# download


def _verified_record(final: Path) -> Path:
    return final.with_name(f".{final.name}.verified")


def _is_verified(final: Path, size: int, md5: str, check_md5: bool) -> bool:
    """Whether a present file matches the manifest. Its md5 is computed once: a record beside it
    (size, mtime, md5) lets later runs trust an unchanged file without reading it again."""
    st = final.stat()
    if st.st_size != size:
        return False
    if not check_md5:
        return True
    record = _verified_record(final)
    try:
        seen = json.loads(record.read_text())
        if seen == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "md5": md5}:
            return True
    except (OSError, ValueError):
        pass
    if file_md5(final) != md5:
        return False
    _remember_verified(final, md5)
    return True


def _remember_verified(final: Path, md5: str) -> None:
    st = final.stat()
    try:
        write_text_atomic(_verified_record(final), json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                                               "md5": md5}))
    except OSError as e:  # a read-only shared copy: verified again next time
        log.warning("%s: cannot record that it was verified (%s)", final, e.strerror)


class _Retry(Exception):
    """A failure worth another try (connection lost, 5xx, short body)."""


class _Progress:
    """Logs a download's bytes, rate and ETA at most every ``every_s`` seconds."""

    def __init__(self, file_id: str, size: int, every_s: float):
        self.file_id, self.size, self.every_s = file_id, size, every_s
        self.t0 = self.last = time.monotonic()
        self.received = 0

    def add(self, n: int, have: int) -> None:
        self.received += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            rate = self.received / max(now - self.t0, 1e-6)
            eta = (self.size - have) / rate if rate > 0 else float("inf")
            log.info("%s: %s of %s (%.0f%%), %s/s, ETA %s", self.file_id, human(have), human(self.size),
                     100 * have / max(self.size, 1), human(rate), _duration(eta))


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _refusal(code: int, file_id: str, file_name: str, access: str, token: str | None,
             source: str | None) -> FileRefused:
    """What a 401/403/404 of one file means and what to do about it (never the token itself)."""
    what = f"file {file_id} ({file_name}, access: {access or 'unknown'})"
    if code == 404:
        reason = (f"HTTP 404: {what} is not in the GDC any more (removed, or given a new id in a data release); "
                  "query the cohort again for current ids")
    elif token is None:
        reason = (f"HTTP {code}: {what} needs a GDC token: download one from the GDC portal with an account that "
                  f"has dbGaP access to the project and name it in gdc.token_file or ${TOKEN_FILE_ENV}, or keep "
                  "to open data (gdc.access: [open])")
    else:
        reason = (f"HTTP {code}: {what}: the GDC refused the token from {source}: it may have expired (tokens last "
                  "30 days; download a new one from the portal) or the account lacks dbGaP access to this project")
    return FileRefused(reason, reason)


def _fetch_once(session: requests.Session, url: str, partial: Path, size: int, timeout: float,
                counts: dict[str, int], progress: _Progress, refuse) -> None:
    """One request appending to ``partial`` from its current length; adds to ``counts`` the bytes
    received and, for a ``Range`` request, the offset asked for (``resumed_from``, first one kept).
    ``refuse(code)`` builds the error of a 401/403/404."""
    offset = partial.stat().st_size if partial.exists() else 0
    if offset > size:
        partial.unlink()
        offset = 0
    if offset == size:
        return
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    if offset and not counts.get("resumed_from"):
        counts["resumed_from"] = offset
    try:
        with session.get(url, headers=headers, stream=True, timeout=timeout) as r:
            if r.status_code >= 500 or r.status_code == 429:
                raise _Retry(f"HTTP {r.status_code}")
            if r.status_code == 416:  # our partial does not fit the server's file: start over
                partial.unlink(missing_ok=True)
                raise _Retry("HTTP 416 (range not satisfiable)")
            if r.status_code in (401, 403, 404):
                raise refuse(r.status_code)
            if r.status_code not in (200, 206):
                raise GDCError(f"{url}: HTTP {r.status_code}: {r.text[:200]}")
            if r.status_code == 206:
                start = r.headers.get("Content-Range", "").removeprefix("bytes ").split("-")[0]
                if start != str(offset):
                    raise GDCError(f"{url}: asked for bytes {offset}- but got Content-Range "
                                   f"{r.headers.get('Content-Range')!r}")
            else:
                offset = 0  # the server ignored the Range header: the body is the whole file
                counts["resumed_from"] = 0
            # keep the bytes of a body cut short (urllib3 would drop its buffer); the size check below
            # turns a short body into a retry that resumes after them
            r.raw.enforce_content_length = False
            have = offset
            with open(partial, "ab" if offset else "wb") as f:
                for block in r.iter_content(CHUNK):
                    f.write(block)
                    counts["bytes_received"] += len(block)
                    have += len(block)
                    progress.add(len(block), have)
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
        raise _Retry(f"{type(e).__name__}: {e}") from e
    if partial.stat().st_size < size:
        raise _Retry(f"connection closed after {partial.stat().st_size} of {size} bytes")


def download_file(file_id: str, file_name: str, md5: str, size: int, out_dir: str | os.PathLike,
                  base_url: str = GDC_API, retries: int = 5, backoff: float = 2.0, timeout: float = 120.0,
                  verify_present_md5: bool = True, token_file: str | os.PathLike | None = None,
                  access: str = "", progress_s: float = 30.0) -> dict:
    """Fetch one file to ``{out_dir}/{file_id}/{file_name}`` through ``{base_url}/data/{file_id}``.

    The body goes to ``<name>.partial``; a later try (or a later run) resumes it with
    ``Range: bytes=N-``. Only a file whose size (bytes) and md5 match the manifest is renamed to
    its final name. Connection errors, 5xx and short bodies are retried after ``backoff * 2**k``
    seconds; a wrong md5 discards the partial and starts over. A file already at its final name
    with the right size (and md5, unless ``verify_present_md5`` is off; computed once, see
    :func:`_is_verified`) is left alone. The GDC token (:func:`read_token`) goes in the
    ``X-Auth-Token`` header. 401/403/404 and an md5 wrong after every try raise
    :class:`FileRefused`; progress (bytes, rate, ETA) is logged every ``progress_s`` seconds.
    Returns what happened.
    """
    check_file_record(file_id, file_name, "download")
    root = Path(out_dir).absolute()
    final = root / file_id / file_name
    if final.parent.parent != root:  # belt and braces: check_file_record keeps it so
        raise UnsafeRecord(f"file {file_id}: {final} is outside {root}; refused")
    partial = final.with_name(final.name + ".partial")
    t0 = time.monotonic()
    if final.exists():
        if _is_verified(final, size, md5, verify_present_md5):
            return {"file_id": file_id, "file_name": file_name, "status": "already present",
                    "bytes_received": 0, "resumed_from": 0, "attempts": 0, "seconds": 0.0}
        log.warning("%s: %s exists but does not match the manifest; fetching it again", file_id, final)
        final.unlink()
    final.parent.mkdir(parents=True, exist_ok=True)
    url = f"{base_url.rstrip('/')}/data/{file_id}"
    token, source = read_token(token_file), token_source(token_file)
    counts, last_error, bad_md5 = {"bytes_received": 0, "resumed_from": 0}, "", None
    progress = _Progress(file_id, size, progress_s)

    def refuse(code: int) -> FileRefused:
        return _refusal(code, file_id, file_name, access, token, source)

    with requests.Session() as session:
        if token:
            session.headers["X-Auth-Token"] = token
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))
            try:
                _fetch_once(session, url, partial, size, timeout, counts, progress, refuse)
            except _Retry as e:
                last_error, bad_md5 = str(e), None
                log.warning("%s: try %d of %d failed: %s", file_id, attempt + 1, retries + 1, e)
                continue
            actual = file_md5(partial)
            if actual == md5:
                os.replace(partial, final)
                _remember_verified(final, md5)
                seconds = time.monotonic() - t0
                log.info("%s: %s in %.1f s (%s/s)", file_id, human(size), seconds,
                         human(counts["bytes_received"] / max(seconds, 1e-6)))
                return {"file_id": file_id, "file_name": file_name,
                        "status": "resumed" if counts["resumed_from"] else "downloaded", **counts,
                        "attempts": attempt + 1, "seconds": round(seconds, 3)}
            bad_md5, last_error = actual, f"md5 {actual} but the manifest says {md5}"
            log.warning("%s: %s; starting over", file_id, last_error)
            partial.unlink()
    if bad_md5 is not None:
        reason = (f"md5 {bad_md5} does not match the manifest's {md5} after {retries + 1} tries; "
                  "partial download removed")
        raise FileRefused(f"file {file_id} ({file_name}): {reason}", reason)
    raise GDCError(f"file {file_id} ({file_name}): failed after {retries + 1} tries: {last_error}")


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
    write_text_atomic(record, _tsv(pd.DataFrame([row]).reindex(columns=RECORD_COLUMNS)))
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
    write_text_atomic(out, _tsv(table))


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
    write_text_atomic(out_sheet, _tsv(sheet))
    write_text_atomic(out_table, _tsv(table))
    log.info("%d files: %s", len(table), table["status"].value_counts().to_dict())
    for r in table[table["status"] == "failed"].itertuples(index=False):
        log.warning("failed: %s", r.reason)
    return table


def read_manifest_table(manifest: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """A manifest with every row checked: md5 and size valid, id a UUID, a safe file name."""
    m = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
    source = manifest if not isinstance(manifest, pd.DataFrame) else "manifest"
    bad = m[~m["size"].astype(str).str.fullmatch(r"\d+") | ~m["md5"].astype(str).str.fullmatch(r"[0-9a-f]{32}")]
    if len(bad):
        raise ValueError(f"{source}: {len(bad)} row(s) without a valid md5 / size, e.g. {bad['id'].iloc[0]}")
    for r in m.itertuples(index=False):
        check_file_record(r.id, r.filename, str(source))
    return m.assign(size=m["size"].astype(int))


def download(manifest: str | os.PathLike | pd.DataFrame, out_dir: str | os.PathLike, base_url: str = GDC_API,
             workers: int = 4, retries: int = 5, backoff: float = 2.0, timeout: float = 120.0,
             verify_present_md5: bool = True, token_file: str | os.PathLike | None = None,
             strict: bool = True) -> pd.DataFrame:
    """Every file of a manifest via :func:`download_file`, ``workers`` at a time (the command line;
    the workflow runs one job per file instead).

    Files that fail do not stop the others; after all finished, with ``strict`` a
    :class:`GDCError` lists them. Returns one row per file: status (downloaded / resumed / already
    present / failed), bytes received, the offset a download resumed from and the number of tries.
    """
    m = read_manifest_table(manifest)

    def one(row) -> dict:
        try:
            return download_file(row.id, row.filename, row.md5, int(row.size), out_dir, base_url,
                                 retries, backoff, timeout, verify_present_md5, token_file)
        except GDCError as e:
            return {"file_id": row.id, "file_name": row.filename, "status": "failed", "error": str(e)}

    with ThreadPoolExecutor(max(1, workers)) as ex:
        table = pd.DataFrame(list(ex.map(one, m.itertuples(index=False))))
    failed = table[table["status"] == "failed"] if len(table) else table
    if strict and len(failed):
        raise GDCError(f"{len(failed)} of {len(table)} file(s) could not be downloaded:\n"
                       + "\n".join(failed["error"]))
    return table


def verify_local(manifest: str | os.PathLike | pd.DataFrame, data_dir: str | os.PathLike,
                 check_md5: bool = False, strict: bool = True) -> pd.DataFrame:
    """Check that every manifest file is at ``{data_dir}/{id}/{filename}`` with its size (and md5).

    Returns one row per file with ``status`` ok / missing / wrong size / wrong md5; with
    ``strict`` a :class:`FileNotFoundError` lists the bad ones.
    """
    m = read_manifest_table(manifest)
    rows = []
    for r in m.itertuples(index=False):
        p = Path(data_dir) / r.id / r.filename
        status = "ok"
        if not p.is_file():
            status = "missing"
        elif p.stat().st_size != r.size:
            status = f"wrong size ({p.stat().st_size} bytes, manifest {r.size})"
        elif check_md5 and not _is_verified(p, r.size, r.md5, True):
            status = "wrong md5"
        rows.append({"file_id": r.id, "path": str(p), "status": status})
    table = pd.DataFrame(rows, columns=["file_id", "path", "status"])
    bad = table[table["status"] != "ok"]
    if strict and len(bad):
        lines = [f"  {b.path}: {b.status}" for b in bad.head(20).itertuples()]
        raise FileNotFoundError(f"{len(bad)} of {len(table)} manifest file(s) not usable under {data_dir}:\n"
                                + "\n".join(lines) + ("\n  ..." if len(bad) > 20 else ""))
    return table


def plan_of(sample_sheet: str | os.PathLike, manifest: str | os.PathLike, data_dir: str | os.PathLike,
            margin: float = 0.1) -> str:
    """The plan summary of a queried cohort (for a dry run): files, bytes, free space."""
    plan = download_plan(read_inventory(sample_sheet, manifest, data_dir))
    return plan_summary(plan, data_dir, free_bytes(data_dir), space_needed(plan, margin))


def main(argv: list[str] | None = None) -> int:
    """CLI: ``query`` writes manifest + sample sheet + clinical TSV; ``plan`` prints sizes and free
    space; ``download`` fetches a manifest; ``verify`` checks files already on disk."""
    ap = argparse.ArgumentParser(prog="python -m preprocessing.gdc", description=main.__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("query", help="find a project's files and clinical data")
    q.add_argument("--project", required=True, help="e.g. TCGA-BRCA")
    q.add_argument("--kinds", nargs="+", default=["slides", "rna"], choices=list(KINDS))
    q.add_argument("--out", required=True, help="folder for gdc_manifest.txt, gdc_sample_sheet.tsv, clinical.tsv")
    q.add_argument("--max-cases", type=int, default=None)
    q.add_argument("--access", nargs="+", default=["open"], choices=list(ACCESS))
    q.add_argument("--cnv-workflows", nargs="+", default=DEFAULT_CNV_WORKFLOWS, choices=list(CNV_WORKFLOWS))
    q.add_argument("--slide-codes", nargs="+", default=DEFAULT_SLIDE_CODES,
                   help="sample types of the slides to fetch (01: primary tumour)")
    p = sub.add_parser("plan", help="files, bytes and free space of a queried cohort")
    p.add_argument("--meta", required=True, help="the folder `query` wrote")
    p.add_argument("--data-dir", required=True)
    d = sub.add_parser("download", help="fetch every file of a manifest to OUT/{id}/{filename}")
    d.add_argument("--manifest", required=True)
    d.add_argument("--out", required=True)
    d.add_argument("--workers", type=int, default=4)
    d.add_argument("--retries", type=int, default=5)
    d.add_argument("--backoff", type=float, default=2.0, help="seconds before the first retry, doubled each time")
    d.add_argument("--token-file", default=None, help=f"GDC token for controlled files (else ${TOKEN_FILE_ENV})")
    v = sub.add_parser("verify", help="check files already on disk against a manifest")
    v.add_argument("--manifest", required=True)
    v.add_argument("--data-dir", required=True)
    v.add_argument("--md5", action="store_true", help="also compare md5 sums (read once, then remembered)")
    for sp in (q, d):
        sp.add_argument("--base-url", default=GDC_API)
    q.add_argument("--page-size", type=int, default=500)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if a.cmd == "query":
            print(json.dumps(fetch_cohort_metadata(a.project, a.kinds, a.out, a.base_url, a.page_size,
                                                   a.max_cases, access=a.access, cnv_workflows=a.cnv_workflows,
                                                   slide_codes=a.slide_codes), indent=2))
        elif a.cmd == "plan":
            meta = Path(a.meta)
            print(plan_of(meta / "gdc_sample_sheet.tsv", meta / "gdc_manifest.txt", a.data_dir))
        elif a.cmd == "download":
            table = download(a.manifest, a.out, a.base_url, a.workers, a.retries, a.backoff, token_file=a.token_file)
            print(table.to_string(index=False))
        else:
            print(verify_local(a.manifest, a.data_dir, check_md5=a.md5).to_string(index=False))
    except (GDCError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
