"""Tissue segmentation on a thumbnail at a fixed µm/px, written as GeoJSON for QuPath.

Classical by default: saturation separates stained tissue from the white, grey and black of
glass, so we blur the saturation channel, threshold it with Otsu (never below a floor, so a blank
slide stays blank), close small gaps and remove specks smaller than a physical area; holes larger
than ``min_hole_um2`` stay holes.  Marker ink is not tissue: blue and green pen (by hue and
saturation) and near-black ink or dust (by value) are found first, left out of the blur (so that
their colour does not bleed a rim onto the glass) and cut out of the mask with a small margin.

``method="model"`` swaps the pixel rules for a TorchScript network (``checkpoint``) that maps the
thumbnail to tissue logits or probabilities; the same area filters clean its mask.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from skimage import filters, morphology

from .io import atomic_path
from .slides import open_slide, read_thumbnail, slide_info

log = logging.getLogger(__name__)

METHODS = ("classical", "model")
PEN_HUE_SLACK = 15.0  # degrees past pen_hue_max that pixels joined to an ink core may have: ink over tissue


@dataclass(frozen=True)
class TissueParams:
    thumbnail_mpp: float = 8.0  # µm/px of the image the mask is computed on
    blur_um: float = 16.0  # Gaussian sigma, µm
    min_saturation: int = 20  # floor on the Otsu threshold (0–255)
    max_dark_value: int = 40  # pixels darker than this (HSV value, 0–255) are ink or dust, not tissue
    close_um: float = 32.0  # radius of the morphological closing, µm
    min_area_um2: float = 50_000.0  # tissue pieces smaller than this are dropped, µm²
    min_hole_um2: float = 20_000.0  # holes smaller than this are filled, µm²
    remove_pen: bool = True  # cut blue / green marker ink out of the tissue
    pen_hue_min: float = 70.0  # pen ink has a hue in [pen_hue_min, pen_hue_max) degrees, green to blue (green
    pen_hue_max: float = 240.0  # above red); H&E absorbs green at least as much as red: hue 240–360–60
    pen_min_saturation: int = 60  # saturation (0–255) of ink cores; pen-hued pixels joined to a core are ink too
    pen_margin_um: float = 8.0  # also cut this far around ink and near-black pixels (their mixed rim), µm
    method: str = "classical"  # "classical" or "model"
    checkpoint: str | None = None  # TorchScript file for method "model"


def _disk(radius_px: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius_px + 1, 2 * radius_px + 1))


def marker_mask(rgb: np.ndarray, mpp: float, params: TissueParams = TissueParams()) -> np.ndarray:
    """Pixels of marker ink or dust in an RGB image at ``mpp`` µm/px: near-black (any hue), and,
    with ``remove_pen``, blue or green pen.

    Pen hues are those where green exceeds red, which H&E never shows: both stains absorb green at
    least as strongly as red.  Pen is found with hysteresis: cores of saturated pen hue, grown into
    the connected pixels that are still coloured and of pen hue or a little past it (the pale,
    glass-mixed edge of a stroke; blue ink over pink tissue, whose red and green come out about
    equal); gaps inside the ink smaller than ``min_hole_um2`` are ink too.  Tissue-marking dye
    on a resection margin has pen hues as well, and is cut out with the pen."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)  # OpenCV: hue in 2° steps (0–179), S and V 0–255
    marker = hsv[..., 2] < params.max_dark_value
    if params.remove_pen:
        hue, sat = hsv[..., 0].astype(np.float32) * 2, hsv[..., 1]
        weak = (hue >= params.pen_hue_min) & (hue < params.pen_hue_max + PEN_HUE_SLACK)
        weak &= sat > params.min_saturation
        core = weak & (hue < params.pen_hue_max) & (sat >= params.pen_min_saturation)
        n, labels = cv2.connectedComponents(weak.view(np.uint8), connectivity=8)
        if n > 1:
            has_core = np.zeros(n, bool)
            has_core[labels[core]] = True
            has_core[0] = False
            pen = has_core[labels]
            if pen.any():
                pen = morphology.remove_small_holes(pen, max_size=max(1, int(params.min_hole_um2 / mpp**2)))
            marker |= pen
    return marker


