"""GDC API client: find a project's files, write its manifest, sample sheet and clinical TSV,
and download the files resumably with md5 checks.

Files land where gdc-client puts them, ``{out_dir}/{file_id}/{file_name}``, so that
:mod:`preprocessing.inventory` reads a downloaded cohort exactly like one fetched by hand. The
base URL is a parameter everywhere (tests point it at a local stand-in); nothing here runs at
import time.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import requests

from .io import write_text_atomic

log = logging.getLogger(__name__)

GDC_API = "https://api.gdc.cancer.gov"
MISSING = "'--"  # how the GDC portal's clinical export writes a missing value
CHUNK = 1 << 20  # bytes read per streamed chunk

# Data kinds a cohort may ask for: GDC file fields and the values they must have.
KINDS: dict[str, dict[str, str]] = {
    "slides": {"data_format": "SVS", "experimental_strategy": "Diagnostic Slide"},
    "rna": {"analysis.workflow_type": "STAR - Counts"},
    "cnv": {"data_type": "Gene Level Copy Number"},
    "mutations": {"data_type": "Masked Somatic Mutation", "data_format": "MAF"},
}
FILE_FIELDS = ["file_id", "file_name", "md5sum", "file_size", "state", "data_type", "data_category",
               "data_format", "cases.submitter_id", "cases.project.project_id", "cases.samples.submitter_id",
               "cases.samples.sample_type"]
CASE_FIELDS = ["submitter_id", "case_id", "project.project_id"]
CASE_EXPAND = ["demographic", "diagnoses", "follow_ups"]
CLINICAL_COLUMNS = ["case_id", "case_submitter_id", "project_id", "vital_status", "days_to_death",
                    "days_to_last_follow_up", "gender", "age_at_index"]


class GDCError(RuntimeError):
    """An answer from the GDC API that cannot be used, or a file that could not be fetched intact."""


def _in(field: str, values: list[str] | str) -> dict:
    return {"op": "in", "content": {"field": field, "value": [values] if isinstance(values, str) else list(values)}}


def file_filters(project: str, kind: str) -> dict:
    """GDC filter JSON for one project's files of one kind (see :data:`KINDS`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown data kind {kind!r}; known: {', '.join(KINDS)}")
    return {"op": "and", "content": [_in("cases.project.project_id", project)]
            + [_in(field, value) for field, value in KINDS[kind].items()]}


def _hits(endpoint: str, filters: dict, fields: list[str], base_url: str, page_size: int,
          expand: list[str] | None = None, timeout: float = 60.0) -> Iterator[dict]:
    """Every hit of a search endpoint, page by page (``from``/``size``) until ``pagination.total``."""
    url, start = f"{base_url.rstrip('/')}/{endpoint}", 0
    while True:
        body = {"filters": filters, "fields": ",".join(fields), "format": "json", "from": start, "size": page_size}
        if expand:
            body["expand"] = ",".join(expand)
        r = requests.post(url, json=body, timeout=timeout)
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


def query_files(project: str, kinds: list[str], base_url: str = GDC_API, page_size: int = 500) -> pd.DataFrame:
    """One row per file of ``project`` of the given kinds, with its cases and samples.

    Multi-valued case / sample fields are joined with ``", "`` as in the portal's sample sheet.
    ``file_size`` is in bytes.
    """
    rows = []
    for kind in kinds:
        for h in _hits("files", file_filters(project, kind), FILE_FIELDS, base_url, page_size):
            cases = h.get("cases") or []
            samples = [s for c in cases for s in (c.get("samples") or [])]
            rows.append({"file_id": h["file_id"], "file_name": h["file_name"], "md5sum": h.get("md5sum", ""),
                         "file_size": int(h.get("file_size") or 0), "state": h.get("state", ""),
                         "data_type": h.get("data_type", ""), "data_category": h.get("data_category", ""),
                         "kind": kind,
                         "project_id": _joined([(c.get("project") or {}).get("project_id", project) for c in cases])
                         or project,
                         "case_id": _joined([c.get("submitter_id", "") for c in cases]),
                         "sample_id": _joined([s.get("submitter_id", "") for s in samples]),
                         "sample_type": _joined([s.get("sample_type", "") for s in samples])})
    cols = ["file_id", "file_name", "md5sum", "file_size", "state", "data_type", "data_category", "kind",
            "project_id", "case_id", "sample_id", "sample_type"]
    return pd.DataFrame(rows, columns=cols).drop_duplicates("file_id").reset_index(drop=True)


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
            "days_to_last_follow_up": fmt(follow), "gender": fmt(demo.get("gender")),
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
    """The portal's sample sheet, the layout :func:`preprocessing.inventory.read_inventory` reads."""
    s = pd.DataFrame({"File ID": files["file_id"], "File Name": files["file_name"],
                      "Data Category": files["data_category"], "Data Type": files["data_type"],
                      "Project ID": files["project_id"], "Case ID": files["case_id"],
                      "Sample ID": files["sample_id"], "Sample Type": files["sample_type"]})
    write_text_atomic(path, _tsv(s))


