"""A whole manifest at once, for the command line: every row checked, every file fetched
``workers`` at a time (the workflow runs one job per file instead, see :mod:`.records`), and the
files already on disk verified against it.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from ..inventory import read_manifest
from .core import GDC_API, GDCError, check_file_record
from .transfer import download_file, is_verified


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
        elif check_md5 and not is_verified(p, r.size, r.md5, True):
            status = "wrong md5"
        rows.append({"file_id": r.id, "path": str(p), "status": status})
    table = pd.DataFrame(rows, columns=["file_id", "path", "status"])
    bad = table[table["status"] != "ok"]
    if strict and len(bad):
        lines = [f"  {b.path}: {b.status}" for b in bad.head(20).itertuples()]
        raise FileNotFoundError(f"{len(bad)} of {len(table)} manifest file(s) not usable under {data_dir}:\n"
                                + "\n".join(lines) + ("\n  ..." if len(bad) > 20 else ""))
    return table
