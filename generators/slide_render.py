"""H&E-like slide rendering with a planted tumour texture, and the Aperio SVS writer.

Why a module of its own: drawing a slide (tissue pieces, tumour blobs, nuclei, stain noise) and
laying it out as an SVS that OpenSlide reads as vendor 'aperio' are independent of the cohort
around them; the demo cohort (:mod:`generators.demo`), :mod:`generators.synthetic`, the tests
and the benchmarks all use them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage

from preprocessing.io import atomic_path

BACKGROUND = (240, 240, 240)  # glass
EOSIN = (230, 150, 190)  # stroma
TUMOUR_CYTOPLASM = (205, 130, 185)
HEMATOXYLIN = (90, 40, 130)  # nuclei
APERIO_HEAD = "Aperio Image Library v12.0.15 \r\n"
CELL = 16  # px per cell of the coarse grid on which tissue / tumour shapes are drawn


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to unit SD: the basis of all blob shapes."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="reflect")
    return f / (f.std() + 1e-12)


def _upsample(a: np.ndarray, factor: int, out_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a coarse float map by an integer factor (PIL: fast, C), cropped."""
    h, w = a.shape
    im = Image.fromarray(a.astype(np.float32)).resize((w * factor, h * factor), Image.BILINEAR)
    return np.asarray(im)[: out_hw[0], : out_hw[1]]


def _tissue_field(rng: np.random.Generator, gh: int, gw: int) -> np.ndarray:
    """Coarse map > 0 on tissue: 1-4 wobbly ellipses (some with holes) covering 30-45 % of the
    slide, with a background margin at the border."""
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    cover = rng.uniform(0.30, 0.45)
    n_pieces = int(rng.integers(1, 5))
    field = np.full((gh, gw), -np.inf, np.float32)
    for _ in range(n_pieces):
        aspect, ang = rng.uniform(0.55, 1.0), rng.uniform(-0.6, 0.6)  # major axis roughly along x
        r = math.sqrt(cover * gh * gw / (n_pieces * math.pi * aspect)) * rng.uniform(0.85, 1.15)
        ex = 1.15 * math.hypot(r * math.cos(ang), r * aspect * math.sin(ang))  # half extents,
        ey = 1.15 * math.hypot(r * math.sin(ang), r * aspect * math.cos(ang))  # wobble included
        cx = rng.uniform(min(ex, gw / 2), max(gw - ex, gw / 2))
        cy = rng.uniform(min(ey, gh / 2), max(gh - ey, gh / 2))
        u = ((xx - cx) * math.cos(ang) + (yy - cy) * math.sin(ang)) / r
        v = (-(xx - cx) * math.sin(ang) + (yy - cy) * math.cos(ang)) / (r * aspect)
        theta = np.arctan2(v, u)
        wobble = 1 + sum(rng.uniform(0, 0.08) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
                         for k in range(2, 6))
        piece = 1 - np.hypot(u, v) / wobble
        if rng.random() < 0.5:  # holes: background-coloured gaps inside the piece
            for _ in range(int(rng.integers(1, 3))):
                d, phi = rng.uniform(0, 0.45) * r, rng.uniform(0, 2 * math.pi)
                rh = r * rng.uniform(0.15, 0.3)
                dist = np.hypot(yy - cy - d * math.sin(phi), xx - cx - d * math.cos(phi))
                piece -= 2 * np.clip(1 - dist / rh, 0, None)
        field = np.maximum(field, piece)
    field += 0.1 * _smooth_noise(rng, (gh, gw), min(gh, gw) / 20)
    edge = np.minimum(np.minimum(yy + 0.5, gh - 0.5 - yy), np.minimum(xx + 0.5, gw - 0.5 - xx))
    edge /= min(gh, gw)  # soft push away from the border, then a hard margin of glass
    field = np.minimum(field - 30 * np.clip(0.15 - edge, 0, None) ** 2, (edge - 0.03) * 50)
    return field - np.quantile(field, 1 - cover)


def _nuclei_stamps(rng: np.random.Generator, mpp: float, n: int = 6) -> list[tuple[np.ndarray, np.ndarray]]:
    """A few elliptical nucleus footprints (pixel offsets), 5.5-9 µm long axis."""
    stamps = []
    for _ in range(n):
        a = rng.uniform(2.8, 4.5) / mpp
        b, ang = a * rng.uniform(0.6, 1.0), rng.uniform(0, math.pi)
        R = int(math.ceil(a))
        dy, dx = np.mgrid[-R:R + 1, -R:R + 1]
        u = dx * math.cos(ang) + dy * math.sin(ang)
        v = -dx * math.sin(ang) + dy * math.cos(ang)
        inside = (u / a) ** 2 + (v / b) ** 2 <= 1
        stamps.append((dy[inside], dx[inside]))
    return stamps


