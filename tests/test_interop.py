"""CLAM/TRIDENT interoperability: our coordinate files read as their loaders read them, and
their files feed our pipeline instead of our tiling."""
from __future__ import annotations

import shutil
from types import SimpleNamespace

import cv2
import h5py
import numpy as np
import openslide

from preprocessing.tiling import TilingParams, import_coords, read_coords, segment_and_tile, tile_slide


def clam_loader(h5_path, slide_path):
    """What CLAM's Whole_Slide_Bag_FP does: attrs of `coords`, then read_region at patch_level."""
    with h5py.File(h5_path, "r") as f:
        coords = f["coords"][:]
        level, size = f["coords"].attrs["patch_level"], f["coords"].attrs["patch_size"]
    wsi = openslide.OpenSlide(str(slide_path))
    return coords, [np.asarray(wsi.read_region(tuple(int(v) for v in c), int(level), (int(size),) * 2))[..., :3]
                    for c in coords[:3]]


def trident_loader(h5_path):
    """What TRIDENT's patchers take from a coords file: level-0 size from the magnifications."""
    with h5py.File(h5_path, "r") as f:
        attrs = dict(f["coords"].attrs)
        coords = f["coords"][:]
    size0 = round(attrs["patch_size"] * attrs["level0_magnification"] / attrs["target_magnification"])
    return coords, int(size0), int(attrs["patch_size_level0"])


def test_our_coords_read_like_clam_and_trident(processed, demo_slides, blank_slide_id):
    sid = next(s for s in processed["tiling"] if s != blank_slide_id)
    h5 = processed["patches"] / f"{sid}.h5"
    slide_path = demo_slides.set_index("slide_id").loc[sid, "path"]
    with h5py.File(h5, "r") as f:
        ds = f["coords"]
        assert ds.dtype == np.int64 and ds.ndim == 2 and ds.shape[1] == 2
        for key, kind in (("patch_size", np.integer), ("patch_level", np.integer), ("patch_size_level0", np.integer),
                          ("target_magnification", np.floating), ("level0_magnification", np.floating)):
            assert isinstance(ds.attrs[key], kind), key
        assert len(ds.attrs["downsample"]) == 2 and len(ds.attrs["level_dim"]) == 2
    coords, patches = clam_loader(h5, slide_path)
    assert len(coords) > 0 and all(p.shape == (256, 256, 3) for p in patches)
    # the demo slides are at the target resolution, so CLAM's read is the patch our features read
    ref = openslide.OpenSlide(str(slide_path))
    x, y = coords[0]
    np.testing.assert_array_equal(patches[0], np.asarray(ref.read_region((int(x), int(y)), 0, (256, 256)))[..., :3])
    t_coords, size0_from_mag, size0 = trident_loader(h5)
    np.testing.assert_array_equal(t_coords, coords)
    assert size0_from_mag == size0 == 256


def test_trident_sizes_agree_when_slide_and_target_resolutions_differ(processed, blank_slide_id, tmp_path):
    sid = next(s for s in processed["tiling"] if s != blank_slide_id)
    h5 = tmp_path / "p.h5"
    tile_slide(processed["tissue"] / f"{sid}.geojson", h5, TilingParams(target_mpp=1.0, patch_size=128, min_tissue=0.3))
    _, size0_from_mag, size0 = trident_loader(h5)
    assert size0 == 256 and size0_from_mag == size0  # 128 px at 1.0 µm/px = 256 px at 0.5 µm/px


def test_a_clam_file_replaces_our_tiling(processed, blank_slide_id, tmp_path):
    sid = next(s for s in processed["tiling"] if s != blank_slide_id)
    clam = tmp_path / f"{sid}.h5"
    coords = np.array([[0, 0], [256, 256], [512, 0]], np.int64)
    with h5py.File(clam, "w") as f:  # as CLAM's create_patches_fp writes at level 0
        d = f.create_dataset("coords", data=coords)
        d.attrs.update({"patch_level": 0, "patch_size": 256, "downsample": [1.0, 1.0], "level_dim": [1024, 768],
                        "downsampled_level_dim": [1024, 768], "name": sid})
    out = tmp_path / "ours.h5"
    summary = import_coords(clam, processed["tissue"] / f"{sid}.geojson", out,
                            tissue_png=processed["tissue"] / f"{sid}.png", qc_png=tmp_path / "qc.png")
    assert summary["status"] == "ok" and summary["n_patches"] == 3
    got, attrs = read_coords(out)
    np.testing.assert_array_equal(got, coords)
    assert attrs["patch_size_level0"] == 256 and attrs["target_mpp"] == 0.5 and attrs["source"] == str(clam)
    assert cv2.imread(str(tmp_path / "qc.png")) is not None

    # the workflow's one job per slide (tiling.coords_from): segment, then take the same file's coordinates
    job = SimpleNamespace(tissue=tmp_path / "t.geojson", tissue_png=tmp_path / "t.png", h5=tmp_path / "job.h5",
                          png=tmp_path / "job.png")
    assert segment_and_tile(processed["slide_paths"][sid], job, coords=clam) == summary
    np.testing.assert_array_equal(read_coords(job.h5)[0], coords)
    assert read_coords(job.h5)[1]["source"] == str(clam)


def test_a_missing_external_file_fails_the_slide_with_its_name(processed, blank_slide_id, tmp_path):
    sid = next(s for s in processed["tiling"] if s != blank_slide_id)
    summary = import_coords(tmp_path / "absent.h5", processed["tissue"] / f"{sid}.geojson", tmp_path / "o.h5")
    assert summary["status"] == "failed" and "absent.h5" in summary["reason"]
    coords, attrs = read_coords(tmp_path / "o.h5")
    assert len(coords) == 0 and attrs["status"] == "failed"


def test_qc_png_draws_the_kept_patches(processed, blank_slide_id, tmp_path):
    sid = next(s for s in processed["tiling"] if s != blank_slide_id)
    shutil.copy(processed["tissue"] / f"{sid}.png", tmp_path / "t.png")
    summary = tile_slide(processed["tissue"] / f"{sid}.geojson", tmp_path / "p.h5", TilingParams(),
                         tissue_png=tmp_path / "t.png", qc_png=tmp_path / "grid.png")
    before, after = cv2.imread(str(tmp_path / "t.png")), cv2.imread(str(tmp_path / "grid.png"))
    assert before.shape == after.shape and summary["n_patches"] > 0
    blue = (after[..., 0] == 200) & (after[..., 1] == 80) & (after[..., 2] == 0)
    assert blue.sum() > summary["n_patches"] * 4  # every patch outline is drawn
