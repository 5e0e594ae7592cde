"""The scene of a synthetic slide: tissue pieces with holes, pen strokes, dust and neutral artefacts
as signed fields on a coarse label grid (> 0 inside, in label px), and the class of each grid px.

Why a module of its own: the layout is the slide's ground truth, independent of how it is later
rendered and written (:mod:`generators.synthetic_render`) and of the presets and truth files built
on it (:mod:`generators.synthetic`).  All random draws of a scene happen here, in a fixed order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

BACKGROUND, TISSUE, PEN, DUST, ARTEFACT = 0, 1, 2, 3, 4  # label codes; ARTEFACT: shadow or bubble on glass
GLASS = (241, 241, 238)
# Colour of the light that an ink or a speck lets through (multiplied into what lies beneath).
INKS = {"blue": (45, 75, 175), "green": (50, 150, 85), "black": (28, 28, 34)}
DUST_COLOURS = ((120, 118, 115), (70, 68, 66), (30, 30, 30), (225, 150, 190))  # grey, dark, black, debris


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

