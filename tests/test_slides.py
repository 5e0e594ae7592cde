"""preprocessing.slides: resolution in µm/px, pyramid level choice, thumbnails, clear errors."""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import openslide
import pytest
import tifffile

from preprocessing.slides import SlideError, best_level, open_slide, read_region_rgb, slide_info, slide_mpp
from preprocessing.thumbnails import read_thumbnail

from conftest import COHORT_MPP


@pytest.fixture(scope="module")
def svs(demo_slides, blank_slide_id) -> str:
    """A generated Aperio slide with tissue."""
    return demo_slides.loc[demo_slides["slide_id"] != blank_slide_id, "path"].iloc[0]


@pytest.fixture
def plain_tiff(tmp_path):
    """A tiled TIFF without any resolution: OpenSlide reads it as generic-tiff with no µm/px."""
    path = tmp_path / "no_resolution.tif"
    rng = np.random.default_rng(0)
    tifffile.imwrite(path, rng.integers(0, 255, (512, 640, 3), dtype=np.uint8), tile=(256, 256), photometric="rgb")
    return path


def test_mpp_from_aperio_metadata(svs):
    with open_slide(svs) as slide:
        assert slide_mpp(slide, svs) == pytest.approx(COHORT_MPP)
        # metadata wins over the fallback
        assert slide_mpp(slide, svs, fallback=0.25) == pytest.approx(COHORT_MPP)
        info = slide_info(slide, svs)
    assert (info.width, info.height) == (1024, 768)
    assert info.vendor == "aperio"
    assert info.level_downsamples[0] == 1.0


def test_mpp_keys_and_invalid_values():
    def stub(props):
        return SimpleNamespace(properties=props)

    assert slide_mpp(stub({openslide.PROPERTY_NAME_MPP_X: "0.2527"}), "a") == pytest.approx(0.2527)
    assert slide_mpp(stub({"aperio.MPP": "0.499"}), "a") == pytest.approx(0.499)
    # unparsable or non-positive values are not a resolution: the fallback applies
    assert slide_mpp(stub({openslide.PROPERTY_NAME_MPP_X: "n/a", "aperio.MPP": "0"}), "a", fallback=0.3) == 0.3
    with pytest.raises(SlideError, match="slide-x.svs"):
        slide_mpp(stub({openslide.PROPERTY_NAME_MPP_X: "-1"}), "slide-x.svs", fallback=0.0)


def test_missing_mpp_uses_fallback(plain_tiff):
    with open_slide(plain_tiff) as slide:
        assert slide_mpp(slide, plain_tiff, fallback=0.25) == 0.25
        assert slide_info(slide, plain_tiff, 0.25).mpp == 0.25


def test_missing_mpp_without_fallback_names_the_file(plain_tiff):
    with open_slide(plain_tiff) as slide:
        with pytest.raises(SlideError) as err:
            slide_mpp(slide, plain_tiff)
    assert str(plain_tiff) in str(err.value)
    assert "mpp" in str(err.value)


