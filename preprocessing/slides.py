"""Whole-slide reading in physical units (µm/px), not pyramid level numbers.

OpenSlide reads a slide when it can; tiatoolbox's readers (TIFFs in strips, JPEG 2000, DICOM, NGFF,
...) take over for files OpenSlide cannot open.  Either way :func:`open_slide` returns a
:class:`Slide` with OpenSlide's interface, so callers do not care which library reads the file.

Whole slides at a given µm/px (thumbnails) are read by :mod:`preprocessing.thumbnails`.
"""
from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openslide
import tifffile
from PIL import Image

log = logging.getLogger(__name__)

MAX_MPP = 50.0  # µm/px; a coarser level 0 is no microscope scan but a 72/96/300-dpi software default
TIFF_UNIT_UM = {"centimeter": 1e4, "inch": 25_400.0}  # µm per TIFF ResolutionUnit
TIFF_UNIT_NAMES = {1: "none", 2: "inch", 3: "centimeter"}  # TIFF tag codes, as OpenSlide names them


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
    backend: str = "openslide"  # the library that reads the file: openslide or tiatoolbox


# ---------------------------------------------------------------------------------------------
# opening


def _tiatoolbox_reader():
    """tiatoolbox's ``WSIReader``, imported only when needed: the import takes seconds and, when the
    root logger has no handlers yet, installs its own there and routes warnings to logging.
    We undo both so that importing it does not change the pipeline's logging."""
    root = logging.getLogger()
    handlers, level, showwarning = list(root.handlers), root.level, warnings.showwarning
    try:
        from tiatoolbox.wsicore.wsireader import WSIReader
    finally:
        root.handlers[:], warnings.showwarning = handlers, showwarning
        root.setLevel(level)
    return WSIReader


class TiaSlide:
    """OpenSlide-like view of a tiatoolbox reader: locations in level-0 px, RGBA PIL regions, and
    ``properties`` under OpenSlide's names (``openslide.mpp-x``, ``tiff.XResolution``, ...)."""

    def __init__(self, path: str | os.PathLike):
        reader = _tiatoolbox_reader().open(str(path))
        # tiatoolbox fills a missing µm/px with 10 / objective power, a guess that is off by 10-15 %
        # on some scanners; we want the slide's own value or the configured override instead.
        reader._estimate_mpp_objective_power = lambda objective_power, mpp: (objective_power, mpp)
        reader._m_info = None  # some readers computed (and guessed) it while opening
        info = reader.info
        self._reader = reader
        self.dimensions = tuple(int(v) for v in info.slide_dimensions)
        self.level_dimensions = tuple((int(w), int(h)) for w, h in info.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in info.level_downsamples)
        self.level_count = len(self.level_dimensions)
        self.properties = {openslide.PROPERTY_NAME_VENDOR: str(info.vendor) if info.vendor else "unknown"}
        if info.mpp is not None:
            self.properties[openslide.PROPERTY_NAME_MPP_X] = str(float(info.mpp[0]))
            self.properties[openslide.PROPERTY_NAME_MPP_Y] = str(float(info.mpp[1]))
        if info.objective_power:
            self.properties[openslide.PROPERTY_NAME_OBJECTIVE_POWER] = str(info.objective_power)
        self.properties.update(_tiff_resolution(path))

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Image.Image:
        """Like OpenSlide's: ``location`` in level-0 px, ``size`` in px of ``level``; outside is white."""
        image = np.asarray(self._reader.read_rect(location, size, resolution=level, units="level",
                                                  pad_constant_values=255))
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.shape[2] == 3:
            image = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
        return Image.fromarray(np.ascontiguousarray(image[..., :4], dtype=np.uint8), "RGBA")

    def close(self) -> None:
        for name in ("tiff", "openslide_wsi"):  # the open files of tiatoolbox's TIFF and OpenSlide readers
            handle = getattr(self._reader, name, None)
            if handle is not None:
                handle.close()


def _tiff_resolution(path: str | os.PathLike) -> dict[str, str]:
    """TIFF resolution tags of the first page, under OpenSlide's property names; {} for non-TIFFs."""
    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages[0].tags
            x, unit = tags.get("XResolution"), tags.get("ResolutionUnit")
            if x is None or unit is None:
                return {}
            return {"tiff.XResolution": str(x.value[0] / x.value[1]),
                    "tiff.ResolutionUnit": TIFF_UNIT_NAMES.get(int(unit.value), "none")}
    except Exception:  # noqa: BLE001 - not a TIFF (JPEG 2000, DICOM, ...): no TIFF tags to read
        return {}


def _open_handle(path: str, backend: str):
    return openslide.OpenSlide(path) if backend == "openslide" else TiaSlide(path)


