"""Whole-slide images (thumbnails for segmentation, QC and heatmaps) read in bounded memory.

A level far finer than the image wanted (a slide without a pyramid) is read in strips and
downsampled as it goes, and a level of JPEG tiles in a TIFF is decoded at 1/2, 1/4 or 1/8 of its
size by libjpeg itself (scaled DCT), which is several times faster than decoding it whole.

Kept apart from :mod:`preprocessing.slides` (opening a slide, its µm/px, single regions): this is
the one path that reads a whole pyramid level, with its own strip and JPEG-tile machinery.
"""
from __future__ import annotations

import logging

import cv2
import numpy as np
import openslide
import tifffile

from .slides import SlideError, best_level, read_region_rgb

log = logging.getLogger(__name__)

WHOLE_READ_PX = 4096 * 4096  # a level of at most this many px is read in one piece for a thumbnail
STRIP_PX = 4 << 20  # px read at once otherwise: full-width strips of 16 MB of RGBA
JPEG_VENDORS = ("aperio", "generic-tiff")  # OpenSlide vendors whose levels are plain tiled TIFF pages
# APP14 marker saying a JPEG's three channels are RGB, not YCbCr: Aperio writes such tiles
# (TIFF photometric RGB) without it, and libjpeg would otherwise convert them from YCbCr.
ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"


class _RegionRows:
    """Full-width rows of one level of a slide, through its ``read_region``."""

    def __init__(self, slide, level: int):
        self.slide, self.level = slide, level
        self.width, self.height = slide.level_dimensions[level]
        self.downsample = slide.level_downsamples[level]

    def rows(self, y0: int, y1: int) -> np.ndarray:
        return read_region_rgb(self.slide, 0, round(y0 * self.downsample), self.level, (self.width, y1 - y0))

    def close(self) -> None:
        pass


