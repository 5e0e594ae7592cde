"""One slide's tissue as files: segmented from its thumbnail, written as GeoJSON polygons (for
QuPath) with a QC preview PNG, and read back.

Kept apart from :mod:`preprocessing.tissue`, which computes a mask from pixels: this module holds the
per-slide driver and the file format (polygons in level-0 px, the ``slide`` metadata member) that
tiling, QC and the viewer read.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from .io import atomic_path
from .slides import open_slide, slide_info
from .thumbnails import read_thumbnail
from .tissue import METHODS, TissueParams, _segment, load_segmenter

log = logging.getLogger(__name__)


def mask_to_polygons(mask: np.ndarray, downsample: float) -> list[list[list[list[float]]]]:
    """GeoJSON polygon rings (outer ring then holes) in level-0 px, from a mask at ``downsample``."""
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]

    def ring(contour: np.ndarray) -> list[list[float]]:
        pts = (contour[:, 0, :].astype(np.float64) + 0.5) * downsample
        pts = [[round(float(x), 1), round(float(y), 1)] for x, y in pts]
        return pts + [pts[0]]

    polygons = []
    for i, (_, _, first_child, parent) in enumerate(hierarchy):
        if parent != -1 or len(contours[i]) < 3:
            continue
        rings = [ring(contours[i])]
        child = first_child
        while child != -1:
            if len(contours[child]) >= 3:
                rings.append(ring(contours[child]))
            child = hierarchy[child][0]
        polygons.append(rings)
    return polygons


def polygons_to_mask(polygons: list, shape: tuple[int, int], downsample: float) -> np.ndarray:
    """Rasterise GeoJSON polygons (level-0 px) onto a grid of ``shape`` at ``downsample``."""
    mask = np.zeros(shape, bool)
    for rings in polygons:
        pts = [np.round(np.asarray(r) / downsample - 0.5).astype(np.int32) for r in rings]
        # Each polygon on its own layer, so that its holes cannot erase another piece lying inside them.
        piece = np.zeros(shape, np.uint8)
        cv2.fillPoly(piece, pts[:1], 1)
        if len(pts) > 1:
            cv2.fillPoly(piece, pts[1:], 0)
            # A hole's ring runs through the centres of the tissue pixels around it: they stay tissue.
            cv2.polylines(piece, pts[1:], True, 1)
        mask |= piece.astype(bool)
    return mask


def draw_qc(rgb: np.ndarray, mask: np.ndarray, marker: np.ndarray | None = None) -> np.ndarray:
    """Thumbnail with the tissue outline in green (holes included) and removed ink or dust in red."""
    out = rgb.copy()
    width = max(1, round(min(rgb.shape[:2]) / 300))
    if marker is not None and marker.any():
        contours, _ = cv2.findContours(marker.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (220, 0, 0), width)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (0, 160, 0), width)
    return out


def segment_slide(slide_path: str | os.PathLike, geojson_out: str | os.PathLike, png_out: str | os.PathLike,
                  params: TissueParams = TissueParams(), mpp_fallback: float | None = None) -> dict:
    """Segment one slide; write its tissue polygons (GeoJSON) and a QC thumbnail (PNG).

    A slide that cannot be read is not an error here: its GeoJSON records ``status: failed`` and
    the reason, so that one bad file does not stop a batch, and the QC table reports it.
    A slide with no tissue records ``status: skipped``.  A bad configuration (unknown method,
    missing model checkpoint) is an error: it would fail every slide alike.
    """
    if params.method not in METHODS:
        raise ValueError(f"unknown tissue method {params.method!r}; choose from {METHODS}")
    if params.method == "model":
        load_segmenter(params.checkpoint)
    slide_id = Path(slide_path).name.rsplit(".", 1)[0]  # as preprocessing.inventory.slide_id
    meta: dict = {"slide_id": slide_id, "path": str(slide_path), "params": asdict(params)}
    try:
        with open_slide(slide_path) as slide:
            info = slide_info(slide, slide_path, mpp_fallback)
            thumb, downsample = read_thumbnail(slide, info.mpp, params.thumbnail_mpp)
    except Exception as err:  # noqa: BLE001 - any unreadable slide is recorded, not fatal
        log.error("%s", err if str(slide_path) in str(err) else f"{slide_path}: {err}")
        meta.update(status="failed", reason=str(err))
        polygons, thumb = [], np.full((64, 64, 3), 255, np.uint8)
        mask = marker = np.zeros((64, 64), bool)
    else:
        thumb_mpp = info.mpp * downsample
        mask, marker, judged = _segment(thumb, thumb_mpp, params)
        polygons = mask_to_polygons(mask, downsample)
        area_mm2 = float(mask.sum()) * thumb_mpp**2 / 1e6
        meta.update(mpp=info.mpp, width=info.width, height=info.height, vendor=info.vendor,
                    thumbnail_downsample=downsample, tissue_area_mm2=round(area_mm2, 4),
                    marker_area_mm2=round(float(marker.sum()) * thumb_mpp**2 / 1e6, 4),
                    status="ok" if polygons else "skipped", reason="" if polygons else "no tissue found",
                    thresholds=judged)
        log.info("%s: %d tissue pieces, %.2f mm²", slide_id, len(polygons), area_mm2)
    collection = {
        "type": "FeatureCollection",
        "slide": meta,  # foreign member: GeoJSON readers (QuPath) ignore it
        "features": [
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": rings},
             "properties": {"objectType": "annotation", "classification": {"name": "Tissue"}}}
            for rings in polygons
        ],
    }
    with atomic_path(png_out) as tmp:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(draw_qc(thumb, mask, marker), cv2.COLOR_RGB2BGR))
        tmp.write_bytes(buf.tobytes())
    with atomic_path(geojson_out) as tmp:
        tmp.write_text(json.dumps(collection))
    return meta


def read_tissue(geojson_path: str | os.PathLike) -> tuple[list, dict]:
    """Polygons (level-0 px) and slide metadata from a GeoJSON written by :func:`segment_slide`."""
    data = json.loads(Path(geojson_path).read_text())
    polygons = [f["geometry"]["coordinates"] for f in data.get("features", []) if f["geometry"]["type"] == "Polygon"]
    return polygons, data.get("slide", {})
