"""Whole-slide reads in bounded memory: slides without a pyramid (a single level-0 page, as some
exports and OME-TIFFs without sub-resolutions are) segmented without ever holding level 0.

Peak memory is measured in a child process (its peak RSS, VmHWM, less its RSS once imports are
done), so that nothing else the test session allocated counts.  (Not ``ru_maxrss``: Linux carries
the parent's peak over into a child's.)  The slides here are 8192² px (JPEG) and
6144² px (deflate): a whole level-0 read would need ≥ 7 bytes per px (RGBA from OpenSlide plus
the RGB copy), 470 and 264 MB; the bounded reads need a few tens of MB.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import openslide
import pytest
import tifffile

from generators import synthetic
from preprocessing import thumbnails as thumbnails_module
from preprocessing.slides import SlideError, open_slide, read_region_rgb, slide_info
from preprocessing.thumbnails import read_thumbnail
from preprocessing.tissue_geojson import polygons_to_mask, read_tissue, segment_slide

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

ROOT = Path(__file__).resolve().parents[1]
BOUND_MB = 100  # allowed growth of a child's RSS over its RSS after imports

CHILD = """
import json, sys
from preprocessing.slides import open_slide
from preprocessing.thumbnails import read_thumbnail
from preprocessing.tissue_geojson import segment_slide

