"""A feature job killed with SIGKILL half way leaves nothing under the final store name; the
rerun resumes from the partial store and ends byte-identical to an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from generators.slide_render import write_svs
from preprocessing.feature_store import partial_path, read_features
from preprocessing.tiling import write_coords

ROOT = Path(__file__).resolve().parents[1]
SIDE = 4096  # px: 16 × 16 = 256 patches of 256 px
RUN = """
import logging, sys, torch
torch.set_num_threads(1)
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from preprocessing.features import extract_features
extract_features(sys.argv[1], sys.argv[2], sys.argv[3], batch_size=4, chunk_rows=8, num_workers=0)
"""


def _files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def _start(slide, coords, out) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", RUN, str(slide), str(coords), str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _rows_done(out: Path) -> int:
    try:
        return int(json.loads((partial_path(out) / "zarr.json").read_text())["attributes"]["_rows_done"])
    except (OSError, ValueError, KeyError):  # not there yet, or being rewritten
        return 0


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> tuple[Path, Path]:
    """A 4096² px Aperio slide of noise at 0.5 µm/px and the coordinates of all its 256 patches."""
    root = tmp_path_factory.mktemp("kill")
    rgb = np.random.default_rng(0).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    path = root / "noise.svs"
    write_svs(path, rgb, mpp=0.5, app_mag=20)
    xs = np.arange(0, SIDE, 256)
    coords = np.stack(np.meshgrid(xs, xs), -1).reshape(-1, 2)  # (x, y), row-major
    h5 = root / "noise.h5"
    write_coords(h5, coords, {"width": SIDE, "height": SIDE, "mpp": 0.5, "slide_id": "noise"}, patch_size=256,
                 size0=256, target_mpp=0.5)
    return path, h5


def test_killed_job_leaves_no_store_and_the_rerun_resumes_to_identical_bytes(slide, tmp_path):
    path, h5 = slide
    out = tmp_path / "features" / "noise.zarr"
    job = _start(path, h5, out)
    deadline = time.monotonic() + 120
    while _rows_done(out) < 16 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.poll() is None, f"the job ended before it could be killed: {job.stderr.read()[-2000:]}"
    job.send_signal(signal.SIGKILL)
    job.wait()
    killed_at = _rows_done(out)
    assert 16 <= killed_at < 256 and killed_at % 8 == 0  # whole chunks of whole batches
    assert not out.exists()  # nothing under the final name ...
    assert [p.name for p in out.parent.iterdir()] == [partial_path(out).name]  # ... only the hidden partial store
    assert not list(out.parent.glob("*.zarr"))

    rerun = _start(path, h5, out)
    _, log = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, log[-2000:]
    assert f"resuming at patch {killed_at} of 256" in log
    assert not partial_path(out).exists()

    whole = tmp_path / "whole" / "noise.zarr"
    again = _start(path, h5, whole)
    _, log = again.communicate(timeout=180)
    assert again.returncode == 0, log[-2000:]
    assert "resuming" not in log

    feats, coords, attrs = read_features(out)
    feats_whole, coords_whole, attrs_whole = read_features(whole)
    assert feats.shape == (256, 512)
    assert np.array_equal(feats, feats_whole) and np.array_equal(coords, coords_whole)
    assert attrs == attrs_whole and "_rows_done" not in attrs
    assert _files(out) == _files(whole)  # every chunk and metadata file, byte for byte
