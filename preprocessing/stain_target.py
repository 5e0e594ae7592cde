"""The stain target: what a cohort's patches are normalised to, fitted once and stored as JSON.

It exists apart from :mod:`preprocessing.stain` (the colour maths and the per-batch
:class:`~preprocessing.stain.StainNormaliser`) because the target is built once per cohort, from
slides, by rule ``stain_target``, while normalisation runs on every batch of every ``features``
job.  The target is fitted with the same code as the per-patch estimate on one image: a reference
tile (:func:`read_image`), or a mosaic of patches sampled from the cohort (:func:`cohort_mosaic`),
and stored as JSON (:func:`fit_target`, :func:`write_target`; read back by :func:`read_target`).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from .stain import (ALPHA, BETA, IO, METHODS, MIN_TISSUE, macenko_vectors, max_concentrations, optical_density,
                    rgb_to_lab, vahadane_vectors)


def fit_target(method: str, rgb: np.ndarray, source: str) -> dict:
    """The target of ``method`` fitted on one uint8 RGB image (a reference tile or a cohort
    mosaic): JSON-ready, with where it came from and the image's sha256."""
    if method not in METHODS:
        raise ValueError(f"unknown stain_norm {method!r}; choose from {', '.join(METHODS)} or null")
    image = torch.from_numpy(np.ascontiguousarray(rgb[..., :3]))[None]
    target = {"method": method, "source": str(source), "image_sha256": hashlib.sha256(image.numpy().tobytes()).hexdigest(),
              "image_shape": list(rgb.shape[:2]), "io": IO, "alpha": ALPHA, "beta": BETA}
    if method == "reinhard":
        lab = rgb_to_lab(image).reshape(-1, 3)
        target.update(lab_mean=lab.mean(0).tolist(), lab_std=lab.std(0).tolist())
        return target
    od = optical_density(image)
    tissue = (od >= BETA).all(-1)
    if tissue.float().mean() < MIN_TISSUE:
        raise ValueError(f"stain target {source}: only {tissue.float().mean():.1%} of its pixels are stained")
    he = (macenko_vectors if method == "macenko" else vahadane_vectors)(od, tissue)
    max_c = max_concentrations(od @ torch.linalg.pinv(he).transpose(1, 2))
    if not (torch.isfinite(he).all() and torch.isfinite(max_c).all() and (max_c > 0).all()):
        raise ValueError(f"stain target {source}: no stain estimate ({method})")
    target.update(stain_matrix=he[0].tolist(), max_concentration=max_c[0].tolist())
    return target


def write_target(target: dict, path: str | os.PathLike) -> None:
    """The target as JSON, atomically."""
    from .io import write_text_atomic

    write_text_atomic(path, json.dumps(target, indent=1) + "\n")


def read_target(path: str | os.PathLike) -> dict:
    target = json.loads(Path(path).read_text())
    if target.get("method") not in METHODS:
        raise ValueError(f"{path}: not a stain target (method {target.get('method')!r})")
    return target


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A reference tile as uint8 RGB (PNG, JPEG, TIFF; alpha dropped)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def cohort_mosaic(slides: list[tuple[str, str]], n_patches: int = 64, seed: int = 0) -> np.ndarray:
    """A grid of ``n_patches`` patches (at the tiling's resolution and size) drawn evenly, seeded,
    from the patch coordinates of every slide of a cohort: ``slides`` is (slide path, patches h5)
    pairs.  Grid of ⌈√n⌉ columns and only full rows, so that no blank cell biases Lab statistics."""
    from .patch_reader import SlidePatches, read_plan
    from .tiling import read_coords

    pool = []
    for k, (slide, h5) in enumerate(slides):
        coords, attrs = read_coords(h5)
        if str(attrs.get("status", "ok")) == "ok":
            pool += [(k, i) for i in range(len(coords))]
    if not pool:
        raise ValueError("no patch in any slide of the cohort to fit a stain target on")
    rng = np.random.default_rng(seed)
    picked = sorted(pool[i] for i in rng.choice(len(pool), size=min(n_patches, len(pool)), replace=False))
    cols = int(np.ceil(np.sqrt(len(picked))))
    picked = picked[: max(1, len(picked) // cols) * cols] if len(picked) >= cols else picked
    cols = min(cols, len(picked))
    tiles = []
    for k in sorted({k for k, _ in picked}):
        slide, h5 = slides[k]
        coords, attrs = read_coords(h5)
        size = int(attrs["patch_size"])
        level, read_size = read_plan(slide, int(attrs["patch_size_level0"]), size)
        rows = [i for kk, i in picked if kk == k]
        patches = SlidePatches(slide, coords[rows], level, read_size, size)
        tiles += [patches[j].numpy() for j in range(len(rows))]
    grid = [np.concatenate(tiles[r * cols:(r + 1) * cols], axis=1) for r in range(len(tiles) // cols)]
    return np.concatenate(grid, axis=0)


def tiled_cohort_mosaic(slides: list[str], tissue, tiling, mpp_fallbacks: list[float | None], *,
                        coords: list[str] | None = None, n_patches: int = 64, seed: int = 0) -> np.ndarray:
    """:func:`cohort_mosaic` of slides not tiled yet: each is segmented and tiled as its own job will
    do it (``tissue``/``tiling`` params, µm/px fallbacks, CLAM/TRIDENT ``coords`` files), into a
    temporary folder, so the patches drawn are those the features will be normalised on."""
    import tempfile
    from types import SimpleNamespace

    from .tiling import segment_and_tile

    with tempfile.TemporaryDirectory(prefix="stain-target-") as tmp:
        pairs = []
        for k, slide in enumerate(slides):
            out = SimpleNamespace(**{key: os.path.join(tmp, f"{k}.{name}") for key, name in (
                ("tissue", "geojson"), ("tissue_png", "tissue.png"), ("h5", "h5"), ("png", "patches.png"))})
            segment_and_tile(slide, out, tissue, tiling, mpp_fallback=mpp_fallbacks[k],
                             coords=coords[k] if coords else None)
            pairs.append((slide, out.h5))
        return cohort_mosaic(pairs, n_patches, seed)