class Slide:
    """One open slide file with OpenSlide's interface, whichever library reads it.

    A failed read is retried once on a fresh handle, because OpenSlide 4 remembers a handle's first
    error and fails every later read on it; a second failure is a :class:`SlideError` naming the
    file and the region.
    """

    def __init__(self, path: str | os.PathLike, handle, backend: str):
        self.path, self.backend, self._handle = str(path), backend, handle

    dimensions = property(lambda self: self._handle.dimensions)  # level-0 (width, height) px
    level_dimensions = property(lambda self: self._handle.level_dimensions)
    level_downsamples = property(lambda self: self._handle.level_downsamples)
    level_count = property(lambda self: self._handle.level_count)
    properties = property(lambda self: self._handle.properties)

    def __getattr__(self, name: str):  # anything else OpenSlide offers (associated_images, ...)
        if name.startswith("_"):  # not set yet (unpickling): no recursion through self._handle
            raise AttributeError(name)
        return getattr(self._handle, name)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Image.Image:
        """RGBA region at ``level`` whose top-left is ``location`` in level-0 px (OpenSlide's convention)."""
        try:
            return self._handle.read_region(location, level, size)
        except Exception as first:  # noqa: BLE001 - any decode or I/O error gets one fresh try
            log.warning("%s: read at %s level %d failed (%s); retrying on a fresh handle", self.path, location,
                        level, first)
            self.close()
            try:
                self._handle = _open_handle(self.path, self.backend)
                return self._handle.read_region(location, level, size)
            except Exception as err:  # noqa: BLE001
                raise SlideError(
                    f"{self.path}: cannot read the region at x={location[0]}, y={location[1]} (level-0 px), "
                    f"level {level}, {size[0]}×{size[1]} px: {err} (also on a fresh handle; first error: {first})"
                ) from err

    def close(self) -> None:
        try:
            self._handle.close()
        except Exception as err:  # noqa: BLE001 - closing a broken handle must not hide the real error
            log.debug("%s: closing failed: %s", self.path, err)

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Slide({self.path!r}, backend={self.backend!r})"


def open_slide(path: str | os.PathLike) -> Slide:
    """Open a slide with OpenSlide, else with tiatoolbox; a :class:`SlideError` names the file and
    why each library refused it."""
    p = Path(path)
    if not p.exists():
        raise SlideError(f"{path}: no such file")
    if p.is_file() and p.stat().st_size == 0:
        raise SlideError(f"{path}: empty file (0 bytes; an interrupted download?)")
    try:
        return Slide(path, openslide.OpenSlide(str(path)), "openslide")
    except (openslide.OpenSlideError, OSError) as err:
        openslide_error = err
    try:
        slide = Slide(path, TiaSlide(path), "tiatoolbox")
    except Exception as err:  # noqa: BLE001 - tiatoolbox raises many types for files it cannot read
        raise SlideError(f"{path}: cannot open slide (OpenSlide: {openslide_error}; "
                         f"tiatoolbox: {type(err).__name__}: {err})") from err
    log.info("%s: OpenSlide cannot open it (%s); reading it with tiatoolbox", path, openslide_error)
    return slide


# ---------------------------------------------------------------------------------------------
# resolution


def _positive(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _mpp_candidates(props) -> list[tuple[str, float | None]]:
    """(source, µm/px) in order of trust: OpenSlide's normalised value, Aperio's, the TIFF tags."""
    found = [(key, _positive(props.get(key))) for key in (openslide.PROPERTY_NAME_MPP_X, "aperio.MPP")]
    res, unit = _positive(props.get("tiff.XResolution")), str(props.get("tiff.ResolutionUnit", "none")).lower()
    if res and unit in TIFF_UNIT_UM:  # unit 'none' (or absent) says nothing about physical size
        found.append((f"tiff.XResolution {res:g}/{unit}", TIFF_UNIT_UM[unit] / res))
    return found


def slide_mpp(slide, path: str | os.PathLike, fallback: float | None = None) -> float:
    """Level-0 resolution in µm/px: the slide's metadata (``openslide.mpp-x``, ``aperio.MPP``, TIFF
    resolution tags in cm or inch), else ``fallback`` (the per-slide or per-cohort override), else a
    :class:`SlideError`.  Values coarser than :data:`MAX_MPP` µm/px are ignored: they are the 72-dpi
    style defaults image software writes, not a scanner's resolution."""
    props = slide.properties
    x, y = (_positive(props.get(key)) for key in (openslide.PROPERTY_NAME_MPP_X, openslide.PROPERTY_NAME_MPP_Y))
    if x and y and abs(y / x - 1) > 0.01:
        log.warning("%s: pixels are not square (%.4g × %.4g µm); using the x resolution", path, x, y)
    ignored = []
    for source, mpp in _mpp_candidates(props):
        if mpp is not None and mpp <= MAX_MPP:
            return mpp
        if mpp is not None:
            ignored.append(f"{source} = {mpp:.4g} µm/px")
    if fallback is not None and _positive(fallback):
        if ignored:
            log.warning("%s: ignored implausible %s; using the configured %.4g µm/px", path, "; ".join(ignored),
                        fallback)
        return float(fallback)
    why = f" (ignored as implausible: {'; '.join(ignored)})" if ignored else ""
    raise SlideError(f"{path}: slide has no resolution (µm/px) in its metadata{why}; set `mpp_fallback` in the "
                     f"cohort config or an `mpp` column for this slide in the sample sheet")


def slide_info(slide, path: str | os.PathLike, mpp_fallback: float | None = None) -> SlideInfo:
    width, height = slide.dimensions
    return SlideInfo(
        path=str(path), width=int(width), height=int(height),
        mpp=slide_mpp(slide, path, mpp_fallback),
        vendor=slide.properties.get(openslide.PROPERTY_NAME_VENDOR, "unknown"),
        level_downsamples=tuple(float(d) for d in slide.level_downsamples),
        backend=getattr(slide, "backend", "openslide"),
    )


# ---------------------------------------------------------------------------------------------
# reading


def best_level(slide, downsample: float) -> int:
    """The coarsest pyramid level that is still at least as fine as ``downsample`` (tolerance 1 %)."""
    candidates = [i for i, d in enumerate(slide.level_downsamples) if d <= downsample * 1.01]
    return max(candidates, key=lambda i: slide.level_downsamples[i]) if candidates else 0


def read_region_rgb(slide, x: int, y: int, level: int, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 array of a region whose top-left is (x, y) in level-0 px; transparent areas become white."""
    rgba = np.asarray(slide.read_region((int(x), int(y)), level, size))
    rgb = rgba[..., :3].copy()
    rgb[rgba[..., 3] == 0] = 255
    return rgb