def test_tiff_resolution_tag_gives_mpp(tmp_path):
    path = tmp_path / "with_resolution.tif"
    mpp = 0.25
    tifffile.imwrite(path, np.zeros((256, 256, 3), np.uint8), tile=(256, 256), photometric="rgb",
                     resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    with open_slide(path) as slide:
        assert slide_mpp(slide, path) == pytest.approx(mpp)


@pytest.mark.parametrize("content", [b"this is not a slide\n", np.random.default_rng(1).bytes(4096)])
def test_non_slide_file_raises_slide_error_naming_it(tmp_path, content):
    path = tmp_path / "TCGA-XX-0000-01Z-00-DX1.svs"
    path.write_bytes(content)
    with pytest.raises(SlideError) as err:
        open_slide(path)
    assert str(path) in str(err.value)


def test_missing_file_raises_slide_error(tmp_path):
    path = tmp_path / "absent.svs"
    with pytest.raises(SlideError, match="absent.svs"):
        open_slide(path)


def test_best_level(svs):
    with open_slide(svs) as slide:
        assert slide.level_downsamples == pytest.approx((1.0, 4.0, 16.0))
        cases = {0.5: 0, 1.0: 0, 3.5: 0, 3.98: 1, 4.0: 1, 15.0: 1, 16.0: 2, 100.0: 2}
        for downsample, expected in cases.items():
            assert best_level(slide, downsample) == expected, downsample
        # the rule in general: the coarsest level no coarser than asked (1 % tolerance)
        for downsample in np.linspace(0.5, 40, 80):
            level = best_level(slide, downsample)
            finer = [d for d in slide.level_downsamples if d <= downsample * 1.01]
            assert slide.level_downsamples[level] == (max(finer) if finer else 1.0)


@pytest.mark.parametrize("target_mpp", [8.0, 2.0, 1.3, 0.5])
def test_thumbnail_size_matches_physical_resolution(svs, target_mpp):
    with open_slide(svs) as slide:
        W, H = slide.dimensions
        thumb, downsample = read_thumbnail(slide, COHORT_MPP, target_mpp)
    expected = (round(H * COHORT_MPP / target_mpp), round(W * COHORT_MPP / target_mpp))
    assert thumb.shape == (*expected, 3)
    assert thumb.dtype == np.uint8
    assert downsample == pytest.approx(W / expected[1])
    assert downsample == pytest.approx(target_mpp / COHORT_MPP, rel=0.02)


def test_thumbnail_is_the_slide_scaled_down(svs):
    with open_slide(svs) as slide:
        W, H = slide.dimensions
        full = np.asarray(slide.read_region((0, 0), 0, (W, H)))[..., :3]
        thumb, _ = read_thumbnail(slide, COHORT_MPP, 8.0)
    reference = cv2.resize(full, (thumb.shape[1], thumb.shape[0]), interpolation=cv2.INTER_AREA)
    diff = np.abs(thumb.astype(int) - reference.astype(int))
    assert diff.mean() < 4  # same picture (not shifted or flipped); only JPEG levels differ
    assert thumb.std() > 5  # and not a blank image


def test_region_outside_the_slide_is_white(svs):
    with open_slide(svs) as slide:
        W, _ = slide.dimensions
        rgb = read_region_rgb(slide, W - 10, 0, 0, (20, 4))
        inside = np.asarray(slide.read_region((W - 10, 0), 0, (10, 4)))[..., :3]
    assert rgb.shape == (4, 20, 3)
    assert (rgb[:, 10:] == 255).all()
    np.testing.assert_array_equal(rgb[:, :10], inside)


# ---------------------------------------------------------------------------------------------
# resolution from TIFF tags, and the software defaults that are no resolution


def _tiff_props(res, unit):
    return SimpleNamespace(properties={"tiff.XResolution": res, "tiff.ResolutionUnit": unit})


def test_tiff_resolution_properties_in_cm_and_inch():
    assert slide_mpp(_tiff_props("40000", "centimeter"), "a") == pytest.approx(0.25)
    assert slide_mpp(_tiff_props("101600", "inch"), "a") == pytest.approx(0.25)
    # unit 'none' says nothing about physical size
    assert slide_mpp(_tiff_props("40000", "none"), "a", fallback=0.3) == 0.3


@pytest.mark.parametrize("dpi", [72, 96, 300])
def test_screen_dpi_default_is_not_a_resolution(tmp_path, dpi):
    path = tmp_path / f"dpi{dpi}.tif"
    tifffile.imwrite(path, np.zeros((256, 256, 3), np.uint8), tile=(256, 256), photometric="rgb",
                     resolution=(dpi, dpi), resolutionunit="INCH")
    with open_slide(path) as slide:
        # OpenSlide itself turns the tag into openslide.mpp-x (352.8 µm/px at 72 dpi)
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(25_400 / dpi)
        assert slide_mpp(slide, path, fallback=0.5) == 0.5
        with pytest.raises(SlideError) as err:
            slide_mpp(slide, path)
    assert str(path) in str(err.value) and "implausible" in str(err.value) and "mpp_fallback" in str(err.value)


# ---------------------------------------------------------------------------------------------
# tiatoolbox reads what OpenSlide cannot


APERIO_DESC = "Aperio Image Library v12.0.15 \r\n800x600 [0,0 800x600] JPEG/RGB Q=90|AppMag = 20|Filename = x"


def _stripped_aperio(path, rgb, mpp: float | None):
    """A two-level Aperio TIFF written in strips, not tiles: OpenSlide refuses it, tiatoolbox reads it."""
    desc = APERIO_DESC + (f"|MPP = {mpp}" if mpp else "")
    with tifffile.TiffWriter(path) as tif:
        tif.write(rgb, photometric="rgb", description=desc, metadata=None, software=False, rowsperstrip=64)
        tif.write(np.ascontiguousarray(rgb[::4, ::4]), photometric="rgb", description=APERIO_DESC, metadata=None,
                  software=False)


@pytest.fixture(scope="module")
def stripped_rgb():
    return np.random.default_rng(5).integers(0, 255, (600, 800, 3), dtype=np.uint8)


def test_tiatoolbox_opens_what_openslide_cannot(tmp_path, stripped_rgb):
    path = tmp_path / "stripped.tif"
    _stripped_aperio(path, stripped_rgb, 0.2527)
    with pytest.raises(openslide.OpenSlideError):
        openslide.OpenSlide(str(path))
    with open_slide(path) as slide:
        assert slide.backend == "tiatoolbox"
        assert slide.dimensions == (800, 600)
        assert slide.level_downsamples == pytest.approx((1.0, 4.0))
        info = slide_info(slide, path)
        assert (info.mpp, info.backend, info.vendor) == (pytest.approx(0.2527), "tiatoolbox", "Aperio")
        np.testing.assert_array_equal(read_region_rgb(slide, 100, 50, 0, (64, 32)), stripped_rgb[50:82, 100:164])
        edge = read_region_rgb(slide, 790, 0, 0, (20, 4))  # past the right edge: white, as with OpenSlide
        np.testing.assert_array_equal(edge[:, :10], stripped_rgb[:4, 790:])
        assert (edge[:, 10:] == 255).all()
        assert best_level(slide, 4.0) == 1
        thumb, downsample = read_thumbnail(slide, 0.2527, 0.2527 * 8)
    assert thumb.shape == (75, 100, 3) and downsample == pytest.approx(8.0)


def test_fallback_does_not_guess_mpp_from_objective_power(tmp_path, stripped_rgb):
    # tiatoolbox would take 10 / AppMag = 0.5 µm/px; a guess is not the slide's resolution
    path = tmp_path / "stripped_no_mpp.tif"
    _stripped_aperio(path, stripped_rgb, None)
    with open_slide(path) as slide:
        assert slide.backend == "tiatoolbox"
        assert slide.properties.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER) == "20.0"
        with pytest.raises(SlideError, match="stripped_no_mpp.tif.*mpp_fallback"):
            slide_mpp(slide, path)
        assert slide_mpp(slide, path, fallback=0.25) == 0.25