def status_mb(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1024

base = status_mb("VmRSS")
slide, out, mpp = sys.argv[1], sys.argv[2], float(sys.argv[3])
if out == "-":
    with open_slide(slide) as s:
        thumb, _ = read_thumbnail(s, mpp, 8.0)
    status = "ok"
else:
    status = segment_slide(slide, out + ".geojson", out + ".png", mpp_fallback=mpp)["status"]
print(json.dumps({"base_mb": base, "peak_mb": status_mb("VmHWM"), "status": status}))
"""


def _in_child(slide: Path, out: str, mpp: float) -> dict:
    """Segment ``slide`` (or, with ``out`` '-', read its thumbnail) in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", CHILD, str(slide), out, str(mpp)], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def flat_jpeg(tmp_path_factory) -> synthetic.SyntheticSlide:
    """8192 × 8192 px at 0.5 µm/px, one tiled JPEG page: tissue with holes, pen marks."""
    path = tmp_path_factory.mktemp("flat") / "flat.tif"
    return synthetic.generate(path, "pen_marks", (8192, 8192), 0.5, seed=3, workers=1, pyramid=False)


def test_the_flat_tiff_has_level_0_alone(flat_jpeg):
    with open_slide(flat_jpeg.path) as slide:
        info = slide_info(slide, flat_jpeg.path)
        assert slide.level_count == 1 and slide.dimensions == (8192, 8192)
        assert info.vendor == "generic-tiff" and info.backend == "openslide"
        assert info.mpp == pytest.approx(0.5)  # from the TIFF resolution tags


def test_a_flat_tiff_is_segmented_in_bounded_memory(flat_jpeg, tmp_path):
    result = _in_child(flat_jpeg.path, str(tmp_path / "s"), 0.5)
    assert result["status"] == "ok"
    assert result["peak_mb"] - result["base_mb"] < BOUND_MB, result
    polygons, meta = read_tissue(tmp_path / "s.geojson")
    mask = polygons_to_mask(polygons, flat_jpeg.truth.shape, flat_jpeg.truth_downsample)
    truth = flat_jpeg.truth
    assert (mask & truth).sum() / (mask | truth).sum() >= 0.95
    assert meta["thumbnail_downsample"] == pytest.approx(16)


def test_reduced_jpeg_decoding_gives_the_area_average_of_level_0(flat_jpeg):
    """libjpeg's 1/8 decode, then 2× area resize: the same picture as resizing a full decode."""
    full = tifffile.imread(flat_jpeg.path)
    with open_slide(flat_jpeg.path) as slide:
        thumb, ds = read_thumbnail(slide, 0.5, 8.0)
    reference = cv2.resize(full, thumb.shape[1::-1], interpolation=cv2.INTER_AREA)
    diff = thumb.astype(np.int16) - reference
    assert ds == 16 and thumb.shape == (512, 512, 3)
    assert np.abs(diff).mean() < 1.5 and np.abs(diff.reshape(-1, 3).mean(0)).max() < 0.5


@pytest.fixture(scope="module")
def flat_deflate(tmp_path_factory, flat_jpeg) -> tuple[Path, np.ndarray]:
    """6144 × 6144 px deflate-compressed tiles, which only OpenSlide decodes (no reduced JPEG
    path): an image enlarged from the JPEG slide's thumbnail, and that level 0 in memory."""
    with open_slide(flat_jpeg.path) as slide:
        small, _ = read_thumbnail(slide, 0.5, 0.5 * 8192 / 768)
    level0 = cv2.resize(small, (6144, 6144), interpolation=cv2.INTER_LINEAR)
    path = tmp_path_factory.mktemp("deflate") / "flat_deflate.tif"
    tifffile.imwrite(path, level0, tile=(256, 256), photometric="rgb", compression="zlib",
                     compressionargs={"level": 1}, resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    return path, level0


def test_a_non_jpeg_flat_tiff_is_read_in_strips_in_bounded_memory(flat_deflate):
    path, level0 = flat_deflate
    assert level0.shape[0] * level0.shape[1] > thumbnails_module.WHOLE_READ_PX  # not read in one piece
    result = _in_child(path, "-", 0.5)
    assert result["peak_mb"] - result["base_mb"] < BOUND_MB, result


def test_strips_give_the_whole_read_resized(flat_deflate, tmp_path, monkeypatch):
    """Strips of 64 output rows (of 8 here, by a smaller STRIP_PX): the same image as one whole
    read, exactly where the scale is a whole number, within rounding of strip edges otherwise."""
    level0 = np.ascontiguousarray(flat_deflate[1][:1536, :2048])
    path = tmp_path / "small.tif"
    tifffile.imwrite(path, level0, tile=(256, 256), photometric="rgb", compression="zlib")
    monkeypatch.setattr(thumbnails_module, "WHOLE_READ_PX", 0)
    monkeypatch.setattr(thumbnails_module, "STRIP_PX", 8 * 16 * 2048)
    with open_slide(path) as slide:
        thumb, ds = read_thumbnail(slide, 0.5, 8.0)  # 16 × smaller: 12 strips of whole output rows
        odd, _ = read_thumbnail(slide, 0.5, 7.3)  # 14.6 ×: strip edges rounded to source rows
    assert ds == 16
    np.testing.assert_array_equal(thumb, cv2.resize(level0, (128, 96), interpolation=cv2.INTER_AREA))
    reference = cv2.resize(level0, odd.shape[1::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(odd.astype(np.int16) - reference).mean() < 1


# ---------------------------------------------------------------------------------------------
# reduced JPEG decoding is checked against OpenSlide, and falls back to it


def test_aperio_rgb_jpeg_tiles_keep_their_colours(real_slide, monkeypatch):
    """The real Aperio file stores RGB (not YCbCr) JPEG tiles with shared tables; decoded at 1/8
    they must have OpenSlide's colours.  Without the marker that says so, libjpeg would convert
    them from YCbCr: the check against OpenSlide catches that and the read goes through OpenSlide."""
    with open_slide(real_slide) as slide:
        W, H = slide.dimensions
        full = read_region_rgb(slide, 0, 0, 0, (W, H))
        rows = thumbnails_module._jpeg_rows(slide, 0, 8)
        assert rows is not None
        rows.close()
        thumb, _ = read_thumbnail(slide, 0.499, 8.0)
        monkeypatch.setattr(thumbnails_module, "ADOBE_RGB", b"")
        assert thumbnails_module._jpeg_rows(slide, 0, 8) is None
        fallback, _ = read_thumbnail(slide, 0.499, 8.0)
    reference = cv2.resize(full, thumb.shape[1::-1], interpolation=cv2.INTER_AREA)
    for image in (thumb, fallback):
        diff = image.astype(np.int16) - reference
        assert np.abs(diff.reshape(-1, 3).mean(0)).max() < 1 and np.abs(diff).mean() < 4
    np.testing.assert_array_equal(fallback, reference)


def test_corrupt_tile_in_a_flat_tiff_fails_the_slide_naming_it(tmp_path):
    """A tile libjpeg cannot decode is read through OpenSlide, whose error names file and region."""
    path = tmp_path / "corrupt_flat.tif"
    rgb = np.full((2048, 2048, 3), 240, np.uint8)
    cv2.circle(rgb, (1024, 1024), 700, (220, 140, 190), -1)
    tifffile.imwrite(path, rgb, tile=(256, 256), photometric="rgb", compression="jpeg",
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    assert segment_slide(path, tmp_path / "a.geojson", tmp_path / "a.png")["status"] == "ok"
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].dataoffsets[9]  # row 1, column 1
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\0" * 64)
    with openslide.OpenSlide(str(path)) as plain, pytest.raises(openslide.OpenSlideError):
        plain.read_region((256, 256), 0, (256, 256))
    meta = segment_slide(path, tmp_path / "b.geojson", tmp_path / "b.png")
    assert meta["status"] == "failed" and str(path) in meta["reason"] and "x=256, y=256" in meta["reason"]
    with open_slide(path) as slide, pytest.raises(SlideError):
        read_thumbnail(slide, 0.5, 8.0)
