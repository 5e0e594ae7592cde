"""Patch grid at a target resolution (µm/px), kept where the tissue mask covers enough of a patch.

Coordinates are level-0 pixels of each patch's top-left corner, in an h5 file laid out as CLAM
and TRIDENT write theirs (``coords`` N×2 int64 with their attributes), so their readers and ours
are interchangeable.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import h5py
import numpy as np

from .io import atomic_path
from .tissue import polygons_to_mask, read_tissue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TilingParams:
    target_mpp: float = 0.5  # µm/px of the patches fed to the encoder
    patch_size: int = 256  # px at target_mpp
    overlap: int = 0  # px at target_mpp shared by neighbouring patches
    min_tissue: float = 0.5  # minimum fraction of a patch covered by the tissue mask


def grid_coords(width: int, height: int, patch_size_level0: int, step_level0: int) -> np.ndarray:
    """Top-left corners (level-0 px) of every whole patch that fits in the slide, row-major."""
    xs = np.arange(0, width - patch_size_level0 + 1, step_level0, dtype=np.int64)
    ys = np.arange(0, height - patch_size_level0 + 1, step_level0, dtype=np.int64)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def tissue_fractions(mask: np.ndarray, downsample: float, coords: np.ndarray, size_level0: int) -> np.ndarray:
    """Fraction of each patch covered by ``mask`` (a mask at ``downsample`` level-0 px per px)."""
    integral = np.pad(mask.astype(np.int64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    h, w = mask.shape
    x0 = np.clip(np.round(coords[:, 0] / downsample).astype(int), 0, w)
    y0 = np.clip(np.round(coords[:, 1] / downsample).astype(int), 0, h)
    x1 = np.clip(np.round((coords[:, 0] + size_level0) / downsample).astype(int), 0, w)
    y1 = np.clip(np.round((coords[:, 1] + size_level0) / downsample).astype(int), 0, h)
    inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    return inside / area


def tile_slide(geojson_path: str | os.PathLike, out_h5: str | os.PathLike,
               params: TilingParams = TilingParams()) -> dict:
    """Write the patch coordinates of one slide from its tissue GeoJSON; returns a summary."""
    polygons, meta = read_tissue(geojson_path)
    status, reason = meta.get("status", "failed"), meta.get("reason", "no tissue metadata")
    coords = np.zeros((0, 2), np.int64)
    mpp0 = float(meta.get("mpp", params.target_mpp))
    size0 = max(1, round(params.patch_size * params.target_mpp / mpp0))
    step0 = max(1, round((params.patch_size - params.overlap) * params.target_mpp / mpp0))
    if status == "ok":
        ds = float(meta["thumbnail_downsample"])
        shape = (round(meta["height"] / ds), round(meta["width"] / ds))
        mask = polygons_to_mask(polygons, shape, ds)
        grid = grid_coords(meta["width"], meta["height"], size0, step0)
        coords = grid[tissue_fractions(mask, ds, grid, size0) >= params.min_tissue]
        if len(coords) == 0:
            status, reason = "skipped", f"no patch has tissue fraction >= {params.min_tissue}"
    log.info("%s: %d patches of %d px at %.3f µm/px (%s)", meta.get("slide_id"), len(coords),
             params.patch_size, params.target_mpp, status)
    with atomic_path(out_h5) as tmp:
        with h5py.File(tmp, "w") as f:
            ds_coords = f.create_dataset("coords", data=coords, dtype=np.int64)
            attrs = {
                # CLAM
                "patch_size": params.patch_size, "patch_level": 0, "downsample": [size0 / params.patch_size] * 2,
                "level_dim": [meta.get("width", 0), meta.get("height", 0)], "name": meta.get("slide_id", ""),
                # TRIDENT
                "patch_size_level0": size0, "overlap": params.overlap,
                "target_magnification": 10.0 / params.target_mpp, "level0_magnification": 10.0 / mpp0,
                # ours
                "target_mpp": params.target_mpp, "mpp": mpp0, "min_tissue": params.min_tissue,
                "status": status, "reason": reason,
            }
            for key, value in attrs.items():
                ds_coords.attrs[key] = value
                f.attrs[key] = value
    return {"slide_id": meta.get("slide_id"), "status": status, "reason": reason, "n_patches": int(len(coords))}


def read_coords(h5_path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Coordinates (level-0 px) and attributes from our, CLAM's or TRIDENT's patch h5 file."""
    with h5py.File(h5_path, "r") as f:
        coords = f["coords"][:].astype(np.int64)
        attrs = {**dict(f.attrs), **dict(f["coords"].attrs)}
    if "patch_size_level0" not in attrs:  # CLAM: patch_size is at patch_level
        ds = np.atleast_1d(attrs.get("downsample", [1.0]))[0]
        attrs["patch_size_level0"] = int(round(attrs["patch_size"] * float(ds)))
    return coords, attrs