def _masked_blur(values: np.ndarray, keep: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``values`` over the ``keep`` pixels only (normalised convolution)."""
    w = keep.astype(np.float32)
    num = cv2.GaussianBlur(values.astype(np.float32) * w, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    den = cv2.GaussianBlur(w, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 1e-3)


def _clean(mask: np.ndarray, mpp: float, params: TissueParams, cut: np.ndarray | None = None) -> np.ndarray:
    """Drop pieces below ``min_area_um2`` and fill holes below ``min_hole_um2``.

    ``cut`` pixels (ink) stay out whatever the size of the hole they make, and do not make specks:
    tissue joined through them counts as one piece, so a stroke across a piece does not turn a
    slice of it into a speck that is dropped."""
    px_area = mpp * mpp
    cut = np.zeros(mask.shape, bool) if cut is None else cut
    mask = mask & ~cut
    n, labels = cv2.connectedComponents((mask | cut).view(np.uint8), connectivity=4)
    area = np.bincount(labels[mask], minlength=n)  # tissue px of each piece
    mask = (area * px_area >= params.min_area_um2)[labels] & mask
    mask = morphology.remove_small_holes(mask, max_size=max(1, int(params.min_hole_um2 / px_area)))
    return mask & ~cut


def _segment(rgb: np.ndarray, mpp: float, params: TissueParams) -> tuple[np.ndarray, np.ndarray]:
    """(tissue mask, marker mask) of an RGB image at ``mpp`` µm/px."""
    if params.method == "model":
        return _clean(_model_mask(rgb, params.checkpoint), mpp, params), np.zeros(rgb.shape[:2], bool)
    if params.method != "classical":
        raise ValueError(f"unknown tissue method {params.method!r}; choose from {METHODS}")
    marker = marker_mask(rgb, mpp, params)
    keep = ~marker
    saturation = _masked_blur(cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1], keep, params.blur_um / mpp)
    threshold = params.min_saturation
    values = saturation[keep]
    if values.size and values.max() > params.min_saturation:
        threshold = max(threshold, float(filters.threshold_otsu(values)))
    mask = (saturation > threshold) & keep
    mask = cv2.morphologyEx(mask.view(np.uint8), cv2.MORPH_CLOSE, _disk(max(1, round(params.close_um / mpp))),
                            borderType=cv2.BORDER_REPLICATE).view(bool)
    margin = round(params.pen_margin_um / mpp)
    cut = cv2.dilate(marker.view(np.uint8), _disk(margin)).view(bool) if margin > 0 else marker
    return _clean(mask, mpp, params, cut), marker


def segment_tissue(rgb: np.ndarray, mpp: float, params: TissueParams = TissueParams()) -> np.ndarray:
    """Boolean tissue mask of an RGB image at ``mpp`` µm/px (marker ink excluded)."""
    return _segment(rgb, mpp, params)[0]


def load_segmenter(checkpoint: str | os.PathLike | None):
    """The TorchScript tissue model at ``checkpoint``, on the CPU; loaded once per process and file version."""
    path = Path(checkpoint) if checkpoint else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"tissue model checkpoint not found: {str(checkpoint or '')!r} "
                                "(TissueParams.checkpoint, a TorchScript file)")
    return _load_torchscript(str(path.resolve()), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _load_torchscript(path: str, mtime_ns: int):
    import torch  # heavy: only for method "model"

    with warnings.catch_warnings():  # torch 2.12 deprecates TorchScript, which still is the portable format
        warnings.simplefilter("ignore", DeprecationWarning)
        model = torch.jit.load(path, map_location="cpu")
    return model.eval()


def _model_mask(rgb: np.ndarray, checkpoint: str | None) -> np.ndarray:
    """Tissue mask from the model: input (1, 3, H, W) float in [0, 1]; output (1, 1, H, W) or
    (1, H, W) probabilities, or logits (any value outside [0, 1]: sigmoid first); tissue > 0.5."""
    import torch

    model = load_segmenter(checkpoint)
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div_(255).unsqueeze(0)
    with torch.inference_mode():
        y = model(x).float()
    h, w = rgb.shape[:2]
    if tuple(y.shape) not in ((1, 1, h, w), (1, h, w)):
        raise ValueError(f"{checkpoint}: model output has shape {tuple(y.shape)}, expected (1, 1, {h}, {w}) "
                         f"or (1, {h}, {w}) for an input of (1, 3, {h}, {w})")
    y = y.reshape(h, w)
    if y.min() < 0 or y.max() > 1:
        y = torch.sigmoid(y)
    return (y > 0.5).numpy()


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
        mask, marker = _segment(thumb, thumb_mpp, params)
        polygons = mask_to_polygons(mask, downsample)
        area_mm2 = float(mask.sum()) * thumb_mpp**2 / 1e6
        meta.update(mpp=info.mpp, width=info.width, height=info.height, vendor=info.vendor,
                    thumbnail_downsample=downsample, tissue_area_mm2=round(area_mm2, 4),
                    marker_area_mm2=round(float(marker.sum()) * thumb_mpp**2 / 1e6, 4),
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
