"""preprocessing.tiling: the patch grid, tissue fractions, and CLAM/TRIDENT-compatible h5 files."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from preprocessing.tiling import TilingParams, grid_coords, read_coords, segment_and_tile, tile_slide, tissue_fractions
from preprocessing.tissue_geojson import polygons_to_mask, read_tissue

from conftest import COHORT_MPP


@pytest.mark.parametrize("width,height,size,step", [(1024, 768, 256, 256), (1000, 700, 256, 256),
                                                     (1000, 700, 256, 200), (300, 300, 256, 17),
                                                     (255, 1000, 256, 256), (256, 256, 256, 256)])
def test_grid_has_every_whole_patch(width, height, size, step):
    coords = grid_coords(width, height, size, step)
    nx = math.floor((width - size) / step) + 1 if width >= size else 0
    ny = math.floor((height - size) / step) + 1 if height >= size else 0
    assert coords.shape == (nx * ny, 2) and coords.dtype == np.int64
    if len(coords):
        assert (coords >= 0).all()
        assert (coords[:, 0] + size <= width).all() and (coords[:, 1] + size <= height).all()
        assert (coords % step == 0).all()
        # row-major: y, then x
        order = np.lexsort((coords[:, 0], coords[:, 1]))
        np.testing.assert_array_equal(order, np.arange(len(coords)))
        assert len({tuple(c) for c in coords}) == len(coords)


def test_tissue_fractions_on_aligned_patches_equal_the_mean_of_the_mask():
    rng = np.random.default_rng(0)
    ds, size0 = 4, 32  # a patch covers 8 × 8 mask px
    mask = rng.random((60, 80)) < 0.4
    coords = grid_coords(80 * ds, 60 * ds, size0, 12)  # step 12 = 3 mask px: overlapping patches
    coords = coords[(coords % ds == 0).all(1)]
    assert len(coords) > 50
    got = tissue_fractions(mask, ds, coords, size0)
    expected = [mask[y // ds:(y + size0) // ds, x // ds:(x + size0) // ds].mean() for x, y in coords]
    np.testing.assert_allclose(got, expected)


def test_tissue_fractions_on_unaligned_patches_approximate_the_level0_fraction():
    rng = np.random.default_rng(1)
    ds, size0 = 4.0, 128
    mask = np.kron(rng.random((12, 16)) < 0.5, np.ones((5, 5), bool))  # blocks of 5 mask px
    level0 = np.repeat(np.repeat(mask, 4, 0), 4, 1)  # the mask at level 0, pixel for pixel
    coords = np.stack([rng.integers(0, level0.shape[1] - size0, 200),
                       rng.integers(0, level0.shape[0] - size0, 200)], 1)
    got = tissue_fractions(mask, ds, coords, size0)
    brute = np.array([level0[y:y + size0, x:x + size0].mean() for x, y in coords])
    assert np.abs(got - brute).max() <= 2 * ds / size0 + 1e-9  # edges rounded to the mask grid
    assert np.abs(got - brute).mean() < 0.02


def test_tissue_fractions_full_and_empty():
    mask = np.zeros((10, 10), bool)
    mask[:, :5] = True
    coords = np.array([[0, 0], [20, 0], [10, 10]])
    np.testing.assert_allclose(tissue_fractions(mask, 4.0, coords, 20), [1.0, 0.0, 0.5])


def _h5_attrs(path):
    with h5py.File(path, "r") as f:
        return f["coords"][:], f["coords"].dtype, dict(f["coords"].attrs), dict(f.attrs)


def test_tile_slide_writes_clam_trident_h5(processed, blank_slide_id):
    params = TilingParams()
    for sid, summary in processed["tiling"].items():
        h5 = processed["patches"] / f"{sid}.h5"
        coords, dtype, attrs, file_attrs = _h5_attrs(h5)
        polygons, meta = read_tissue(processed["tissue"] / f"{sid}.geojson")
        assert dtype == np.int64 and coords.ndim == 2 and coords.shape[1] == 2
        assert len(coords) == summary["n_patches"]
        assert attrs["patch_size"] == params.patch_size and attrs["patch_level"] == 0
        assert list(attrs["downsample"]) == [1.0, 1.0]
        assert attrs["patch_size_level0"] == params.patch_size  # 0.5 µm/px slide, 0.5 µm/px patches
        assert attrs["target_magnification"] == pytest.approx(20.0)
        assert attrs["level0_magnification"] == pytest.approx(10.0 / COHORT_MPP)
        assert list(attrs["level_dim"]) == [1024, 768] or sid == blank_slide_id
        assert file_attrs["status"] == attrs["status"] == summary["status"]
        if sid == blank_slide_id:
            assert summary["status"] == "skipped" and len(coords) == 0
            continue
        assert summary["status"] == "ok" and len(coords) > 0
        size0 = attrs["patch_size_level0"]
        assert (coords >= 0).all() and (coords[:, 0] + size0 <= 1024).all() and (coords[:, 1] + size0 <= 768).all()
        assert (coords % size0 == 0).all()  # no overlap: the step is a patch
        # kept = grid patches with at least min_tissue of the tissue polygons (brute force at level 0)
        ds = meta["thumbnail_downsample"]
        mask = polygons_to_mask(polygons, (round(768 / ds), round(1024 / ds)), ds)
        iy = np.minimum((np.arange(768) / ds).astype(int), mask.shape[0] - 1)
        ix = np.minimum((np.arange(1024) / ds).astype(int), mask.shape[1] - 1)
        level0 = mask[np.ix_(iy, ix)]
        grid = grid_coords(1024, 768, size0, size0)
        fraction = np.array([level0[y:y + size0, x:x + size0].mean() for x, y in grid])
        kept = {tuple(c) for c in coords}
        clear = np.abs(fraction - params.min_tissue) > 0.05  # away from the threshold rounding cannot matter
        for c, f, sure in zip(map(tuple, grid), fraction, clear):
            if sure:
                assert (c in kept) == (f >= params.min_tissue), (sid, c, f)


@pytest.mark.parametrize("target_mpp,expected_size0", [(1.0, 512), (0.25, 128), (0.5, 256)])
def test_patch_size_at_level0_follows_the_resolution(processed, blank_slide_id, tmp_path, target_mpp, expected_size0):
    sid = next(s for s in processed["tiling"] if s != blank_slide_id)
    params = TilingParams(target_mpp=target_mpp, patch_size=256, min_tissue=0.0)
    summary = tile_slide(processed["tissue"] / f"{sid}.geojson", tmp_path / "p.h5", params)
    coords, attrs = read_coords(tmp_path / "p.h5")
    assert attrs["patch_size_level0"] == expected_size0 == round(256 * target_mpp / COHORT_MPP)
    assert list(attrs["downsample"]) == [expected_size0 / 256] * 2
    assert attrs["target_magnification"] == pytest.approx(10 / target_mpp)
    # min_tissue 0 keeps the whole grid
    assert len(coords) == summary["n_patches"] == (1024 // expected_size0) * (768 // expected_size0)
    assert (coords[:, 0] + expected_size0 <= 1024).all() and (coords[:, 1] + expected_size0 <= 768).all()


def test_overlap_shortens_the_step(processed, blank_slide_id, tmp_path):
    sid = next(s for s in processed["tiling"] if s != blank_slide_id)
    params = TilingParams(target_mpp=1.0, patch_size=128, overlap=64, min_tissue=0.0)
    tile_slide(processed["tissue"] / f"{sid}.geojson", tmp_path / "p.h5", params)
    coords, attrs = read_coords(tmp_path / "p.h5")
    assert attrs["patch_size_level0"] == 256 and attrs["overlap"] == 64
    step = 128  # (128 - 64) px at 1 µm/px = 128 level-0 px at 0.5 µm/px
    assert sorted(set(coords[:, 0])) == list(range(0, 1024 - 256 + 1, step))
    assert sorted(set(coords[:, 1])) == list(range(0, 768 - 256 + 1, step))


def test_no_patch_above_min_tissue_is_skipped(processed, blank_slide_id, tmp_path):
    sid = next(s for s in processed["tiling"] if s != blank_slide_id)
    summary = tile_slide(processed["tissue"] / f"{sid}.geojson", tmp_path / "p.h5", TilingParams(min_tissue=1.01))
    assert summary["status"] == "skipped" and summary["n_patches"] == 0 and "1.01" in summary["reason"]
    coords, attrs = read_coords(tmp_path / "p.h5")
    assert coords.shape == (0, 2) and attrs["status"] == "skipped"


def test_failed_segmentation_gives_an_empty_failed_h5(tmp_path):
    geojson = tmp_path / "bad.geojson"
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": [],
                                   "slide": {"slide_id": "bad", "status": "failed", "reason": "cannot open slide"}}))
    summary = tile_slide(geojson, tmp_path / "bad.h5")
    assert summary == {"slide_id": "bad", "status": "failed", "reason": "cannot open slide", "n_patches": 0}
    coords, attrs = read_coords(tmp_path / "bad.h5")
    assert coords.shape == (0, 2) and coords.dtype == np.int64
    assert attrs["status"] == "failed" and attrs["reason"] == "cannot open slide"
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []


def test_read_coords_of_a_clam_file(tmp_path):
    """CLAM stores patch_size at patch_level with that level's downsample, and no level-0 size."""
    path = tmp_path / "clam.h5"
    coords = np.array([[0, 0], [512, 0], [512, 1024]], np.int64)
    with h5py.File(path, "w") as f:
        d = f.create_dataset("coords", data=coords)
        d.attrs["patch_level"] = 1
        d.attrs["patch_size"] = 256
        d.attrs["downsample"] = np.array([4.0, 4.0])
    got, attrs = read_coords(path)
    np.testing.assert_array_equal(got, coords)
    assert got.dtype == np.int64
    assert attrs["patch_size_level0"] == 1024
    assert attrs["patch_level"] == 1


