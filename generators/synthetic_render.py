"""Rendering a synthetic slide's scene tile by tile, and writing it as an Aperio SVS (or a flat tiled TIFF).

Why a module of its own: every 256-px tile of every pyramid level is drawn on its own from the
scene's fields (bilinear interpolation plus H&E-like, periodic colour and texture) and handed to
tifffile one by one, so level 0 is never held in memory.  This differs from the in-memory renderer
of the demo cohort (:mod:`generators.slide_render`), whose ``APERIO_HEAD`` layout it shares.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import scipy.fft
import tifffile

from preprocessing.io import atomic_path

from .slide_render import APERIO_HEAD
from .synthetic_scene import GLASS, Scene

EOSIN = (232, 160, 200)
HEMATOXYLIN = (95, 50, 140)
TILE = 256
DOWNSAMPLES = (1, 4, 16, 64)  # Aperio's 4× pyramid
TEXTURE = 4 * TILE  # side of the periodic textures that pave each level, px


def _periodic_noise(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """Unit-SD noise on an ``n`` × ``n`` torus, smoothed by a Gaussian of ``sigma`` px (in Fourier space)."""
    ky, kx = np.fft.fftfreq(n).astype(np.float32), np.fft.rfftfreq(n).astype(np.float32)
    gain = np.exp(-2 * (np.pi * sigma) ** 2 * (ky[:, None] ** 2 + kx[None, :] ** 2))
    f = scipy.fft.irfft2(scipy.fft.rfft2(rng.standard_normal((n, n), np.float32)) * gain, s=(n, n))
    return f / (f.std() + 1e-12)


def _textures(rng: np.random.Generator, mpp: float, with_od: bool = False) -> tuple[np.ndarray, ...]:
    """Tissue and glass textures (uint8, ``TEXTURE`` px square) at ``mpp`` µm/px: eosin with
    hematoxylin nuclei (5–9 µm) where they are resolved, their mean colour where they are not,
    plus grain.  They wrap around (periodic stain, nuclei drawn across the edges), so a slide
    paved with them shows no seams.  ``with_od`` adds the tissue's optical density relative to
    :data:`GLASS` before the grain (float32), to restain it at another intensity."""
    n = TEXTURE
    glass = (np.uint8(GLASS) + rng.integers(-4, 5, (n, n, 3), dtype=np.int8)).astype(np.uint8)
    share = 0.18  # area share of nuclei
    stain = 1 + 0.06 * _periodic_noise(rng, n, 30 / mpp)[..., None]
    if mpp <= 2:
        nuclei = np.zeros((n, n), np.uint8)
        count = int(share * (n * mpp) ** 2 / (math.pi * 3.5**2))
        for x, y, a, b, ang in zip(rng.uniform(0, n, count), rng.uniform(0, n, count), rng.uniform(2.8, 4.5, count),
                                   rng.uniform(0.6, 1.0, count), rng.uniform(0, 180, count)):
            reach = a / mpp + 1  # copies across the edges it comes near, so the texture wraps around
            for dx in [0] + [n] * int(x < reach) + [-n] * int(x > n - reach):
                for dy in [0] + [n] * int(y < reach) + [-n] * int(y > n - reach):
                    cv2.ellipse(nuclei, ((float(x + dx), float(y + dy)), (2 * a / mpp, 2 * a * b / mpp), float(ang)),
                                255, -1, cv2.LINE_AA)
        alpha = nuclei[..., None].astype(np.float32) / 255 * 0.85
    else:
        alpha = np.float32(share * 0.85)
    c = (np.float32(EOSIN) * (1 - alpha) + np.float32(HEMATOXYLIN) * alpha) * stain
    od = -np.log(np.clip(c / np.float32(GLASS), 1e-3, 1)) if with_od else None
    c += rng.integers(-4, 5, (n, n, 3), dtype=np.int8)
    tissue = np.clip(c, 0, 255, out=c).astype(np.uint8)
    return (tissue, glass, od) if with_od else (tissue, glass)


def _interp(coords: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights of linear interpolation at ``coords`` on a grid of ``n`` (edges clamped)."""
    c = np.clip(coords, 0, n - 1)
    i0 = np.clip(np.floor(c).astype(np.intp), 0, max(n - 2, 0))
    return i0, np.minimum(i0 + 1, n - 1), (c - i0).astype(np.float32)


