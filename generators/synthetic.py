"""Synthetic Aperio slides with a known tissue mask, to measure segmentation against the truth.

Why: real slides come without ground truth, and the cohort of :mod:`generators.demo` holds
each slide in memory.  Here a scene is drawn once on a coarse *label grid* (``label_mpp`` µm/px,
by default the segmentation's 8 µm/px) as signed fields (> 0 inside, in label px): tissue pieces
with holes, marker-pen strokes and dust specks.  Every 256-px tile of every pyramid level is then
rendered on its own by bilinear interpolation of those fields plus H&E-like colour and texture,
and handed to tifffile one by one, so level 0 is never held in memory: a 40 000 × 40 000 px slide
(0.25 µm/px) is written in well under a minute.

Stain intensity is a parameter of the scene (per piece, or fading across one): the tissue's optical
density relative to the glass is scaled by it, so ``stain=0.1`` gives pale pieces of HSV saturation
≈ 10 of 255.  The glass may be bright or grey, and neutral artefacts (a coverslip-edge shadow,
air-bubble rims) darken all three colours alike; tissue under them is still tissue.

The truth is ``labels == TISSUE`` on the label grid: tissue under ink counts as *not* tissue
(pen marks are excluded), dust specks are smaller than the minimum tissue area and lie on glass.
It is saved beside the slide as ``{stem}.truth.png`` (0/255), ``{stem}.labels.png`` (class codes)
and ``{stem}.truth.json`` (µm/px, downsample of the truth grid, areas in mm²).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import scipy.fft
import tifffile

from preprocessing.io import atomic_path

from .slide_render import APERIO_HEAD

BACKGROUND, TISSUE, PEN, DUST, ARTEFACT = 0, 1, 2, 3, 4  # label codes; ARTEFACT: shadow or bubble on glass
GLASS = (241, 241, 238)
GREY_GLASS = (214, 214, 210)  # a slightly grey background (darker illumination, tinted mountant)
STAINS = {"normal": 1.0, "light": 0.2, "faint": 0.1}  # optical density × this: HSV saturation ≈ 80, 18, 10
BACKGROUNDS = {"bright": GLASS, "grey": GREY_GLASS}
EOSIN = (232, 160, 200)
HEMATOXYLIN = (95, 50, 140)
# Colour of the light that an ink or a speck lets through (multiplied into what lies beneath).
INKS = {"blue": (45, 75, 175), "green": (50, 150, 85), "black": (28, 28, 34)}
DUST_COLOURS = ((120, 118, 115), (70, 68, 66), (30, 30, 30), (225, 150, 190))  # grey, dark, black, debris
TILE = 256
DOWNSAMPLES = (1, 4, 16, 64)  # Aperio's 4× pyramid
TEXTURE = 4 * TILE  # side of the periodic textures that pave each level, px


@dataclass
class Scene:
    """Signed fields on the label grid (label px; > 0 inside) and their colours."""

    tissue: np.ndarray  # float32 (gh, gw)
    overlays: list[tuple[np.ndarray, tuple[int, int, int], int]] = field(default_factory=list)  # field, colour, label
    stain: float | np.ndarray = 1.0  # tissue optical density × this (1: normal H&E); one value or per label px
    glass: tuple[int, int, int] = GLASS  # colour of bare glass
    shade: np.ndarray | None = None  # share of the light that neutral artefacts let through, per label px

    @property
    def labels(self) -> np.ndarray:
        """Class of each label-grid pixel (its centre): ink over anything, dust on glass, shadows and
        bubble rims on glass (over tissue they are tissue)."""
        labels = np.where(self.tissue > 0, TISSUE, BACKGROUND).astype(np.uint8)
        if self.shade is not None:
            labels[(labels == BACKGROUND) & (self.shade < 0.9)] = ARTEFACT
        for f, _, code in sorted(self.overlays, key=lambda o: o[2] == PEN):  # pens drawn last
            labels[f > 0] = code
        return labels


@dataclass
class SyntheticSlide:
    path: Path
    truth: np.ndarray  # bool, label grid
    labels: np.ndarray  # uint8 class codes, label grid
    mpp: float  # µm/px at level 0
    truth_downsample: float  # level-0 px per truth px
    meta: dict


# ----------------------------------------------------------------------------------------------
# scene


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Unit-SD Gaussian-smoothed noise: the irregular part of the tissue outlines."""
    f = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return f / (f.std() + 1e-12)