def limit_cases(files: pd.DataFrame, max_cases: int | None) -> pd.DataFrame:
    """Only the files of the first ``max_cases`` case ids in sorted order (a pilot run); None keeps all."""
    if not max_cases:
        return files
    keep = sorted(files["case_id"].unique())[:max_cases]
    return files[files["case_id"].isin(keep)].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# download


def _md5_of(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


class _Retry(Exception):
    """A failure worth another try (connection lost, 5xx, short body)."""


def _fetch_once(session: requests.Session, url: str, partial: Path, size: int, timeout: float,
                counts: dict[str, int]) -> None:
    """One request appending to ``partial`` from its current length; adds to ``counts`` the bytes
    received and, for a ``Range`` request, the offset asked for (``resumed_from``, first one kept)."""
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
            with open(partial, "ab" if offset else "wb") as f:
                for block in r.iter_content(CHUNK):
                    f.write(block)
                    counts["bytes_received"] += len(block)
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
        raise _Retry(f"{type(e).__name__}: {e}") from e
    if partial.stat().st_size < size:
        raise _Retry(f"connection closed after {partial.stat().st_size} of {size} bytes")


def download_file(file_id: str, file_name: str, md5: str, size: int, out_dir: str | os.PathLike,
                  base_url: str = GDC_API, retries: int = 5, backoff: float = 1.0, timeout: float = 60.0,
                  verify_present_md5: bool = True) -> dict:
    """Fetch one file to ``{out_dir}/{file_id}/{file_name}`` through ``{base_url}/data/{file_id}``.

    The body goes to ``<name>.partial``; a later try (or a later run) resumes it with
    ``Range: bytes=N-``. Only a file whose size (bytes) and md5 match the manifest is renamed to
    its final name. Connection errors, 5xx and short bodies are retried after ``backoff * 2**k``
    seconds; a wrong md5 discards the partial and starts over. A file already at its final name
    with the right size (and md5, unless ``verify_present_md5`` is off) is left alone.
    Returns what happened.
    """
    final = Path(out_dir) / file_id / file_name
    partial = final.with_name(final.name + ".partial")
    if final.exists():
        if final.stat().st_size == size and (not verify_present_md5 or _md5_of(final) == md5):
            return {"file_id": file_id, "file_name": file_name, "status": "already present",
                    "bytes_received": 0, "resumed_from": 0, "attempts": 0}
        log.warning("%s: %s exists but does not match the manifest; fetching it again", file_id, final)
        final.unlink()
    final.parent.mkdir(parents=True, exist_ok=True)
    url = f"{base_url.rstrip('/')}/data/{file_id}"
    counts, last_error, bad_md5 = {"bytes_received": 0, "resumed_from": 0}, "", None
    with requests.Session() as session:
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))
            try:
                _fetch_once(session, url, partial, size, timeout, counts)
            except _Retry as e:
                last_error, bad_md5 = str(e), None
                log.warning("%s: try %d of %d failed: %s", file_id, attempt + 1, retries + 1, e)
                continue
            actual = _md5_of(partial)
            if actual == md5:
                os.replace(partial, final)
                return {"file_id": file_id, "file_name": file_name,
                        "status": "resumed" if counts["resumed_from"] else "downloaded", **counts,
                        "attempts": attempt + 1}
            bad_md5, last_error = actual, f"md5 {actual} but the manifest says {md5}"
            log.warning("%s: %s; starting over", file_id, last_error)
            partial.unlink()
    if bad_md5 is not None:
        raise GDCError(f"file {file_id} ({file_name}): md5 {bad_md5} does not match the manifest's {md5} "
                       f"after {retries + 1} tries; partial download removed")
    raise GDCError(f"file {file_id} ({file_name}): failed after {retries + 1} tries: {last_error}")