def test_read_coords_keeps_trident_level0_size(tmp_path):
    path = tmp_path / "trident.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("coords", data=np.array([[10, 20]], np.int32))
        d.attrs["patch_size"] = 224
        d.attrs["patch_size_level0"] = 448
        f.attrs["target_magnification"] = 20
    coords, attrs = read_coords(path)
    assert coords.dtype == np.int64 and coords.tolist() == [[10, 20]]
    assert attrs["patch_size_level0"] == 448 and attrs["target_magnification"] == 20


def test_segment_and_tile_is_the_two_stages_in_one(processed, tmp_path):
    """The workflow's one job per slide writes what segmenting, then tiling, wrote as separate steps:
    the same tissue polygons and the same patch coordinates."""
    sid, path = next((s, p) for s, p in processed["slide_paths"].items() if processed["tiling"][s]["n_patches"])
    out = SimpleNamespace(tissue=tmp_path / "t.geojson", tissue_png=tmp_path / "t.png", h5=tmp_path / "p.h5",
                          png=tmp_path / "p.png")
    summary = segment_and_tile(path, out)
    assert summary == processed["tiling"][sid]
    assert read_tissue(out.tissue)[0] == read_tissue(processed["tissue"] / f"{sid}.geojson")[0]
    np.testing.assert_array_equal(read_coords(out.h5)[0], read_coords(processed["patches"] / f"{sid}.h5")[0])
    assert out.png.stat().st_size > 0 and out.tissue_png.stat().st_size > 0