class _JpegRows:
    """Full-width rows of one level stored as JPEG tiles of a TIFF page, decoded by libjpeg at
    1/``reduce`` of their size (its scaled inverse DCT: an anti-aliased reduction that keeps each
    block's mean colour, at a fraction of a full decode's cost).  A tile that does not decode is
    read through the slide, whose error names the file and region."""

    def __init__(self, slide, level: int, page, tif, reduce: int):
        self.slide, self.level, self.page, self.tif, self.reduce = slide, level, page, tif, reduce
        self.full = slide.level_dimensions[level]
        self.tw, self.th = page.tilewidth // reduce, page.tilelength // reduce
        self.cols = -(-self.full[0] // page.tilewidth)
        self.width, self.height = -(-self.full[0] // reduce), -(-self.full[1] // reduce)
        self.flag = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                     8: cv2.IMREAD_REDUCED_COLOR_8}[reduce]
        self.head = b"\xff\xd8" + (ADOBE_RGB if page.photometric == 2 else b"")
        self.tables = page.jpegtables[2:-2] if page.jpegtables else b""  # without their SOI and EOI markers
        self._strips: dict[int, np.ndarray] = {}

    def tile(self, row: int, col: int) -> np.ndarray:
        """RGB tile at 1/reduce, cropped to the level's edge."""
        i = row * self.cols + col
        w = min(self.tw, self.width - col * self.tw)
        h = min(self.th, self.height - row * self.th)
        count = self.page.databytecounts[i]
        if not count:  # a sparse TIFF's missing tile: nothing scanned there, white as OpenSlide has it
            return np.full((h, w, 3), 255, np.uint8)
        fh = self.tif.filehandle
        fh.seek(self.page.dataoffsets[i])
        data = fh.read(count)
        bgr = cv2.imdecode(np.frombuffer(self.head + self.tables + data[2:], np.uint8), self.flag)
        if bgr is None or bgr.shape[0] < h or bgr.shape[1] < w:
            ds = self.slide.level_downsamples[self.level]
            x, y = col * self.page.tilewidth, row * self.page.tilelength
            size = (min(self.page.tilewidth, self.full[0] - x), min(self.page.tilelength, self.full[1] - y))
            region = read_region_rgb(self.slide, round(x * ds), round(y * ds), self.level, size)
            return cv2.resize(region, (w, h), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(bgr[:h, :w], cv2.COLOR_BGR2RGB)

    def _strip(self, row: int) -> np.ndarray:
        if row not in self._strips:
            if len(self._strips) >= 2:
                del self._strips[min(self._strips)]
            self._strips[row] = np.hstack([self.tile(row, c) for c in range(self.cols)])
        return self._strips[row]

    def rows(self, y0: int, y1: int) -> np.ndarray:
        strips = [self._strip(r) for r in range(y0 // self.th, (y1 - 1) // self.th + 1)]
        top = (y0 // self.th) * self.th
        return np.vstack(strips)[y0 - top:y1 - top] if len(strips) > 1 else strips[0][y0 - top:y1 - top]

    def close(self) -> None:
        self.tif.close()


def _jpeg_rows(slide, level: int, reduce: int) -> _JpegRows | None:
    """Reduced JPEG decoding of ``level`` where the file allows it and a check agrees with the
    slide's own reader (the tile in the middle: same mean colour within 3 of 255); else None."""
    path = getattr(slide, "path", None)
    if (reduce < 2 or path is None or getattr(slide, "backend", "") != "openslide"
            or slide.properties.get(openslide.PROPERTY_NAME_VENDOR) not in JPEG_VENDORS):
        return None
    w, h = slide.level_dimensions[level]
    try:
        tif = tifffile.TiffFile(path)
    except Exception:  # noqa: BLE001 - not for tifffile: the slide's reader does it
        return None
    try:
        pages = [p for p in tif.pages if p.is_tiled and p.compression == 7 and p.shape == (h, w, 3)
                 and p.dtype == np.uint8 and p.planarconfig == 1 and p.photometric in (2, 6)
                 and p.tilewidth % (2 * reduce) == 0 and p.tilelength % (2 * reduce) == 0]
        if pages:
            rows = _JpegRows(slide, level, pages[0], tif, reduce)
            r, c = (rows.height - 1) // rows.th // 2, (rows.cols - 1) // 2
            mine = rows.tile(r, c).astype(np.int16)
            ds, tw, th = slide.level_downsamples[level], pages[0].tilewidth, pages[0].tilelength
            size = (min(tw, w - c * tw), min(th, h - r * th))
            theirs = read_region_rgb(slide, round(c * tw * ds), round(r * th * ds), level, size)
            theirs = cv2.resize(theirs, mine.shape[1::-1], interpolation=cv2.INTER_AREA)
            # the scaled DCT is no box filter: texture differs px by px, the tile's colour may not
            if np.abs(mine - theirs).mean() < 16 and np.abs((mine - theirs).reshape(-1, 3).mean(0)).max() < 3:
                return rows
            log.info("%s: reduced JPEG decoding differs from %s's; reading through it", path, slide.backend)
    except SlideError:
        tif.close()
        raise
    except Exception as err:  # noqa: BLE001 - an odd file: the slide's own reader does it
        log.debug("%s: no reduced JPEG decoding: %s", path, err)
    tif.close()
    return None


def read_level_resized(slide, level: int, out_size: tuple[int, int]) -> np.ndarray:
    """The whole of pyramid ``level`` as an RGB image of ``out_size`` (width, height), area-averaged.

    A level of up to :data:`WHOLE_READ_PX` is read in one piece; a larger one in full-width strips
    of about :data:`STRIP_PX`, each resized to its share of output rows, so memory stays bounded
    whatever the slide's size.  JPEG tiles of a TIFF are decoded at the largest of 1/8, 1/4, 1/2
    that keeps the image at least as fine as ``out_size``."""
    w, h = slide.level_dimensions[level]
    W, H = out_size
    reduce = max([r for r in (8, 4, 2) if r <= min(w / W, h / H)], default=1)
    source = _jpeg_rows(slide, level, reduce)
    if source is None:
        if w * h <= WHOLE_READ_PX:
            image = read_region_rgb(slide, 0, 0, level, (w, h))
            return image if (w, h) == (W, H) else cv2.resize(image, (W, H), interpolation=cv2.INTER_AREA)
        source = _RegionRows(slide, level)
    try:
        fy = source.height / H  # source rows per output row
        n = max(1, int(STRIP_PX / (source.width * max(fy, 1.0))))  # output rows per strip
        out = np.empty((H, W, 3), np.uint8)
        for oy0 in range(0, H, n):
            oy1 = min(H, oy0 + n)
            y0, y1 = min(round(oy0 * fy), source.height - 1), min(round(oy1 * fy), source.height)
            strip = source.rows(y0, max(y1, y0 + 1))
            out[oy0:oy1] = cv2.resize(strip, (W, oy1 - oy0), interpolation=cv2.INTER_AREA)
    finally:
        source.close()
    return out


def read_thumbnail(slide, level0_mpp: float, target_mpp: float) -> tuple[np.ndarray, float]:
    """The whole slide at ``target_mpp`` µm/px, read from the best level and resized in bounded
    memory (:func:`read_level_resized`).

    Returns the RGB image and its downsample factor relative to level 0 (level-0 px per thumbnail px).
    """
    downsample = target_mpp / level0_mpp
    level = best_level(slide, downsample)
    W, H = slide.dimensions
    out_size = (max(1, round(W / downsample)), max(1, round(H / downsample)))
    return read_level_resized(slide, level, out_size), W / out_size[0]
