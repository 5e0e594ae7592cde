"""Classical tissue segmentation on a thumbnail at a fixed µm/px, written as GeoJSON for QuPath.

Saturation separates stained tissue from the white, grey and black of glass, so we blur the
saturation channel, threshold it with Otsu (never below a floor, so a blank slide stays blank),
drop near-black pixels, close small gaps and remove specks smaller than a physical area.
Holes larger than ``min_hole_um2`` stay holes.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from skimage import filters, morphology

from .io import atomic_path
from .slides import SlideError, open_slide, read_thumbnail, slide_info

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TissueParams:
    thumbnail_mpp: float = 8.0  # µm/px of the image the mask is computed on
    blur_um: float = 16.0  # Gaussian sigma, µm
    min_saturation: int = 20  # floor on the Otsu threshold (0–255)
    max_dark_value: int = 40  # pixels darker than this (HSV value, 0–255) are artefacts, not tissue
    close_um: float = 32.0  # radius of the morphological closing, µm
    min_area_um2: float = 50_000.0  # tissue pieces smaller than this are dropped, µm²
    min_hole_um2: float = 20_000.0  # holes smaller than this are filled, µm²


def segment_tissue(rgb: np.ndarray, mpp: float, params: TissueParams = TissueParams()) -> np.ndarray:
    """Boolean tissue mask of an RGB image at ``mpp`` µm/px."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    saturation = filters.gaussian(hsv[..., 1].astype(np.float32), sigma=params.blur_um / mpp, preserve_range=True)
    value = hsv[..., 2]
    threshold = params.min_saturation
    if saturation.max() > params.min_saturation:
        threshold = max(threshold, float(filters.threshold_otsu(saturation)))
    mask = (saturation > threshold) & (value > params.max_dark_value)
    radius = max(1, round(params.close_um / mpp))
    mask = morphology.closing(mask, morphology.disk(radius))
    px_area = mpp * mpp
    mask = morphology.remove_small_objects(mask, max_size=max(1, int(params.min_area_um2 / px_area)))
    mask = morphology.remove_small_holes(mask, max_size=max(1, int(params.min_hole_um2 / px_area)))
    return mask


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


def draw_qc(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Thumbnail with the tissue outline in green and its holes included."""
    out = rgb.copy()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (0, 160, 0), max(1, round(min(rgb.shape[:2]) / 300)))
    return out


def segment_slide(slide_path: str | os.PathLike, geojson_out: str | os.PathLike, png_out: str | os.PathLike,
                  params: TissueParams = TissueParams(), mpp_fallback: float | None = None) -> dict:
    """Segment one slide; write its tissue polygons (GeoJSON) and a QC thumbnail (PNG).

    A slide that cannot be read is not an error here: its GeoJSON records ``status: failed`` and
    the reason, so that one bad file does not stop a batch, and the QC table reports it.
    A slide with no tissue records ``status: skipped``.
    """
    slide_id = Path(slide_path).name.removesuffix(".svs")
    meta: dict = {"slide_id": slide_id, "path": str(slide_path), "params": asdict(params)}
    try:
        slide = open_slide(slide_path)
        info = slide_info(slide, slide_path, mpp_fallback)
        thumb, downsample = read_thumbnail(slide, info.mpp, params.thumbnail_mpp)
        slide.close()
    except (SlideError, Exception) as err:  # noqa: BLE001 - any unreadable slide is recorded, not fatal
        log.error("%s: %s", slide_path, err)
        meta.update(status="failed", reason=str(err))
        polygons, thumb, mask = [], np.full((64, 64, 3), 255, np.uint8), np.zeros((64, 64), bool)
    else:
        mask = segment_tissue(thumb, info.mpp * downsample, params)
        polygons = mask_to_polygons(mask, downsample)
        area_mm2 = float(mask.sum()) * (info.mpp * downsample) ** 2 / 1e6
        meta.update(mpp=info.mpp, width=info.width, height=info.height, vendor=info.vendor,
                    thumbnail_downsample=downsample, tissue_area_mm2=round(area_mm2, 4),
                    status="ok" if polygons else "skipped", reason="" if polygons else "no tissue found")
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
        ok, buf = cv2.imencode(".png", cv2.cvtColor(draw_qc(thumb, mask), cv2.COLOR_RGB2BGR))
        tmp.write_bytes(buf.tobytes())
    with atomic_path(geojson_out) as tmp:
        tmp.write_text(json.dumps(collection))
    return meta


def read_tissue(geojson_path: str | os.PathLike) -> tuple[list, dict]:
    """Polygons (level-0 px) and slide metadata from a GeoJSON written by :func:`segment_slide`."""
    data = json.loads(Path(geojson_path).read_text())
    polygons = [f["geometry"]["coordinates"] for f in data.get("features", []) if f["geometry"]["type"] == "Polygon"]
    return polygons, data.get("slide", {})
