"""The download plan: per data kind the files, cases and bytes of a cohort, what is already on
disk and what is left to fetch, and whether the disk has room for it (with a margin) before a
byte is fetched.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path

import pandas as pd

from ..inventory import read_inventory
from ..io import write_tsv_atomic
from .core import GDCError, human, kind_of

log = logging.getLogger(__name__)

FREE_BYTES_ENV = "HEALNET_GDC_FREE_BYTES"  # pretend this much space is free (tests; a dry rehearsal)


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
    write_tsv_atomic(plan.assign(free_bytes=free, needed_bytes=needed), out)
    return plan


def plan_of(sample_sheet: str | os.PathLike, manifest: str | os.PathLike, data_dir: str | os.PathLike,
            margin: float = 0.1) -> str:
    """The plan summary of a queried cohort (for a dry run): files, bytes, free space."""
    plan = download_plan(read_inventory(sample_sheet, manifest, data_dir))
    return plan_summary(plan, data_dir, free_bytes(data_dir), space_needed(plan, margin))
