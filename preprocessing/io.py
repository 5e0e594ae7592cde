"""Atomic outputs and per-job logging shared by every stage.

A job killed half way must never leave a file or folder under its final name, so every writer
goes through :func:`atomic_path`: it yields a temporary sibling and renames it into place only
when the block finished without error.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported by the callers; io itself stays light
    import pandas as pd


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; move it onto ``final`` only on success.

    Works for files and for folders (Zarr stores). The temporary name starts with a dot and
    ends in ``.tmp-<pid>`` so that no glob for the final name ever matches it.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    _remove(tmp)
    _remove_orphans(final)
    try:
        yield tmp
        if final.exists() and tmp.is_dir():
            _remove(final)  # os.replace cannot replace a non-empty folder
        os.replace(tmp, final)
    finally:
        _remove(tmp)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove_orphans(final: Path) -> None:
    """Remove ``.<name>.tmp-<pid>`` siblings left by killed processes (a SIGKILL skips cleanup),
    so a rerun leaves no litter beside its outputs; a live process's temporary is left alone."""
    for path in final.parent.glob(f".{glob.escape(final.name)}.tmp-*"):
        pid = path.name.rsplit(".tmp-", 1)[1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            _remove(path)


def file_md5(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """Hex md5 of a file's bytes, read ``block`` bytes at a time."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_tsv_atomic(table: pd.DataFrame, path: str | os.PathLike, **to_csv) -> None:
    """``table`` as tab-separated text (no index, ``\n`` line ends) through a temporary file;
    ``to_csv`` passes further pandas options (e.g. ``float_format``)."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, lineterminator="\n", **to_csv)


@contextlib.contextmanager
def job_log(path: str | os.PathLike | None, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Send this package's log records (and warnings) to a Snakemake job's log file."""
    root = logging.getLogger()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w"))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    old_level = root.level
    root.setLevel(level)
    logging.captureWarnings(True)
    try:
        yield logging.getLogger("healnet-pipeline")
    except Exception:
        logging.getLogger("healnet-pipeline").exception("job failed")
        raise
    finally:
        for h in handlers:
            root.removeHandler(h)
            h.close()
        root.setLevel(old_level)
