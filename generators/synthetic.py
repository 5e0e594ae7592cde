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

This module holds the presets, :func:`generate` and the truth files; the scene is drawn in
:mod:`generators.synthetic_scene`, rendered and written in :mod:`generators.synthetic_render`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from preprocessing.io import atomic_path

from .synthetic_render import _Renderer, write_slide
from .synthetic_scene import ARTEFACT, BACKGROUND, DUST, GLASS, PEN, TISSUE, make_scene

GREY_GLASS = (214, 214, 210)  # a slightly grey background (darker illumination, tinted mountant)
STAINS = {"normal": 1.0, "light": 0.2, "faint": 0.1}  # optical density × this: HSV saturation ≈ 80, 18, 10
BACKGROUNDS = {"bright": GLASS, "grey": GREY_GLASS}


@dataclass
class SyntheticSlide:
    path: Path
    truth: np.ndarray  # bool, label grid
    labels: np.ndarray  # uint8 class codes, label grid
    mpp: float  # µm/px at level 0
    truth_downsample: float  # level-0 px per truth px
    meta: dict


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
