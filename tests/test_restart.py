"""Restart under SIGKILL: the workflow killed (its whole process group: Snakemake and its running jobs)
during tiling, during feature extraction and during training, each time rerun with --rerun-incomplete,
ends with outputs identical to an uninterrupted run of the same config (fixed seed).

The three kills hit one working folder in turn (kill, rerun, kill, rerun, kill, rerun), so the test
costs about two full runs of a tiny cohort. A kill point is detected by polling the job logs and outputs
every 20 ms: the stage's first job has started and its outputs are not all there yet.
Outputs are compared by content, not bytes, where the format stores write times (HDF5 object headers):
HDF5 datasets and attributes, Zarr arrays and attributes, Parquet tables, checkpoints' tensors; every
other file (TSV, JSON, GeoJSON, PNG) byte for byte. Logs are not outputs and are not compared.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generators.demo import generate_cohort
from tiny_dag import write_tiny_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
N_FOLDS = 3


def write_config(work: Path, raw: Path) -> Path:
    write_tiny_config(work, raw, n_folds=N_FOLDS, batch_size=8, epochs=3, omic_top_k=16, patience=3)
    return work


def command(work: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work),
            "--configfile", str(work / "config.yaml"), "--cores", "2", *extra]


def run_to_end(work: Path, *extra: str) -> str:
    run = subprocess.run(command(work, *extra), capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    return run.stdout + run.stderr


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def run_and_kill(work: Path, started, unfinished, what: str, *extra: str, timeout: float = 600) -> dict:
    """Start the workflow in its own process group; SIGKILL the group once ``started()`` and
    ``unfinished()`` both hold. Returns when every process of the group is gone."""
    log = open(work / f"kill_{what}.log", "w")
    proc = subprocess.Popen(command(work, *extra), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    pgid = os.getpgid(proc.pid)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout:
            if started() and unfinished():
                os.killpg(pgid, signal.SIGKILL)
                break
            if proc.poll() is not None:
                pytest.fail(f"the workflow ended ({proc.returncode}) before the {what} kill point:\n"
                            + (work / f"kill_{what}.log").read_text()[-3000:])
            time.sleep(0.02)
        else:
            os.killpg(pgid, signal.SIGKILL)
            pytest.fail(f"no {what} kill point within {timeout} s")
        killed_at = time.monotonic() - t0
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while group_alive(pgid) and time.monotonic() < deadline:  # the jobs die with their group
            time.sleep(0.1)
        assert not group_alive(pgid), f"processes of group {pgid} survived SIGKILL"
    finally:
        if proc.poll() is None:
            os.killpg(pgid, signal.SIGKILL)
            proc.wait()
        log.close()
    return {"stage": what, "killed_after_s": round(killed_at, 1)}


# -- content digests ------------------------------------------------------------------------------

def _h(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else repr(p).encode())
    return h.hexdigest()


def _attrs(attrs) -> str:
    return json.dumps({k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in dict(attrs).items()},
                      sort_keys=True, default=str)


def digest_h5(path: Path) -> str:
    import h5py

    parts = []
    with h5py.File(path, "r") as f:
        parts.append(("/", _attrs(f.attrs)))

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                parts.append((name, str(obj.dtype), obj.shape, obj[()].tobytes(), _attrs(obj.attrs)))
            else:
                parts.append((name, _attrs(obj.attrs)))

        f.visititems(visit)
    return _h(*parts)


def digest_zarr(path: Path) -> str:
    import zarr

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Snakemake's .snakemake_timestamp file in directory() outputs
        g = zarr.open_group(str(path), mode="r")
        arrays = sorted(g.arrays())
    parts = [("/", json.dumps(dict(g.attrs), sort_keys=True, default=str))]
    for name, arr in arrays:
        parts.append((name, str(arr.dtype), arr.shape, arr[...].tobytes(),
                      json.dumps(dict(arr.attrs), sort_keys=True, default=str)))
    return _h(*parts)


def digest_parquet(path: Path) -> str:
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    return _h(str(t.schema), t.to_pandas().to_csv(index=True))


def digest_torch(path: Path) -> str:
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=False)

    def flat(o, prefix=""):
        if isinstance(o, torch.Tensor):
            yield prefix, str(o.dtype), tuple(o.shape), o.detach().contiguous().numpy().tobytes()
        elif isinstance(o, dict):
            for k in sorted(o, key=str):
                yield from flat(o[k], f"{prefix}/{k}")
        elif isinstance(o, (list, tuple)):
            for i, v in enumerate(o):
                yield from flat(v, f"{prefix}/{i}")
        else:
            yield prefix, repr(o)

    return _h(*flat(obj))


def digests(results: Path) -> dict[str, str]:
    out = {}
    for p in sorted(results.rglob("*")):
        rel = p.relative_to(results).as_posix()
        if "/logs/" in f"/{rel}" or any(part.endswith(".zarr") for part in p.relative_to(results).parts[:-1]):
            continue
        if p.is_dir() and p.suffix == ".zarr":
            out[rel] = digest_zarr(p)
        elif p.is_file():
            digest = {".h5": digest_h5, ".parquet": digest_parquet, ".pt": digest_torch}.get(p.suffix)
            out[rel] = digest(p) if digest else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# -- the test -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    raw = tmp_path_factory.mktemp("restart_raw")
    info = generate_cohort(raw, n_cases=8, seed=21, slide_size=(1024, 768), n_genes=80, workers=1)
    return raw, info


def test_killed_runs_resume_to_identical_outputs(cohort, tmp_path):
    raw, info = cohort
    n_slides = info["n_slides"]

    t0 = time.monotonic()
    ref = write_config(tmp_path / "reference", raw)
    run_to_end(ref)
    t_ref = time.monotonic() - t0
    expected = digests(ref / "results")
    assert any(k.endswith(".zarr") for k in expected) and any(k.endswith("metrics.json") for k in expected)

    work = write_config(tmp_path / "killed", raw)
    res = work / "results" / "tiny"

    def count(pattern: str) -> int:
        return len(list(res.glob(pattern)))

    kill_points = [
        # one job per slide segments, tiles, then encodes: killed once a slide's tissue is written, then
        # once a store is being encoded (its hidden partial store exists)
        ("tiling", lambda: count("tissue/*.geojson") > 0, lambda: count("patches/*.h5") < n_slides),
        ("features", lambda: count("features/*/.*.tmp-partial") > 0, lambda: count("features/*/*.zarr") < n_slides),
        ("train", lambda: count("logs/train/*/*.log") > 0, lambda: count("models/*/fold*/metrics.json") < N_FOLDS),
    ]
    report = []
    for i, (stage, started, unfinished) in enumerate(kill_points):
        # the first run starts afresh; every later one resumes the killed one, with --rerun-incomplete
        extra = ("--rerun-incomplete",) if i else ()
        report.append(run_and_kill(work, started, unfinished, stage, *extra))
        # what the killed jobs were writing is not taken for finished: the stage is incomplete
        assert unfinished(), f"the {stage} kill came after the stage had finished"
        run_to_end(work, "--unlock")  # SIGKILL leaves Snakemake's lock behind
    t1 = time.monotonic()
    log = run_to_end(work, "--rerun-incomplete")
    t_resume = time.monotonic() - t1

    got = digests(work / "results")
    print(f"\nreference run {t_ref:.0f} s; final resume {t_resume:.0f} s; {len(expected)} outputs compared; "
          f"kill points: {report}")
    assert sorted(got) == sorted(expected), (sorted(set(got) ^ set(expected)))
    differ = sorted(k for k in expected if got[k] != expected[k])
    assert not differ, f"outputs differ from the uninterrupted run: {differ}"
    assert "Nothing to be done" in run_to_end(work, "-n")
