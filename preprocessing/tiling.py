"""Patch grid at a target resolution (µm/px), kept where the tissue mask covers enough of a patch.

Coordinates are level-0 pixels of each patch's top-left corner, in an h5 file laid out as CLAM
and TRIDENT write theirs (``coords`` N×2 int64 with their attributes), so their readers and ours
are interchangeable.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np

from .io import atomic_path
from .tissue import TissueParams
from .tissue_geojson import polygons_to_mask, read_tissue, segment_slide

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


def write_coords(out_h5: str | os.PathLike, coords: np.ndarray, meta: dict, *, patch_size: int, size0: int,
                 target_mpp: float, overlap: int = 0, min_tissue: float = 0.0, status: str = "ok",
                 reason: str = "", source: str = "grid") -> None:
    """Write level-0 patch coordinates with the attributes CLAM's and TRIDENT's readers use.

    ``patch_size`` is px at ``target_mpp`` (TRIDENT's meaning); ``patch_size_level0`` is the same
    field of view at level 0, so readers that read level 0 and resize (TRIDENT, ours) get the
    right tissue. CLAM reads ``patch_size`` px at ``patch_level``: the same patches whenever the
    slide's level 0 is at the target resolution (TCGA 20× slides at 0.5 µm/px).
    """
    mpp0 = float(meta.get("mpp", target_mpp))
    attrs = {
        # CLAM
        "patch_size": int(patch_size), "patch_level": 0, "downsample": [size0 / patch_size] * 2,
        "downsampled_level_dim": [meta.get("width", 0), meta.get("height", 0)],
        "level_dim": [meta.get("width", 0), meta.get("height", 0)], "name": meta.get("slide_id", ""),
        # TRIDENT
        "patch_size_level0": int(size0), "overlap": int(overlap),
        "target_magnification": 10.0 / target_mpp, "level0_magnification": 10.0 / mpp0,
        # ours
        "target_mpp": float(target_mpp), "mpp": mpp0, "min_tissue": float(min_tissue),
        "status": status, "reason": reason, "source": source,
    }
    with atomic_path(out_h5) as tmp:
        with h5py.File(tmp, "w") as f:
            ds_coords = f.create_dataset("coords", data=np.asarray(coords, np.int64).reshape(-1, 2), dtype=np.int64)
            for key, value in attrs.items():
                ds_coords.attrs[key] = value
                f.attrs[key] = value


def draw_grid(tissue_png: str | os.PathLike, out_png: str | os.PathLike, coords: np.ndarray, size0: int,
              downsample: float) -> None:
    """The tissue QC thumbnail with every kept patch outlined in blue."""
    image = cv2.imread(str(tissue_png), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{tissue_png}: cannot read the tissue QC image")
    for x, y in np.asarray(coords):
        x0, y0 = int(x / downsample), int(y / downsample)
        x1, y1 = int((x + size0) / downsample), int((y + size0) / downsample)
        cv2.rectangle(image, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), (200, 80, 0), 1)
    ok, buf = cv2.imencode(".png", image)
    with atomic_path(out_png) as tmp:
        tmp.write_bytes(buf.tobytes())


def tile_slide(geojson_path: str | os.PathLike, out_h5: str | os.PathLike,
               params: TilingParams = TilingParams(), tissue_png: str | os.PathLike | None = None,
               qc_png: str | os.PathLike | None = None) -> dict:
    """Write the patch coordinates of one slide from its tissue GeoJSON; returns a summary.

    With ``tissue_png`` and ``qc_png`` it also draws the kept patches over the tissue thumbnail.
    """
    polygons, meta = read_tissue(geojson_path)
    status, reason = meta.get("status", "failed"), meta.get("reason", "no tissue metadata")
    coords = np.zeros((0, 2), np.int64)
    mpp0 = float(meta.get("mpp", params.target_mpp))
    size0 = max(1, round(params.patch_size * params.target_mpp / mpp0))
    step0 = max(1, round((params.patch_size - params.overlap) * params.target_mpp / mpp0))
    ds = float(meta.get("thumbnail_downsample", 1.0))
    if status == "ok":
        shape = (round(meta["height"] / ds), round(meta["width"] / ds))
        mask = polygons_to_mask(polygons, shape, ds)
        grid = grid_coords(meta["width"], meta["height"], size0, step0)
        coords = grid[tissue_fractions(mask, ds, grid, size0) >= params.min_tissue]
        if len(coords) == 0:
            status, reason = "skipped", f"no patch has tissue fraction >= {params.min_tissue}"
    log.info("%s: %d patches of %d px at %.3f µm/px (%s)", meta.get("slide_id"), len(coords),
             params.patch_size, params.target_mpp, status)
    write_coords(out_h5, coords, meta, patch_size=params.patch_size, size0=size0, target_mpp=params.target_mpp,
                 overlap=params.overlap, min_tissue=params.min_tissue, status=status, reason=reason)
    if tissue_png is not None and qc_png is not None:
        draw_grid(tissue_png, qc_png, coords, size0, ds)
    return {"slide_id": meta.get("slide_id"), "status": status, "reason": reason, "n_patches": int(len(coords))}


def import_coords(external_h5: str | os.PathLike, geojson_path: str | os.PathLike, out_h5: str | os.PathLike,
                  tissue_png: str | os.PathLike | None = None, qc_png: str | os.PathLike | None = None) -> dict:
    """Take patch coordinates from an existing CLAM or TRIDENT h5 file instead of tiling.

    Coordinates stay as they are (both tools write level-0 px); the target resolution follows
    from the file's level-0 patch size and the slide's µm/px. A slide whose segmentation failed
    keeps that status; one without a file fails with a clear reason.
    """
    _, meta = read_tissue(geojson_path)
    mpp0 = float(meta.get("mpp", 0) or 0)
    status, reason = meta.get("status", "failed"), meta.get("reason", "")
    coords, attrs = np.zeros((0, 2), np.int64), {"patch_size": 256, "patch_size_level0": 256}
    if not Path(external_h5).is_file():
        status, reason = "failed", f"{external_h5}: no coordinate file for this slide"
    elif status != "failed":
        coords, attrs = read_coords(external_h5)
        status, reason = ("ok", "") if len(coords) else ("skipped", f"{external_h5}: no coordinates")
    size0, patch_size = int(attrs["patch_size_level0"]), int(attrs["patch_size"])
    target_mpp = mpp0 * size0 / patch_size if mpp0 else float("nan")
    write_coords(out_h5, coords, meta, patch_size=patch_size, size0=size0, target_mpp=target_mpp,
                 overlap=int(attrs.get("overlap", 0)), status=status, reason=reason, source=str(external_h5))
    if tissue_png is not None and qc_png is not None:
        draw_grid(tissue_png, qc_png, coords, size0, float(meta.get("thumbnail_downsample", 1.0)))
    log.info("%s: %d patches taken from %s (%s)", meta.get("slide_id"), len(coords), external_h5, status)
    return {"slide_id": meta.get("slide_id"), "status": status, "reason": reason, "n_patches": int(len(coords))}


def segment_and_tile(slide_path: str | os.PathLike, out, tissue: TissueParams = TissueParams(),
                     tiling: TilingParams = TilingParams(), *, mpp_fallback: float | None = None,
                     coords: str | os.PathLike | None = None) -> dict:
    """One slide from its file to its patch coordinates: segment its tissue (``out.tissue``, GeoJSON, and
    ``out.tissue_png``), then tile it at ``tiling.target_mpp`` µm/px, or take ``coords`` (a CLAM or
    TRIDENT h5 file) instead, writing ``out.h5`` and its QC thumbnail ``out.png``.  ``out``: anything
    with those four attributes (the job's ``snakemake.output``, a namespace).  Returns the tiling summary."""
    segment_slide(slide_path, out.tissue, out.tissue_png, tissue, mpp_fallback)
    if coords is not None:
        return import_coords(coords, out.tissue, out.h5, tissue_png=out.tissue_png, qc_png=out.png)
    return tile_slide(out.tissue, out.h5, tiling, tissue_png=out.tissue_png, qc_png=out.png)


def read_coords(h5_path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Coordinates (level-0 px) and attributes from our, CLAM's or TRIDENT's patch h5 file."""
    with h5py.File(h5_path, "r") as f:
        coords = f["coords"][:].astype(np.int64)
        attrs = {**dict(f.attrs), **dict(f["coords"].attrs)}
    if "patch_size_level0" not in attrs:  # CLAM: patch_size is at patch_level
        ds = np.atleast_1d(attrs.get("downsample", [1.0]))[0]
        attrs["patch_size_level0"] = int(round(attrs["patch_size"] * float(ds)))
    return coords, attrs