def test_fallback_reads_tiff_resolution_tags(tmp_path, stripped_rgb):
    path = tmp_path / "stripped_plain.tif"
    tifffile.imwrite(path, stripped_rgb, photometric="rgb", rowsperstrip=64, resolution=(1e4 / 0.5, 1e4 / 0.5),
                     resolutionunit="CENTIMETER")
    with open_slide(path) as slide:
        assert slide.backend == "tiatoolbox"
        assert slide_mpp(slide, path) == pytest.approx(0.5)


def test_unopenable_file_names_both_readers(tmp_path):
    path = tmp_path / "garbage.tif"
    path.write_bytes(b"II*\x00" + bytes(100))  # a TIFF header leading nowhere
    with pytest.raises(SlideError) as err:
        open_slide(path)
    message = str(err.value)
    assert message.startswith(str(path)) and "OpenSlide:" in message and "tiatoolbox:" in message


# ---------------------------------------------------------------------------------------------
# failed reads: one retry on a fresh handle


def _damage_tile(path, tile: int) -> tuple[int, bytes]:
    """Overwrite the start of one level-0 JPEG tile; returns its offset and original bytes."""
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].dataoffsets[tile]
    with open(path, "r+b") as f:
        f.seek(offset)
        original = f.read(64)
        f.seek(offset)
        f.write(b"\0" * 64)
    return offset, original


def test_transient_read_error_is_retried_on_a_fresh_handle(svs, tmp_path):
    path = tmp_path / "flaky.svs"
    path.write_bytes(open(svs, "rb").read())
    offset, original = _damage_tile(path, 0)
    with openslide.OpenSlide(str(svs)) as ref:
        expected = np.asarray(ref.read_region((0, 0), 0, (16, 16)))[..., :3]
    with open_slide(path) as slide, openslide.OpenSlide(str(path)) as plain:
        with pytest.raises(SlideError):
            read_region_rgb(slide, 0, 0, 0, (16, 16))
        with pytest.raises(openslide.OpenSlideError):
            plain.read_region((0, 0), 0, (16, 16))
        with open(path, "r+b") as f:  # the storage recovers (a network file system hiccup, say)
            f.seek(offset)
            f.write(original)
        # OpenSlide 4 remembers a handle's error: a plain handle keeps failing ...
        with pytest.raises(openslide.OpenSlideError):
            plain.read_region((0, 0), 0, (16, 16))
        # ... while our slide retries on a fresh handle and reads the real pixels, and keeps that handle
        np.testing.assert_array_equal(read_region_rgb(slide, 0, 0, 0, (16, 16)), expected)
        np.testing.assert_array_equal(read_region_rgb(slide, 0, 0, 0, (16, 16)), expected)


def test_persistent_read_error_names_file_and_region(svs, tmp_path):
    path = tmp_path / "corrupt.svs"
    path.write_bytes(open(svs, "rb").read())
    _damage_tile(path, 1)  # second tile of the first row: x 256-511, y 0-255
    with open_slide(path) as slide:
        read_region_rgb(slide, 0, 0, 0, (256, 256))  # other tiles read fine
        with pytest.raises(SlideError) as err:
            read_region_rgb(slide, 300, 10, 0, (64, 64))
    message = str(err.value)
    assert message.startswith(str(path)) and "x=300, y=10 (level-0 px)" in message and "Not a JPEG file" in message


def test_importing_tiatoolbox_leaves_logging_alone():
    # tiatoolbox installs root handlers at import when there are none; ours undoes that
    import subprocess
    import sys

    code = ("import logging, warnings; from preprocessing.slides import _tiatoolbox_reader; "
            "show = warnings.showwarning; _tiatoolbox_reader(); root = logging.getLogger(); "
            "assert root.handlers == [] and root.level == logging.WARNING and warnings.showwarning is show")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
