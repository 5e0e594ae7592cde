"""Synthetic Aperio slides with a known tissue mask, to measure segmentation against the truth.

Why: real slides come without ground truth, and the cohort of :mod:`preprocessing.demo` holds
each slide in memory.  Here a scene is drawn once on a coarse *label grid* (``label_mpp`` µm/px,
by default the segmentation's 8 µm/px) as signed fields (> 0 inside, in label px): tissue pieces
with holes, marker-pen strokes and dust specks.  Every 256-px tile of every pyramid level is then
rendered on its own by bilinear interpolation of those fields plus H&E-like colour and texture,
and handed to tifffile one by one, so level 0 is never held in memory: a 40 000 × 40 000 px slide
(0.25 µm/px) is written in well under a minute.

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

from .demo import APERIO_HEAD
from .io import atomic_path

BACKGROUND, TISSUE, PEN, DUST = 0, 1, 2, 3  # label codes
GLASS = (241, 241, 238)
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

    @property
    def labels(self) -> np.ndarray:
        """Class of each label-grid pixel (its centre): ink over anything, dust on glass."""
        labels = np.where(self.tissue > 0, TISSUE, BACKGROUND).astype(np.uint8)
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


def make_scene(rng: np.random.Generator, shape: tuple[int, int], label_mpp: float, *, pieces: int = 3,
               holes: bool = True, pens: tuple[str, ...] = (), dust: int = 0, tissue: bool = True) -> Scene:
    """A slide's scene on a label grid of ``shape`` at ``label_mpp`` µm/px.

    Pieces sit side by side along the long axis (on a slide 4 mm wide, each ≥ 0.3 mm², far above
    the default minimum area); holes have radius ≥ 120 µm (≥ 45 000 µm², over twice the default
    minimum hole) and lie ≥ 80 µm from each other and from the outline.  A pen
    named in ``pens`` is a stroke 250–400 µm wide: the first crosses a tissue piece from the glass,
    a second is an arc around a piece, ``black`` a short marker line.  Dust specks (radius
    10–60 µm, so < 12 000 µm²) lie on glass only."""
    gh, gw = shape
    um = 1 / label_mpp  # label px per µm
    transpose = gh > gw
    H, W = (gw, gh) if transpose else (gh, gw)  # draw with the long axis along x
    t = np.full((H, W), -1e3, np.float32)
    centres = []
    if tissue and pieces:
        cell = W / pieces
        for i in range(pieces):
            r = min(cell, H) * rng.uniform(0.30, 0.36)
            cx, cy = cell * (i + 0.5) + rng.uniform(-0.05, 0.05) * cell, H / 2 + rng.uniform(-0.08, 0.08) * H
            n_holes = int(rng.integers(1, 3)) if holes else 0
            hole_r = max(120 * um, r * rng.uniform(0.12, 0.18))
            t = np.maximum(t, _piece(rng, (H, W), cy, cx, r, n_holes, hole_r, gap=80 * um))
            centres.append((cx, cy, r))
        t += 0.6 * _smooth_noise(rng, (H, W), max(2.0, 40 * um))  # rough outline, a few µm
    scene = Scene(t.T.copy() if transpose else t)

    def add(f: np.ndarray, colour, code) -> None:
        scene.overlays.append((f.T.copy() if transpose else f, colour, code))

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
                                                          for f, _, _ in scene.overlays):
                continue  # on glass only, clear of tissue and ink
            colour = DUST_COLOURS[int(rng.integers(len(DUST_COLOURS)))]
            add(r - np.hypot(yy - y, xx - x), colour, DUST)
            placed += 1
    return scene


# ----------------------------------------------------------------------------------------------
# rendering


def _periodic_noise(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """Unit-SD noise on an ``n`` × ``n`` torus, smoothed by a Gaussian of ``sigma`` px (in Fourier space)."""
    ky, kx = np.fft.fftfreq(n).astype(np.float32), np.fft.rfftfreq(n).astype(np.float32)
    gain = np.exp(-2 * (np.pi * sigma) ** 2 * (ky[:, None] ** 2 + kx[None, :] ** 2))
    f = scipy.fft.irfft2(scipy.fft.rfft2(rng.standard_normal((n, n), np.float32)) * gain, s=(n, n))
    return f / (f.std() + 1e-12)


def _textures(rng: np.random.Generator, mpp: float) -> tuple[np.ndarray, np.ndarray]:
    """Tissue and glass textures (uint8, ``TEXTURE`` px square) at ``mpp`` µm/px: eosin with
    hematoxylin nuclei (5–9 µm) where they are resolved, their mean colour where they are not,
    plus grain.  They wrap around (periodic stain, nuclei drawn across the edges), so a slide
    paved with them shows no seams."""
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
    c += rng.integers(-4, 5, (n, n, 3), dtype=np.int8)
    tissue = np.clip(c, 0, 255, out=c).astype(np.uint8)
    return tissue, glass


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
        self.textures: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        self.seed = seed

    def _bank(self, ds: float):
        if ds not in self.textures:
            self.textures[ds] = _textures(np.random.default_rng([self.seed, int(ds * 1000)]), self.mpp * ds)
        return self.textures[ds]

    def region(self, x0: int, y0: int, w: int, h: int, ds: float) -> np.ndarray:
        """RGB (h, w) of level px [x0, x0 + w) × [y0, y0 + h) of a level ``ds`` times coarser than level 0."""
        tissue_tex, glass_tex = self._bank(ds)
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
        if x0 % TILE == 0 and y0 % TILE == 0 and (w, h) == (TILE, TILE):  # a tile: a view of the texture
            sy, sx = slice(y0 % TEXTURE, y0 % TEXTURE + TILE), slice(x0 % TEXTURE, x0 % TEXTURE + TILE)

            def tiled(tex: np.ndarray) -> np.ndarray:
                return tex[sy, sx]
        else:
            iy, ix = np.arange(y0, y0 + h) % TEXTURE, np.arange(x0, x0 + w) % TEXTURE

            def tiled(tex: np.ndarray) -> np.ndarray:
                return tex[iy][:, ix]

        if not overlays and t.min() > half:
            return tiled(tissue_tex)
        if not overlays and t.max() < -half:
            return tiled(glass_tex)
        ys, xs = _interp(ly - wy0, wy1 - wy0), _interp(lx - wx0, wx1 - wx0)
        scale = self.f / ds  # level px per label px: edges are antialiased over one level px

        def alpha(f: np.ndarray) -> np.ndarray:
            return np.clip(_bilinear(f[window], ys, xs) * scale + 0.5, 0, 1)[..., None]

        a = alpha(self.scene.tissue)
        rgb = tiled(glass_tex).astype(np.float32)
        rgb += a * (tiled(tissue_tex).astype(np.float32) - rgb)
        for f, colour in overlays:
            rgb *= 1 - alpha(f) * (1 - np.float32(colour) / 255)
        return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)

    def tiles(self, width: int, height: int, ds: float) -> Iterator[np.ndarray]:
        """Row-major 256-px tiles of a level of ``width`` × ``height`` px."""
        for ty in range(-(-height // TILE)):
            for tx in range(-(-width // TILE)):
                yield self.region(tx * TILE, ty * TILE, TILE, TILE, ds)


def write_slide(path: str | os.PathLike, scene: Scene, size: tuple[int, int], mpp: float, label_mpp: float,
                *, seed: int = 0, quality: int = 85, workers: int = 2) -> None:
    """Write ``scene`` as an Aperio SVS (as :func:`preprocessing.demo.write_svs` lays it out:
    tiled JPEG levels at downsamples 1, 4, 16, 64, a stripped thumbnail as the second IFD,
    ``MPP`` and ``AppMag`` in the descriptions), tile by tile; ``workers`` threads encode JPEG."""
    path = Path(path)
    W, H = size
    renderer = _Renderer(scene, mpp, label_mpp, seed)
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


def generate(path: str | os.PathLike, preset: str = "pen_marks", size: tuple[int, int] = (8192, 6144),
             mpp: float = 0.5, *, seed: int = 0, label_mpp: float = 8.0, workers: int = 2,
             **scene_args) -> SyntheticSlide:
    """Write slide ``path`` of a preset (see :data:`PRESETS`; ``scene_args`` override it) and its truth.

    ``size`` is level-0 (width, height) px at ``mpp`` µm/px; the truth grid is at ``label_mpp``
    µm/px, so ``label_mpp / mpp`` must be an integer dividing both sides."""
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
    write_slide(path, scene, (W, H), mpp, label_mpp, seed=seed, workers=workers)
    labels = scene.labels
    truth = labels == TISSUE
    px_mm2 = label_mpp**2 / 1e6
    meta = {"slide": path.name, "preset": preset, "seed": seed, "width": W, "height": H, "mpp": mpp,
            "truth_mpp": label_mpp, "truth_downsample": float(f),
            "classes": {"background": BACKGROUND, "tissue": TISSUE, "pen": PEN, "dust": DUST},
            **{f"{name}_area_mm2": round(float((labels == code).sum()) * px_mm2, 4)
               for name, code in (("tissue", TISSUE), ("pen", PEN), ("dust", DUST))}}
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
                          workers: int = 2) -> SyntheticSlide:
    """A ``size`` × ``size`` px slide at ``mpp`` µm/px: three tissue pieces with holes, a blue pen
    stroke through one of them, and a few dust specks."""
    return generate(path, "pieces_with_holes", (size, size), mpp, seed=seed, workers=workers,
                    pens=("blue",), dust=8)