def render_slide(rng: np.random.Generator, size: tuple[int, int], mpp: float,
                 tumour_fraction: float, blank: bool = False, *, return_labels: bool = False):
    """H&E-like level-0 RGB image (H, W, 3) uint8 for ``size`` = (width, height) px at ``mpp``
    µm/px, and the realised tumour share of the tissue area (nan for a blank slide); with
    ``return_labels`` also the level-0 label map (H, W) uint8: 0 glass, 1 stroma, 2 tumour.

    Tumour regions are thresholded smooth noise (blobs of ~0.5 mm) inside the tissue, with the
    threshold set at the quantile that makes their area share equal ``tumour_fraction``."""
    W, H = size
    gh, gw = -(-H // CELL), -(-W // CELL)
    label = np.zeros((H, W), np.uint8)  # 0 glass, 1 stroma, 2 tumour
    realised = float("nan")
    if not blank:
        tissue_c = _tissue_field(rng, gh, gw)
        sigma = min(150.0 / (CELL * mpp), min(gh, gw) / 8)  # ~150 µm -> blobs >= ~0.5 mm
        tumour_c = _smooth_noise(rng, (gh, gw), sigma)
        tumour_c -= np.quantile(tumour_c[tissue_c > 0], 1 - tumour_fraction)
        tissue = (_upsample(tissue_c, CELL, (H, W)) > 0).view(np.uint8)
        label = tissue * (1 + (_upsample(tumour_c, CELL, (H, W)) > 0).view(np.uint8))
        realised = float(np.count_nonzero(label == 2) / max(np.count_nonzero(tissue), 1))

    # nuclei: uniform candidates at tumour density, kept with a class-dependent probability
    nuc = np.zeros((H, W), np.float32)
    if not blank:
        n_cand = int(rng.poisson(H * W * mpp**2 / 90.0))  # one tumour nucleus per ~90 µm²
        ys, xs = rng.integers(0, H, n_cand), rng.integers(0, W, n_cand)
        keep = rng.random(n_cand) < np.array([0.0, 0.12, 1.0])[label[ys, xs]]
        ys, xs = ys[keep], xs[keep]
        val = rng.uniform(0.7, 0.95, ys.size).astype(np.float32)
        stamps = _nuclei_stamps(rng, mpp)
        which = rng.integers(0, len(stamps), ys.size)
        for k, (dy, dx) in enumerate(stamps):
            s = which == k
            yy = np.clip(ys[s, None] + dy[None], 0, H - 1)
            xx = np.clip(xs[s, None] + dx[None], 0, W - 1)
            nuc[yy, xx] = np.broadcast_to(val[s, None], yy.shape)

    # colour, one channel at a time in place (float32 temporaries of 3 channels are slow)
    offset = rng.integers(-4, 5, (H, W), dtype=np.int8).astype(np.float32) + 0.5  # grain, +0.5 rounds
    if not blank:  # low-frequency staining variation inside tissue (masked on the coarse grid)
        offset -= _upsample(_smooth_noise(rng, (gh, gw), 1.5) * 8.0 * (tissue_c > 0), CELL, (H, W))
    base = np.array([BACKGROUND, EOSIN, TUMOUR_CYTOPLASM], np.float32)
    rgb = np.empty((H, W, 3), np.uint8)
    for ch in range(3):
        c = base[:, ch][label]
        c += nuc * (HEMATOXYLIN[ch] - c)
        c += offset
        rgb[..., ch] = np.clip(c, 0, 255, out=c)
    return (rgb, realised, label) if return_labels else (rgb, realised)


def label_cells(label: np.ndarray, cell: int = CELL) -> tuple[np.ndarray, np.ndarray]:
    """(tumour, tissue) share of each ``cell`` × ``cell`` px square of a level-0 label map, as
    uint8 0-255 on the (ceil(H / cell), ceil(W / cell)) grid: small enough to keep per slide, fine
    enough (8 µm at 0.5 µm/px) to score 256-px patches against."""
    H, W = label.shape
    gh, gw = -(-H // cell), -(-W // cell)
    padded = np.zeros((gh * cell, gw * cell), np.uint8)
    padded[:H, :W] = label
    blocks = padded.reshape(gh, cell, gw, cell)
    counts = cell * cell
    tumour = np.count_nonzero(blocks == 2, axis=(1, 3)) / counts
    tissue = np.count_nonzero(blocks > 0, axis=(1, 3)) / counts
    return (np.round(tumour * 255).astype(np.uint8), np.round(tissue * 255).astype(np.uint8))


def write_svs(path: str | Path, rgb: np.ndarray, *, mpp: float, app_mag: float, tile: int = 256,
              n_levels: int = 3, quality: int = 90) -> None:
    """Write ``rgb`` (H, W, 3 uint8, level 0) as an Aperio SVS that OpenSlide reads as vendor
    'aperio': tiled JPEG levels downsampled 1, 4, 16, ... each a top-level IFD, a stripped
    thumbnail as the second IFD, and Aperio ImageDescriptions (``MPP`` in µm/px, ``AppMag`` the
    objective magnification)."""
    path = Path(path)
    H, W = rgb.shape[:2]
    levels = [np.ascontiguousarray(rgb)]
    im = Image.fromarray(levels[0])
    for _ in range(1, n_levels):
        im = im.reduce(4)  # box filter, like Aperio's 4x pyramid
        levels.append(np.asarray(im))
    f = max(1, math.ceil(max(levels[1].shape[:2]) / 768)) if n_levels > 1 else 1
    thumb = np.asarray(Image.fromarray(levels[min(1, n_levels - 1)]).reduce(f))
    dims = f"{W}x{H} [0,0 {W}x{H}]"
    meta = (f"|AppMag = {app_mag:g}|StripeWidth = 2040|ScanScope ID = SS1234|Filename = {path.stem[:23]}"
            f"|MPP = {float(mpp)!r}|OriginalWidth = {W}|OriginalHeight = {H}")
    opts = dict(photometric="rgb", compression="jpeg", compressionargs={"level": quality},
                metadata=None, software=False)
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp) as tif:
        tif.write(levels[0], tile=(tile, tile),
                  description=f"{APERIO_HEAD}{dims} ({tile}x{tile}) JPEG/RGB Q={quality}{meta}", **opts)
        tif.write(thumb, description=f"{APERIO_HEAD}{W}x{H} -> {thumb.shape[1]}x{thumb.shape[0]} - {meta}",
                  **opts)
        for lvl in levels[1:]:
            desc = f"{APERIO_HEAD}{dims} -> {lvl.shape[1]}x{lvl.shape[0]} JPEG/RGB Q={quality}"
            tif.write(lvl, tile=(tile, tile), description=desc, **opts)
