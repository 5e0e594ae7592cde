"""Tissue segmentation on a thumbnail at a fixed µm/px (written as GeoJSON for QuPath by
:mod:`preprocessing.tissue_geojson`).

Classical by default.  Stain absorbs the three colours unequally; glass, a grey tint of the
light, the shadow of a coverslip edge, the rim of an air bubble and grey dust absorb them alike.
So each pixel's light is divided by the slide's own glass colour (the median colour of its
brightest mode), and tissue is where the three channels then differ: the *chroma*
``255 · (max − min)`` of those ratios, after a median filter (which smooths without moving edges).
On bright tissue it is about the HSV saturation: ≈ 80 for normal H&E, 8–15 for very faint.

Thresholds are judged per slide: never below a multiple of the glass's own chroma noise, and
otherwise floors far below normal staining, with hysteresis: a piece needs a *core* above
``core_chroma`` and keeps the connected pixels down to ``edge_chroma`` (faint tissue beside or
joined to stronger tissue).  So low a threshold would also take in the colour that optics and
JPEG spread a few pixels around strong stain, so a pixel must also reach half the chroma of the
strongest pixel within ``contrast_um``: edges sit at half their contrast, faint or not.  Thin
rims of colour along ink and along grey artefacts (their pale edge, JPEG's colour fringe) are
dropped.  Then small gaps are closed, specks smaller than a physical area removed; holes larger
than ``min_hole_um2`` stay holes.  Marker ink is not tissue: blue and green pen (by hue and
saturation) and near-black ink or dust (by value) are found first, painted over with the glass
colour before the filter (so that their colour does not bleed onto the glass) and cut out of the
mask with a small margin.

``method="model"`` swaps the pixel rules for a TorchScript network (``checkpoint``) that maps the
thumbnail to tissue logits or probabilities; the same area filters clean its mask.
"""
from __future__ import annotations

import functools
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

METHODS = ("classical", "model")
PEN_HUE_SLACK = 15.0  # degrees past pen_hue_max that pixels joined to an ink core may have: ink over tissue
MAX_GLASS_SATURATION = 40  # HSV saturation (0–255) above which a slide's brightest mode is tissue, not glass
DARK = 0.8  # grey things with less than this share of the glass's light leave a rim of colour (see _drop_rims)


@dataclass(frozen=True)
class TissueParams:
    thumbnail_mpp: float = 8.0  # µm/px of the image the mask is computed on
    blur_um: float = 16.0  # radius of the median filter on the colours, µm
    core_chroma: float = 8.0  # a piece needs pixels this far from the glass colour (0–255, see module doc)
    edge_chroma: float = 5.0  # and keeps its connected pixels down to this chroma: faint tissue
    noise_sigmas: float = 4.0  # both thresholds stay this many SDs (core: twice) above the glass's chroma noise
    contrast_um: float = 24.0  # a px needs half the chroma of the strongest within this distance, µm
    min_saturation: int = 20  # pen-hued pixels need this HSV saturation (0–255) to be ink
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


def fill_holes(mask: np.ndarray, max_px: int) -> np.ndarray:
    """``mask`` with its holes (4-connected) of at most ``max_px`` px filled: skimage's
    ``remove_small_holes``, in one OpenCV labelling pass (twice as fast)."""
    n, labels = cv2.connectedComponents((~mask).view(np.uint8), connectivity=4)
    small = np.bincount(labels.ravel(), minlength=n) <= max_px
    small[0] = False  # label 0: the mask itself
    return mask | small[labels]


