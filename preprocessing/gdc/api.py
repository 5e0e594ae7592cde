"""The GDC search API: filter JSON for a project's files of one kind and access, paging through a
search endpoint, and the ``files`` and ``cases`` queries as tables (files with their cases and
samples; cases as rows of the portal's clinical export).

What the GDC documents and this relies on (gdc-docs, API Users Guide): search endpoints take
``filters`` / ``fields`` / ``expand`` / ``from`` / ``size`` and answer 400 with a message for a
query they cannot run (e.g. an unknown field); every file record has ``access`` (open / controlled).
"""
from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import requests

from .core import ACCESS, DEFAULT_CNV_WORKFLOWS, GDC_API, KINDS, GDCError, check_file_record

MISSING = "'--"  # how the GDC portal's clinical export writes a missing value
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

