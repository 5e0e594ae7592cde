"""preprocessing.slides: resolution in µm/px, pyramid level choice, thumbnails, clear errors."""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import openslide
import pytest
import tifffile

from preprocessing.slides import (SlideError, best_level, open_slide, read_region_rgb, read_thumbnail, slide_info,
                                  slide_mpp)

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