def _piece(rng: np.random.Generator, shape, cy, cx, r, n_holes: int, hole_r: float, gap: float) -> np.ndarray:
    """Wobbly ellipse of mean radius ``r`` (label px) with up to ``n_holes`` round holes of radius
    ``hole_r``, on its long axis, at least ``gap`` from each other and from the outline."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    aspect, ang = rng.uniform(0.65, 0.95), rng.uniform(0, math.pi)
    u = (xx - cx) * math.cos(ang) + (yy - cy) * math.sin(ang)
    v = (-(xx - cx) * math.sin(ang) + (yy - cy) * math.cos(ang)) / aspect
    theta = np.arctan2(v, u)
    wobble = 1 + sum(rng.uniform(0.02, 0.06) * np.cos(k * theta + rng.uniform(0, 2 * math.pi)) for k in range(2, 6))
    f = (r * wobble - np.hypot(u, v)) * aspect  # ≈ signed distance to the outline, label px
    inner = 0.75 * r  # the outline never comes closer to the centre along the long axis (wobble ≤ 24 %)
    if n_holes >= 2 and 2 * hole_r + 1.5 * gap > inner:
        n_holes = 1  # too small a piece for two holes apart
    if n_holes == 1 and hole_r + gap > inner * aspect:
        n_holes = 0
    d = hole_r + gap / 2 if n_holes == 2 else 0.0
    for side in (-1, 1)[2 - n_holes:] if n_holes else ():
        f = np.minimum(f, np.hypot(xx - cx - side * d * math.cos(ang), yy - cy - side * d * math.sin(ang)) - hole_r)
    return f


def _stroke(shape, points: np.ndarray, width: float) -> np.ndarray:
    """Field of a pen stroke ``width`` label px wide along the polyline ``points`` (x, y)."""
    canvas = np.full(shape, 255, np.uint8)
    cv2.polylines(canvas, [np.round(points).astype(np.int32)], False, 0, 1)
    return (width / 2 - cv2.distanceTransform(canvas, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)).astype(np.float32)


def _curve(rng: np.random.Generator, start, end, bend: float, n: int = 200) -> np.ndarray:
    """Quadratic Bézier from ``start`` to ``end`` bowed sideways by ``bend`` × its length."""
    p0, p2 = np.asarray(start, float), np.asarray(end, float)
    normal = np.array([-(p2 - p0)[1], (p2 - p0)[0]])
    p1 = (p0 + p2) / 2 + bend * normal
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _shade(rng: np.random.Generator, shape: tuple[int, int], um: float, shadow: bool, bubbles: int) -> np.ndarray:
    """Light let through by neutral artefacts (label px; drawn with the long axis along x): a
    coverslip-edge shadow along the top and left edges (a dark line 80–200 µm in, over a darkening
    that fades within ~0.5 mm), and ``bubbles`` air bubbles of radius 150–400 µm with dark rims."""
    H, W = shape
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    dark = np.zeros(shape, np.float32)  # optical density of the artefacts
    if shadow:
        d = np.minimum(yy, xx * 2) / um  # µm from the edge (the left edge's band is half as wide)
        line = rng.uniform(80, 200)
        dark += 0.6 * np.exp(-d / 150) + 0.9 * np.exp(-(((d - line) / 25) ** 2))
    for _ in range(bubbles):
        x, y, r = rng.uniform(0.05, 0.95) * W, rng.uniform(0.1, 0.9) * H, rng.uniform(150, 400) * um
        dark += 0.7 * np.exp(-(((np.hypot(yy - y, xx - x) - r) / (15 * um)) ** 2))
    return np.exp(-dark)


def _stain_map(fields: list[np.ndarray], centres: list[tuple[float, float, float]], stains) -> float | np.ndarray:
    """Stain intensity per label px: that of the piece (``fields``, ``centres``: x, y, radius)
    whose field is highest there.  A piece's stain is a number, or a pair (left, right) that fades
    linearly across it; one number for all pieces gives a number."""
    stains = tuple(stains) if isinstance(stains, (tuple, list)) else (stains,) * len(fields)
    if all(not isinstance(v, (tuple, list)) for v in stains) and len(set(stains)) == 1:
        return float(stains[0])
    if len(stains) != len(fields):
        raise ValueError(f"{len(stains)} stain values for {len(fields)} tissue pieces")
    owner = np.argmax(np.stack(fields), axis=0)
    out = np.ones(owner.shape, np.float32)
    xx = np.arange(owner.shape[1], dtype=np.float32)[None, :].repeat(owner.shape[0], 0)
    for i, ((cx, _, r), v) in enumerate(zip(centres, stains)):
        a, b = v if isinstance(v, (tuple, list)) else (v, v)
        where = owner == i
        out[where] = (a + (b - a) * np.clip((xx - cx + r) / (2 * r), 0, 1))[where]
    return out


def make_scene(rng: np.random.Generator, shape: tuple[int, int], label_mpp: float, *, pieces: int = 3,
               holes: bool = True, pens: tuple[str, ...] = (), dust: int = 0, tissue: bool = True,
               stain: float | tuple = 1.0, glass: tuple[int, int, int] = GLASS, shadow: bool = False,
               bubbles: int = 0) -> Scene:
    """A slide's scene on a label grid of ``shape`` at ``label_mpp`` µm/px.

    Pieces sit side by side along the long axis (on a slide 4 mm wide, each ≥ 0.3 mm², far above
    the default minimum area); holes have radius ≥ 120 µm (≥ 45 000 µm², over twice the default
    minimum hole) and lie ≥ 80 µm from each other and from the outline.  A pen
    named in ``pens`` is a stroke 250–400 µm wide: the first crosses a tissue piece from the glass,
    a second is an arc around a piece, ``black`` a short marker line.  Dust specks (radius
    10–60 µm, so < 12 000 µm²) lie on glass only.  ``stain`` scales the tissue's optical density
    (see :func:`_stain_map` for one value per piece), ``glass`` is the background colour, and
    ``shadow`` and ``bubbles`` add neutral artefacts (:func:`_shade`)."""
    gh, gw = shape
    um = 1 / label_mpp  # label px per µm
    transpose = gh > gw
    H, W = (gw, gh) if transpose else (gh, gw)  # draw with the long axis along x
    t = np.full((H, W), -1e3, np.float32)
    centres, fields = [], []
    if tissue and pieces:
        cell = W / pieces
        for i in range(pieces):
            r = min(cell, H) * rng.uniform(0.30, 0.36)
            cx, cy = cell * (i + 0.5) + rng.uniform(-0.05, 0.05) * cell, H / 2 + rng.uniform(-0.08, 0.08) * H
            n_holes = int(rng.integers(1, 3)) if holes else 0
            hole_r = max(120 * um, r * rng.uniform(0.12, 0.18))
            fields.append(_piece(rng, (H, W), cy, cx, r, n_holes, hole_r, gap=80 * um))
            t = np.maximum(t, fields[-1])
            centres.append((cx, cy, r))
        t += 0.6 * _smooth_noise(rng, (H, W), max(2.0, 40 * um))  # rough outline, a few µm

    def drawn(a):  # a field drawn with the long axis along x, in the scene's orientation
        return a.T.copy() if transpose and isinstance(a, np.ndarray) else a

    scene = Scene(drawn(t), stain=drawn(_stain_map(fields, centres, stain)) if fields else 1.0, glass=tuple(glass))

    placed_fields = []  # the overlays as drawn (long axis along x)

    def add(f: np.ndarray, colour, code) -> None:
        placed_fields.append(f)
        scene.overlays.append((drawn(f), colour, code))

    for k, name in enumerate(pens):
        width = rng.uniform(250, 400) * um
        if name == "black":  # a short marker dash near a corner, partly on tissue if any
            x0, y0 = W * rng.uniform(0.1, 0.2), H * rng.uniform(0.15, 0.25)
            pts = _curve(rng, (x0, y0), (x0 + W * 0.2, y0 + H * 0.1), 0.1)
        elif k == 0 and centres:  # from the glass above a piece, through it, ending inside it
            cx, cy, r = centres[int(rng.integers(len(centres)))]
            pts = _curve(rng, (cx - 0.3 * r, H * 0.04), (cx + 0.4 * r, cy + 0.3 * r), rng.uniform(-0.15, 0.15))
        elif centres:  # an arc around part of a piece, as pathologists circle a region
            cx, cy, r = centres[-1]
            a0 = rng.uniform(0, 2 * math.pi)
            a = np.linspace(a0, a0 + rng.uniform(2.0, 3.0), 200)
            pts = np.stack([cx + 1.05 * r * np.cos(a), cy + 1.05 * r * np.sin(a)], 1)
        else:  # pen only: strokes across the glass
            y = H * (k + 1) / (len(pens) + 1)
            pts = _curve(rng, (W * 0.1, y), (W * 0.9, y + H * rng.uniform(-0.1, 0.1)), rng.uniform(-0.2, 0.2))
        add(_stroke((H, W), pts, width), INKS[name], PEN)

    if dust:
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        placed = 0
        for _ in range(dust * 20):
            if placed == dust:
                break
            x, y, r = rng.uniform(0.03, 0.97) * W, rng.uniform(0.03, 0.97) * H, rng.uniform(10, 60) * um
            if t[int(y), int(x)] > -(r + 100 * um) or any(f[int(y), int(x)] > -(r + 100 * um)
                                                          for f in placed_fields):
                continue  # on glass only, clear of tissue and ink
            colour = DUST_COLOURS[int(rng.integers(len(DUST_COLOURS)))]
            add(r - np.hypot(yy - y, xx - x), colour, DUST)
            placed += 1
    if shadow or bubbles:  # after everything else: the other presets keep their random draws
        scene.shade = drawn(_shade(rng, (H, W), um, shadow, bubbles))
    return scene


# ----------------------------------------------------------------------------------------------
# rendering


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


# ----------------------------------------------------------------------------------------------
# presets and truth

PRESETS: dict[str, dict] = {
    "pieces_with_holes": dict(pieces=3, holes=True),
    "pen_marks": dict(pieces=2, holes=True, pens=("blue", "green", "black")),
    "dust": dict(pieces=2, holes=True, dust=40),
    "blank": dict(tissue=False, dust=5),
    "pen_only": dict(tissue=False, pens=("blue", "green")),
}
# Each stain intensity on each background, with a pen stroke, dust, a coverslip-edge shadow and
# bubbles: "faint_on_grey", ...; and "mixed_stain": a normal, a faint, and a piece fading from
# normal to faint (faint tissue joined to a clear core).
ARTEFACTS = dict(pieces=3, holes=True, pens=("blue",), dust=12, shadow=True, bubbles=4)
STAIN_PRESETS = {f"{stain}_on_{bg}": dict(ARTEFACTS, stain=s, glass=colour)
                 for stain, s in STAINS.items() for bg, colour in BACKGROUNDS.items()}
STAIN_PRESETS["mixed_stain"] = dict(ARTEFACTS, stain=(1.0, STAINS["faint"], (1.0, STAINS["faint"])))
PRESETS.update(STAIN_PRESETS)


def _saturation(renderer: _Renderer, labels: np.ndarray, f: int) -> dict:
    """HSV saturation (0–255) of the tissue as rendered at the truth grid (every k-th px of a large
    one, so that at most 1024 are rendered along a side), away from its edges."""
    k = -(-max(labels.shape) // 1024)
    labels = labels[::k, ::k]
    rgb = renderer.region(0, 0, labels.shape[1], labels.shape[0], f * k)
    inner = cv2.erode((labels == TISSUE).view(np.uint8), np.ones((5, 5), np.uint8)).view(bool)
    if not inner.any():
        return {}
    sat = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1][inner]
    return {k: float(np.percentile(sat, q)) for k, q in (("p10", 10), ("median", 50), ("p90", 90))}


def generate(path: str | os.PathLike, preset: str = "pen_marks", size: tuple[int, int] = (8192, 6144),
             mpp: float = 0.5, *, seed: int = 0, label_mpp: float = 8.0, workers: int = 2, pyramid: bool = True,
             **scene_args) -> SyntheticSlide:
    """Write slide ``path`` of a preset (see :data:`PRESETS`; ``scene_args`` override it) and its truth.

    ``size`` is level-0 (width, height) px at ``mpp`` µm/px; the truth grid is at ``label_mpp``
    µm/px, so ``label_mpp / mpp`` must be an integer dividing both sides.  ``pyramid=False``
    writes level 0 alone as a generic tiled TIFF (see :func:`write_slide`)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    f = label_mpp / mpp
    W, H = size
    if abs(f - round(f)) > 1e-9 or W % round(f) or H % round(f):
        raise ValueError(f"{path}: size {W}x{H} px at {mpp} µm/px is not a whole number of {label_mpp} µm label px")
    f = round(f)
    rng = np.random.default_rng(seed)
    scene = make_scene(rng, (H // f, W // f), label_mpp, **(PRESETS[preset] | scene_args))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_slide(path, scene, (W, H), mpp, label_mpp, seed=seed, workers=workers, pyramid=pyramid)
    labels = scene.labels
    truth = labels == TISSUE
    px_mm2 = label_mpp**2 / 1e6
    meta = {"slide": path.name, "preset": preset, "seed": seed, "width": W, "height": H, "mpp": mpp,
            "truth_mpp": label_mpp, "truth_downsample": float(f),
            "classes": {"background": BACKGROUND, "tissue": TISSUE, "pen": PEN, "dust": DUST, "artefact": ARTEFACT},
            **{f"{name}_area_mm2": round(float((labels == code).sum()) * px_mm2, 4)
               for name, code in (("tissue", TISSUE), ("pen", PEN), ("dust", DUST), ("artefact", ARTEFACT))},
            "tissue_saturation": _saturation(_Renderer(scene, mpp, label_mpp, seed), labels, f)}
    stem = path.parent / path.stem
    for suffix, image in ((".truth.png", truth.astype(np.uint8) * 255), (".labels.png", labels)):
        with atomic_path(f"{stem}{suffix}") as tmp:
            tmp.write_bytes(cv2.imencode(".png", image)[1].tobytes())
    with atomic_path(f"{stem}.truth.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
    return SyntheticSlide(path, truth, labels, mpp, float(f), meta)


def read_truth(slide_path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Truth mask (bool, truth grid) and its metadata, written beside a slide by :func:`generate`."""
    stem = Path(slide_path).parent / Path(slide_path).stem
    png, js = Path(f"{stem}.truth.png"), Path(f"{stem}.truth.json")
    for p in (png, js):
        if not p.exists():
            raise FileNotFoundError(f"{p}: no ground truth beside {slide_path}")
    return cv2.imread(str(png), cv2.IMREAD_GRAYSCALE) > 0, json.loads(js.read_text())


def large_benchmark_slide(path: str | os.PathLike, size: int = 40_000, mpp: float = 0.25, *, seed: int = 0,
                          workers: int = 2, pyramid: bool = True, label_mpp: float = 8.0) -> SyntheticSlide:
    """A ``size`` × ``size`` px slide at ``mpp`` µm/px: three tissue pieces with holes, a blue pen
    stroke through one of them, and a few dust specks; without ``pyramid``, level 0 alone in a
    generic tiled TIFF.  ``label_mpp / mpp`` must divide ``size`` (5 µm for 30 000 px at 0.25)."""
    return generate(path, "pieces_with_holes", (size, size), mpp, seed=seed, workers=workers,
                    pens=("blue",), dust=8, pyramid=pyramid, label_mpp=label_mpp)