def _bilinear(a: np.ndarray, ys, xs) -> np.ndarray:
    """``a`` sampled at the grid ``ys`` × ``xs`` (each from :func:`_interp`); elementwise, no BLAS
    (whose threads fight the JPEG encoders over the cores)."""
    (y0, y1, wy), (x0, x1, wx) = ys, xs
    rows = a[y0] * (1 - wy)[:, None] + a[y1] * wy[:, None]
    return rows[:, x0] * (1 - wx) + rows[:, x1] * wx


class _Renderer:
    """Renders any region of any level from the scene; level 0 px are ``mpp`` µm wide."""

    def __init__(self, scene: Scene, mpp: float, label_mpp: float, seed: int):
        self.scene, self.mpp, self.f = scene, mpp, label_mpp / mpp  # level-0 px per label px
        self.textures: dict[float, tuple] = {}
        self.seed = seed
        self.stain_map = isinstance(scene.stain, np.ndarray)
        self.restain = self.stain_map or scene.stain != 1 or tuple(scene.glass) != GLASS

    def _bank(self, ds: float) -> tuple:
        """(tissue, glass) uint8 textures at ``ds``, and for a stain map the glass light (float32)
        and tissue optical density that :meth:`region` restains with."""
        if ds not in self.textures:
            rng = np.random.default_rng([self.seed, int(ds * 1000)])
            if not self.restain:
                self.textures[ds] = (*_textures(rng, self.mpp * ds), None, None)
            else:  # the same grain, under this scene's glass; tissue lets through exp(-stain · od) of it
                tissue, glass, od = _textures(rng, self.mpp * ds, with_od=True)
                light = glass.astype(np.float32) + (np.float32(self.scene.glass) - np.float32(GLASS))
                glass = np.clip(light + 0.5, 0, 255).astype(np.uint8)
                if self.stain_map:
                    self.textures[ds] = (None, glass, light, od)
                else:
                    tissue = np.clip(light * np.exp(-np.float32(self.scene.stain) * od) + 0.5, 0, 255).astype(np.uint8)
                    self.textures[ds] = (tissue, glass, None, None)
        return self.textures[ds]

    def region(self, x0: int, y0: int, w: int, h: int, ds: float) -> np.ndarray:
        """RGB (h, w) of level px [x0, x0 + w) × [y0, y0 + h) of a level ``ds`` times coarser than level 0."""
        tissue_tex, glass_tex, light_tex, od_tex = self._bank(ds)
        gh, gw = self.scene.tissue.shape
        # label-grid coordinates of the level px centres; the window holds every grid px they touch
        lx = (np.arange(x0, x0 + w) + 0.5) * ds / self.f - 0.5
        ly = (np.arange(y0, y0 + h) + 0.5) * ds / self.f - 0.5
        wx0, wx1 = max(0, int(math.floor(lx[0]))), min(gw, int(math.ceil(lx[-1])) + 2)
        wy0, wy1 = max(0, int(math.floor(ly[0]))), min(gh, int(math.ceil(ly[-1])) + 2)
        if wx0 >= wx1 or wy0 >= wy1:  # wholly outside the slide (padding of an edge tile)
            wx0, wx1, wy0, wy1 = min(wx0, gw - 1), min(wx0, gw - 1) + 1, min(wy0, gh - 1), min(wy0, gh - 1) + 1
        half = 0.5 * ds / self.f + 1e-3  # fields beyond ±half are fully in or out at this level
        window = (slice(wy0, wy1), slice(wx0, wx1))
        t = self.scene.tissue[window]
        overlays = [(f, c) for f, c, _ in self.scene.overlays if f[window].max() > -half]
        shade = self.scene.shade if self.scene.shade is not None and self.scene.shade[window].min() < 0.999 else None
        if x0 % TILE == 0 and y0 % TILE == 0 and (w, h) == (TILE, TILE):  # a tile: a view of the texture
            sy, sx = slice(y0 % TEXTURE, y0 % TEXTURE + TILE), slice(x0 % TEXTURE, x0 % TEXTURE + TILE)

            def tiled(tex: np.ndarray) -> np.ndarray:
                return tex[sy, sx]
        else:
            iy, ix = np.arange(y0, y0 + h) % TEXTURE, np.arange(x0, x0 + w) % TEXTURE

            def tiled(tex: np.ndarray) -> np.ndarray:
                return tex[iy][:, ix]

        if not overlays and shade is None and t.min() > half and tissue_tex is not None:
            return tiled(tissue_tex)
        if not overlays and shade is None and t.max() < -half:
            return tiled(glass_tex)
        ys, xs = _interp(ly - wy0, wy1 - wy0), _interp(lx - wx0, wx1 - wx0)
        scale = self.f / ds  # level px per label px: edges are antialiased over one level px

        def alpha(f: np.ndarray) -> np.ndarray:
            return np.clip(_bilinear(f[window], ys, xs) * scale + 0.5, 0, 1)[..., None]

        def sample(f: np.ndarray) -> np.ndarray:
            return _bilinear(f[window], ys, xs)[..., None]

        a = alpha(self.scene.tissue)
        rgb = tiled(glass_tex).astype(np.float32)
        if tissue_tex is None:  # a stain map: restain the tissue px by px
            tissue = tiled(light_tex) * np.exp(-sample(self.scene.stain) * tiled(od_tex))
        else:
            tissue = tiled(tissue_tex).astype(np.float32)
        rgb += a * (tissue - rgb)
        for f, colour in overlays:
            rgb *= 1 - alpha(f) * (1 - np.float32(colour) / 255)
        if shade is not None:
            rgb *= sample(shade)
        return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)

    def tiles(self, width: int, height: int, ds: float) -> Iterator[np.ndarray]:
        """Row-major 256-px tiles of a level of ``width`` × ``height`` px."""
        for ty in range(-(-height // TILE)):
            for tx in range(-(-width // TILE)):
                yield self.region(tx * TILE, ty * TILE, TILE, TILE, ds)


def write_slide(path: str | os.PathLike, scene: Scene, size: tuple[int, int], mpp: float, label_mpp: float,
                *, seed: int = 0, quality: int = 85, workers: int = 2, pyramid: bool = True) -> None:
    """Write ``scene`` as an Aperio SVS (as :func:`generators.slide_render.write_svs` lays it out:
    tiled JPEG levels at downsamples 1, 4, 16, 64, a stripped thumbnail as the second IFD,
    ``MPP`` and ``AppMag`` in the descriptions), tile by tile; ``workers`` threads encode JPEG.
    Without ``pyramid``: a generic tiled JPEG TIFF of level 0 alone, its µm/px in the resolution
    tags (as some exports and OME-TIFFs without sub-resolutions are)."""
    path = Path(path)
    W, H = size
    renderer = _Renderer(scene, mpp, label_mpp, seed)
    if not pyramid:
        with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=W * H * 3 > 2**35) as tif:
            tif.write(renderer.tiles(W, H, 1), shape=(H, W, 3), dtype=np.uint8, tile=(TILE, TILE), photometric="rgb",
                      compression="jpeg", compressionargs={"level": quality}, maxworkers=workers,
                      buffersize=16 << 20, resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER",
                      metadata=None, software=False)
        return
    levels = [(-(-W // d), -(-H // d), d) for d in DOWNSAMPLES if d == 1 or max(W, H) // d >= TILE // 2]
    tds = max(W, H) / 768  # thumbnail IFD: at most 768 px on its long side
    tw, th = max(1, round(W / tds)), max(1, round(H / tds))
    thumb = renderer.region(0, 0, tw, th, W / tw)
    dims = f"{W}x{H} [0,0 {W}x{H}]"
    meta = (f"|AppMag = {10.0 / mpp:g}|StripeWidth = 2040|ScanScope ID = SS1234|Filename = {path.stem[:23]}"
            f"|MPP = {float(mpp)!r}|OriginalWidth = {W}|OriginalHeight = {H}")
    opts = dict(photometric="rgb", compression="jpeg", compressionargs={"level": quality}, metadata=None,
                software=False)
    # classic TIFF as Aperio writes (JPEG tiles of ≤ 32 GiB of pixels stay far below its 4 GiB)
    tiled = dict(tile=(TILE, TILE), dtype=np.uint8, maxworkers=workers, buffersize=16 << 20, **opts)
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=W * H * 3 > 2**35) as tif:
        for i, (w, h, d) in enumerate(levels):
            desc = (f"{APERIO_HEAD}{dims} ({TILE}x{TILE}) JPEG/RGB Q={quality}{meta}" if i == 0
                    else f"{APERIO_HEAD}{dims} -> {w}x{h} JPEG/RGB Q={quality}")
            tif.write(renderer.tiles(w, h, d), shape=(h, w, 3), description=desc, **tiled)
            if i == 0:
                tif.write(thumb, description=f"{APERIO_HEAD}{W}x{H} -> {tw}x{th} - {meta}", **opts)