def connected_to(weak: np.ndarray, core: np.ndarray) -> np.ndarray:
    """Pixels of ``weak`` in an 8-connected component that holds a ``core`` pixel (hysteresis)."""
    n, labels = cv2.connectedComponents(weak.view(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(weak.shape, bool)
    has_core = np.zeros(n, bool)
    has_core[labels[core & weak]] = True
    has_core[0] = False
    return has_core[labels]


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
        core = (hue < params.pen_hue_max) & (sat >= params.pen_min_saturation)
        pen = connected_to(weak, core)
        if pen.any():
            pen = fill_holes(pen, max(1, int(params.min_hole_um2 / mpp**2)))
        marker |= pen
    return marker


def _hist_quantile(hist: np.ndarray, q: float) -> float:
    """The ``q`` quantile of the values whose histogram (one bin per integer value) is ``hist``,
    each integer ``v`` taken as spread evenly over [v - 0.5, v + 0.5): not a whole number."""
    cum = np.cumsum(hist, dtype=np.float64)
    target = q * cum[-1]
    v = int(np.searchsorted(cum, target, side="left"))
    before = cum[v - 1] if v else 0.0
    return v - 0.5 + (target - before) / max(float(hist[v]), 1e-12)


def glass_colour(rgb: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(RGB of bare glass, float32 (3,); the pixels taken as glass) judged from the slide itself.

    Glass is the brightest mode of the luminance histogram that holds a fair share of the pixels
    (≥ 10 % of the highest mode's count): coverslip shadows, bubbles and tissue are darker, and a
    few bright specks make no mode.  Its colour is the per-channel median of the pixels within
    the mode's half width.  A mode that is clearly coloured is no glass but tissue filling the
    image: then the glass is taken as neutral, as bright as that mode's brightest channel."""
    lum = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    hist = cv2.calcHist([lum], [0], keep.view(np.uint8), [256], [0, 256])[:, 0]
    if hist.sum() == 0:
        return np.full(3, 255, np.float32), np.zeros(lum.shape, bool)
    smooth = np.convolve(hist, cv2.getGaussianKernel(9, 1.5)[:, 0], mode="same")
    inner = smooth[1:-1]
    peaks = np.flatnonzero((inner >= smooth[:-2]) & (inner > smooth[2:])) + 1
    peaks = [int(p) for p in peaks if smooth[p] >= 0.1 * smooth.max()] or [int(np.argmax(smooth))]
    if smooth[255] >= 0.1 * smooth.max() and smooth[255] >= smooth[254]:
        peaks.append(255)  # clipped glass: its mode is the last bin
    peak = max(peaks)
    half = smooth[peak] / 2
    below = np.flatnonzero(smooth[:peak] < half)
    width = max(1, peak - int(below[-1])) if below.size else 1
    glass = keep & (np.abs(lum.astype(np.int16) - peak) <= width)
    colour = np.array([_hist_quantile(cv2.calcHist([rgb], [c], glass.view(np.uint8), [256], [0, 256])[:, 0], 0.5)
                       for c in range(3)], np.float32)
    if 255 * (colour.max() - colour.min()) / max(colour.max(), 1) > MAX_GLASS_SATURATION:
        colour[:] = colour.max()
    return np.maximum(colour, 1), glass


def glass_chroma(rgb: np.ndarray, glass: np.ndarray, marker: np.ndarray, radius_px: int) -> np.ndarray:
    """uint8 chroma against the glass: 255 · (max − min) over the channels of the light relative to
    ``glass`` (each channel divided by the glass's; light brighter than the glass carries no stain
    and is clipped to it), median-filtered over ``radius_px``; marker pixels are painted with the
    glass colour first.  0 on glass, in shadows and on grey things; about the HSV saturation on
    bright stained tissue (75–85 for normal H&E)."""
    lut = np.clip(np.arange(256, dtype=np.float32)[:, None] * (255 / glass[None, :]), 0, 255)
    lut = np.round(lut).astype(np.uint8)
    balanced = np.dstack([cv2.LUT(rgb[..., c], lut[:, c]) for c in range(3)])
    balanced[marker] = 255
    if radius_px > 0:
        balanced = cv2.medianBlur(balanced, 2 * radius_px + 1)
    r, g, b = cv2.split(balanced)
    return cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b))


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
    mask = fill_holes(mask, max(1, int(params.min_hole_um2 / px_area)))
    return mask & ~cut


@dataclass(frozen=True)
class Thresholds:
    """What the classical segmentation judged from one slide (recorded in its GeoJSON)."""

    glass_rgb: tuple[float, float, float]
    glass_chroma: float  # median chroma of the glass px (0–255): noise makes it > 0
    noise: float  # SD of the glass px's chroma, its top 1 % left out (specks, the rims of tissue)
    edge: float  # grow threshold on the chroma
    core: float  # seed threshold on the chroma


def _thresholds(chroma: np.ndarray, glass_px: np.ndarray, glass: np.ndarray, params: TissueParams) -> Thresholds:
    """Hysteresis thresholds for one slide: the floors, or the glass's own chroma noise if higher."""
    hist = cv2.calcHist([chroma], [0], glass_px.view(np.uint8), [256], [0, 256])[:, 0].astype(np.float64)
    if hist.sum() == 0:
        hist[0] = 1  # no glass seen: no noise either
    median = max(_hist_quantile(hist, 0.5), 0.0)
    values = np.arange(256)
    bulk = hist * (values <= _hist_quantile(hist, 0.99) + 0.5)
    mean = float((bulk * values).sum() / bulk.sum())
    noise = float(np.sqrt((bulk * (values - mean) ** 2).sum() / bulk.sum()))
    edge = max(params.edge_chroma, median + params.noise_sigmas * noise)
    core = max(params.core_chroma, median + 2 * params.noise_sigmas * noise, edge)
    return Thresholds(tuple(round(float(v), 1) for v in glass), round(float(median), 2), round(noise, 2),
                      round(float(edge), 2), round(float(core), 2))


def _half_contrast(mask: np.ndarray, chroma: np.ndarray, radius_px: int) -> np.ndarray:
    """``mask`` less its px whose chroma is under half the highest within ``radius_px``.

    Thresholds far below the stain's own level would take in every px that tissue touches, and
    the colour that JPEG's chroma blocks and the scanner's optics spread onto the glass beside
    strong stain; this puts the edge of a normal and of a faint piece alike at half their contrast.
    Texture inside tissue that falls below half of a neighbour is a pinhole the closing fills."""
    level = cv2.dilate(chroma, _disk(radius_px))
    return mask & (cv2.compare(chroma, (level >> 1) + (level & 1), cv2.CMP_GE) > 0)


def _drop_rims(mask: np.ndarray, dark: np.ndarray, radius_px: int) -> np.ndarray:
    """``mask`` less the parts thinner than 3 px within ``radius_px`` of ``dark`` pixels (ink,
    and grey things darker than glass: bubble rims, shadows, dust): the pale mixed edge of ink
    and JPEG's colour fringe along a dark edge make such rims; tissue beside them is thicker."""
    if not dark.any():
        return mask
    rim = cv2.dilate(dark.view(np.uint8), _disk(radius_px)).view(bool)
    rim &= ~cv2.morphologyEx(mask.view(np.uint8), cv2.MORPH_OPEN, _disk(1)).view(bool)
    return mask & ~rim


def _segment(rgb: np.ndarray, mpp: float, params: TissueParams) -> tuple[np.ndarray, np.ndarray, dict]:
    """(tissue mask, marker mask, what was judged from the slide) of an RGB image at ``mpp`` µm/px."""
    if params.method == "model":
        return _clean(_model_mask(rgb, params.checkpoint), mpp, params), np.zeros(rgb.shape[:2], bool), {}
    if params.method != "classical":
        raise ValueError(f"unknown tissue method {params.method!r}; choose from {METHODS}")
    marker = marker_mask(rgb, mpp, params)
    glass, glass_px = glass_colour(rgb, ~marker)
    radius = round(params.blur_um / mpp)
    chroma = glass_chroma(rgb, glass, marker, radius)
    found = _thresholds(chroma, glass_px, glass, params)
    mask = connected_to((chroma > found.edge) & ~marker, chroma > found.core)
    reach = max(1, round(params.contrast_um / mpp))
    mask = _half_contrast(mask, chroma, reach)
    grey = (cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) < DARK * float(glass.mean())) & (chroma <= found.edge)
    mask = _drop_rims(mask, marker | grey, reach)
    mask = cv2.morphologyEx(mask.view(np.uint8), cv2.MORPH_CLOSE, _disk(max(1, round(params.close_um / mpp))),
                            borderType=cv2.BORDER_REPLICATE).view(bool)
    margin = round(params.pen_margin_um / mpp)
    cut = cv2.dilate(marker.view(np.uint8), _disk(margin)).view(bool) if margin > 0 else marker
    return _clean(mask, mpp, params, cut), marker, asdict(found)


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
