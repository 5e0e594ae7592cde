"""The preprocessing stages on a real Aperio slide (``cmu_small_region.svs``, a 1.1 × 1.5 mm crop of
CMU-1, skin H&E), so that what we test on generated slides also holds on a scanner's file."""
from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest

from preprocessing.feature_store import read_features
from preprocessing.features import extract_features
from preprocessing.slides import open_slide, slide_info
from preprocessing.tiling import read_coords, tile_slide
from preprocessing.tissue_geojson import polygons_to_mask, read_tissue, segment_slide

MPP = 0.499  # µm/px, from its Aperio header


@pytest.fixture(scope="module")
def real_run(real_slide, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("real_slide")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        tissue = segment_slide(real_slide, out / "s.geojson", out / "s.png")
    tiling = tile_slide(out / "s.geojson", out / "s.h5")
    return {"dir": out, "tissue": tissue, "tiling": tiling}


def test_openslide_reads_it_as_aperio_at_half_a_micron(real_slide):
    with open_slide(real_slide) as slide:
        info = slide_info(slide, real_slide)
    assert info.backend == "openslide" and info.vendor == "aperio"
    assert (info.width, info.height) == (2220, 2967)
    assert info.mpp == pytest.approx(MPP)


def test_tissue_mask_covers_the_specimen(real_run):
    meta = real_run["tissue"]
    assert meta["status"] == "ok" and meta["mpp"] == pytest.approx(MPP)
    polygons, _ = read_tissue(real_run["dir"] / "s.geojson")
    ds = meta["thumbnail_downsample"]
    mask = polygons_to_mask(polygons, (round(meta["height"] / ds), round(meta["width"] / ds)), ds)
    # Checked by eye on the QC PNG: the specimen is a strip of skin running from the top centre to
    # the bottom left, about a third of the image; the rest is glass.  (0.37 with default params: a pale stroma strand included.)
    assert 0.25 < mask.mean() < 0.45
    h, w = mask.shape
    assert mask[int(0.8 * h), int(0.45 * w)]  # inside the strip
    assert not mask[: h // 5, : w // 5].any() and not mask[: h // 5, -w // 5:].any()  # glass corners
    # the area in mm² agrees with the mask (1.1 × 1.48 mm slide)
    assert meta["tissue_area_mm2"] == pytest.approx(mask.mean() * 2220 * 2967 * MPP**2 / 1e6, rel=0.05)


def test_tiling_gives_patches_on_the_tissue(real_run):
    tiling, area_mm2 = real_run["tiling"], real_run["tissue"]["tissue_area_mm2"]
    coords, attrs = read_coords(real_run["dir"] / "s.h5")
    assert tiling["status"] == "ok" and len(coords) == tiling["n_patches"] > 0
    assert attrs["patch_size_level0"] == round(256 * 0.5 / MPP)  # 256 px at 0.5 µm/px
    # every patch is at least half tissue, so they cannot cover more than twice the tissue area
    patch_mm2 = (256 * 0.5 / 1000) ** 2
    assert len(coords) * patch_mm2 * 0.5 <= area_mm2 * 1.05


def test_features_of_a_few_patches(real_slide, real_run, tmp_path):
    coords, _ = read_coords(real_run["dir"] / "s.h5")
    few = tmp_path / "few.h5"
    with h5py.File(real_run["dir"] / "s.h5") as src, h5py.File(few, "w") as dst:
        d = dst.create_dataset("coords", data=coords[:5])
        d.attrs.update(dict(src["coords"].attrs))
        dst.attrs.update(dict(src.attrs))
    meta = extract_features(real_slide, few, tmp_path / "few.zarr", batch_size=4)
    feats, stored, attrs = read_features(tmp_path / "few.zarr")
    assert meta["n_patches"] == 5 and attrs["status"] == "ok"
    assert feats.shape == (5, 512) and np.isfinite(feats.astype(np.float32)).all()
    np.testing.assert_array_equal(stored, coords[:5])
    assert len(np.unique(feats, axis=0)) == 5  # different tissue, different features