def read_manifest_table(manifest: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    from .inventory import read_manifest

    m = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
    bad = m[~m["size"].astype(str).str.fullmatch(r"\d+") | ~m["md5"].astype(str).str.fullmatch(r"[0-9a-f]{32}")]
    if len(bad):
        raise ValueError(f"{manifest if not isinstance(manifest, pd.DataFrame) else 'manifest'}: "
                         f"{len(bad)} row(s) without a valid md5 / size, e.g. {bad['id'].iloc[0]}")
    return m.assign(size=m["size"].astype(int))


def download(manifest: str | os.PathLike | pd.DataFrame, out_dir: str | os.PathLike, base_url: str = GDC_API,
             workers: int = 4, retries: int = 5, backoff: float = 1.0, timeout: float = 60.0,
             verify_present_md5: bool = True) -> pd.DataFrame:
    """Every file of a manifest via :func:`download_file`, ``workers`` at a time.

    Files that fail do not stop the others; after all finished, a :class:`GDCError` lists them.
    Returns one row per file: status (downloaded / resumed / already present), bytes received,
    the offset a download resumed from and the number of tries.
    """
    m = read_manifest_table(manifest)

    def one(row) -> dict:
        try:
            return download_file(row.id, row.filename, row.md5, int(row.size), out_dir, base_url,
                                 retries, backoff, timeout, verify_present_md5)
        except GDCError as e:
            return {"file_id": row.id, "file_name": row.filename, "status": "failed", "error": str(e)}

    with ThreadPoolExecutor(max(1, workers)) as ex:
        table = pd.DataFrame(list(ex.map(one, m.itertuples(index=False))))
    failed = table[table["status"] == "failed"] if len(table) else table
    if len(failed):
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
        elif check_md5 and _md5_of(p) != r.md5:
            status = "wrong md5"
        rows.append({"file_id": r.id, "path": str(p), "status": status})
    table = pd.DataFrame(rows, columns=["file_id", "path", "status"])
    bad = table[table["status"] != "ok"]
    if strict and len(bad):
        lines = [f"  {b.path}: {b.status}" for b in bad.head(20).itertuples()]
        raise FileNotFoundError(f"{len(bad)} of {len(table)} manifest file(s) not usable under {data_dir}:\n"
                                + "\n".join(lines) + ("\n  ..." if len(bad) > 20 else ""))
    return table


def fetch_cohort_metadata(project: str, kinds: list[str], out_dir: str | os.PathLike, base_url: str = GDC_API,
                          page_size: int = 500, max_cases: int | None = None,
                          only_ids: set[str] | None = None) -> dict[str, str]:
    """Query files and clinical data; write ``gdc_manifest.txt``, ``gdc_sample_sheet.tsv``, ``clinical.tsv``.

    ``only_ids`` restricts the files to those ids (a manifest of files already on disk).
    """
    files = query_files(project, kinds, base_url, page_size)
    if only_ids is not None:
        files = files[files["file_id"].isin(only_ids)].reset_index(drop=True)
    files = limit_cases(files, max_cases)
    if files.empty:
        raise GDCError(f"{base_url}: no files of kinds {', '.join(kinds)} in project {project}")
    out = Path(out_dir)
    paths = {"manifest": out / "gdc_manifest.txt", "sample_sheet": out / "gdc_sample_sheet.tsv",
             "clinical": out / "clinical.tsv"}
    clinical = query_clinical(project, base_url, page_size)
    write_manifest(files, paths["manifest"])
    write_sample_sheet(files, paths["sample_sheet"])
    write_clinical(clinical, paths["clinical"])
    log.info("%s: %d files of %d cases, %d clinical records", project, len(files), files["case_id"].nunique(),
             len(clinical))
    return {k: str(v) for k, v in paths.items()}


def main(argv: list[str] | None = None) -> int:
    """CLI: ``query`` writes manifest + sample sheet + clinical TSV; ``download`` fetches a manifest;
    ``verify`` checks files already on disk."""
    ap = argparse.ArgumentParser(prog="python -m preprocessing.gdc", description=main.__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("query", help="find a project's files and clinical data")
    q.add_argument("--project", required=True, help="e.g. TCGA-BRCA")
    q.add_argument("--kinds", nargs="+", default=["slides", "rna"], choices=list(KINDS))
    q.add_argument("--out", required=True, help="folder for gdc_manifest.txt, gdc_sample_sheet.tsv, clinical.tsv")
    q.add_argument("--max-cases", type=int, default=None)
    d = sub.add_parser("download", help="fetch every file of a manifest to OUT/{id}/{filename}")
    d.add_argument("--manifest", required=True)
    d.add_argument("--out", required=True)
    d.add_argument("--workers", type=int, default=4)
    d.add_argument("--retries", type=int, default=5)
    d.add_argument("--backoff", type=float, default=2.0, help="seconds before the first retry, doubled each time")
    v = sub.add_parser("verify", help="check files already on disk against a manifest")
    v.add_argument("--manifest", required=True)
    v.add_argument("--data-dir", required=True)
    v.add_argument("--md5", action="store_true", help="also compare md5 sums (reads every file)")
    for p in (q, d):
        p.add_argument("--base-url", default=GDC_API)
    q.add_argument("--page-size", type=int, default=500)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if a.cmd == "query":
            print(json.dumps(fetch_cohort_metadata(a.project, a.kinds, a.out, a.base_url, a.page_size,
                                                   a.max_cases), indent=2))
        elif a.cmd == "download":
            table = download(a.manifest, a.out, a.base_url, a.workers, a.retries, a.backoff)
            print(table.to_string(index=False))
        else:
            print(verify_local(a.manifest, a.data_dir, check_md5=a.md5).to_string(index=False))
    except (GDCError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
