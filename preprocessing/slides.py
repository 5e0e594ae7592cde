"""Whole-slide reading in physical units (µm/px), not pyramid level numbers."""
from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np
import openslide


class SlideError(RuntimeError):
    """A slide that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class SlideInfo:
    path: str
    width: int  # level-0 px
    height: int  # level-0 px
    mpp: float  # µm/px at level 0
    vendor: str
    level_downsamples: tuple[float, ...]


def open_slide(path: str | os.PathLike) -> openslide.OpenSlide:
    """Open a slide with OpenSlide, turning its errors into a :class:`SlideError` naming the file."""
    try:
        return openslide.OpenSlide(str(path))
    except (openslide.OpenSlideError, OSError) as err:
        raise SlideError(f"{path}: cannot open slide ({err})") from err


def slide_mpp(slide: openslide.OpenSlide, path: str | os.PathLike, fallback: float | None = None) -> float:
    """Level-0 resolution in µm/px from the slide's metadata, else ``fallback``, else a clear error."""
    props = slide.properties
    for key in (openslide.PROPERTY_NAME_MPP_X, "aperio.MPP"):
        value = props.get(key)
        if value:
            try:
                mpp = float(value)
            except ValueError:
                continue
            if mpp > 0:
                return mpp
    if fallback is not None and fallback > 0:
        return float(fallback)
    raise SlideError(f"{path}: slide has no resolution (µm/px) in its metadata and the config gives no mpp fallback")


def slide_info(slide: openslide.OpenSlide, path: str | os.PathLike, mpp_fallback: float | None = None) -> SlideInfo:
    width, height = slide.dimensions
    return SlideInfo(
        path=str(path), width=int(width), height=int(height),
        mpp=slide_mpp(slide, path, mpp_fallback),
        vendor=slide.properties.get(openslide.PROPERTY_NAME_VENDOR, "unknown"),
        level_downsamples=tuple(float(d) for d in slide.level_downsamples),
    )


def best_level(slide: openslide.OpenSlide, downsample: float) -> int:
    """The coarsest pyramid level that is still at least as fine as ``downsample`` (tolerance 1 %)."""
    candidates = [i for i, d in enumerate(slide.level_downsamples) if d <= downsample * 1.01]
    return max(candidates, key=lambda i: slide.level_downsamples[i]) if candidates else 0


def read_region_rgb(slide: openslide.OpenSlide, x: int, y: int, level: int, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 array of a region whose top-left is (x, y) in level-0 px; transparent areas become white."""
    rgba = np.asarray(slide.read_region((int(x), int(y)), level, size))
    rgb = rgba[..., :3].copy()
    rgb[rgba[..., 3] == 0] = 255
    return rgb


def read_thumbnail(slide: openslide.OpenSlide, level0_mpp: float, target_mpp: float) -> tuple[np.ndarray, float]:
    """The whole slide at ``target_mpp`` µm/px, read from the best level and resized.

    Returns the RGB image and its downsample factor relative to level 0 (level-0 px per thumbnail px).
    """
    downsample = target_mpp / level0_mpp
    level = best_level(slide, downsample)
    w, h = slide.level_dimensions[level]
    image = read_region_rgb(slide, 0, 0, level, (w, h))
    W, H = slide.dimensions
    out_size = (max(1, round(W / downsample)), max(1, round(H / downsample)))
    if (w, h) != out_size:
        image = cv2.resize(image, out_size, interpolation=cv2.INTER_AREA)
    return image, W / out_size[0]
