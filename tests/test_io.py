"""preprocessing.io: nothing appears under a final name unless its writer finished."""
from __future__ import annotations

import logging

import pytest

from preprocessing.io import atomic_path, job_log, write_text_atomic


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


def test_file_appears_only_after_the_block(tmp_path):
    final = tmp_path / "out.txt"
    with atomic_path(final) as tmp:
        tmp.write_text("hello")
        assert not final.exists()  # nothing under the final name while the writer runs
        assert tmp.parent == final.parent and tmp.name.startswith(".")
    assert final.read_text() == "hello"
    assert _entries(tmp_path) == ["out.txt"]


def test_failed_file_write_leaves_nothing(tmp_path):
    final = tmp_path / "out.txt"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert _entries(tmp_path) == []


def test_failed_write_keeps_the_previous_file(tmp_path):
    final = tmp_path / "out.txt"
    final.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(final) as tmp:
            tmp.write_text("new")
            raise KeyboardInterrupt  # a killed job, not only an exception
    assert final.read_text() == "old"
    assert _entries(tmp_path) == ["out.txt"]


def test_failed_folder_write_leaves_nothing(tmp_path):
    final = tmp_path / "store.zarr"
    with pytest.raises(ValueError):
        with atomic_path(final) as tmp:
            (tmp / "sub").mkdir(parents=True)
            (tmp / "sub" / "chunk").write_bytes(b"123")
            raise ValueError
    assert _entries(tmp_path) == []


def test_folder_replaces_an_existing_folder(tmp_path):
    final = tmp_path / "store.zarr"
    (final / "stale").mkdir(parents=True)
    (final / "stale" / "old_chunk").write_bytes(b"old")
    with atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "new_chunk").write_bytes(b"new")
    assert _entries(final) == ["new_chunk"]  # the old content is gone, not merged
    assert (final / "new_chunk").read_bytes() == b"new"
    assert _entries(tmp_path) == ["store.zarr"]


def test_stale_temporary_of_a_killed_run_is_cleared(tmp_path):
    final = tmp_path / "out.txt"
    with atomic_path(final) as tmp:
        stale_name = tmp.name
        tmp.write_text("first")
    (tmp_path / stale_name).write_text("left by a killed job")  # same pid, same temporary name
    final.unlink()
    with atomic_path(final) as tmp:
        assert not tmp.exists()
        tmp.write_text("fresh")
    assert final.read_text() == "fresh"
    assert _entries(tmp_path) == ["out.txt"]


def test_temporaries_of_dead_processes_are_cleared_and_live_ones_kept(tmp_path):
    """A SIGKILLed job of another pid leaves ``.<name>.tmp-<pid>`` behind (a file or a Zarr-like
    folder): the next write of that output removes it; a running process's temporary, another
    output's, and a resumable ``.tmp-partial`` store stay."""
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / f".out.txt.tmp-{dead}").mkdir()  # a Zarr-like folder left by a killed job
    (tmp_path / f".out.txt.tmp-{dead}" / "zarr.json").write_text("{}")
    (tmp_path / f".out.txt.tmp-{os.getppid()}").write_text("a live writer")
    (tmp_path / ".out.txt.tmp-partial").mkdir()
    (tmp_path / f".other.txt.tmp-{dead}").write_text("another output")
    write_text_atomic(tmp_path / "out.txt", "fresh")
    left = _entries(tmp_path)
    assert f".out.txt.tmp-{dead}" not in left
    assert f".out.txt.tmp-{os.getppid()}" in left and ".out.txt.tmp-partial" in left
    assert f".other.txt.tmp-{dead}" in left and "out.txt" in left


def test_parent_folders_are_created(tmp_path):
    final = tmp_path / "a" / "b" / "out.txt"
    write_text_atomic(final, "x")
    assert final.read_text() == "x"


def test_job_log_writes_records_and_logs_failures(tmp_path):
    log_file = tmp_path / "logs" / "job.log"
    with pytest.raises(RuntimeError):
        with job_log(log_file) as log:
            logging.getLogger("preprocessing.something").info("a record from a module")
            log.info("a record from the job")
            raise RuntimeError("the job broke")
    text = log_file.read_text()
    assert "a record from a module" in text
    assert "a record from the job" in text
    assert "job failed" in text and "the job broke" in text
    # handlers are removed afterwards: later records do not reach the file
    logging.getLogger("preprocessing.something").warning("after the job")
    assert "after the job" not in log_file.read_text()
