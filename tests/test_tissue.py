"""preprocessing.tissue: masks of known shapes, exact GeoJSON round trips, and per-slide outcomes."""
from __future__ import annotations

import json
import warnings

import cv2
import numpy as np
import pytest
import tifffile
from scipy import ndimage

from preprocessing.slides import open_slide, read_region_rgb
from preprocessing.thumbnails import read_thumbnail
from preprocessing.tissue import TissueParams, segment_tissue
from preprocessing.tissue_geojson import mask_to_polygons, polygons_to_mask, read_tissue, segment_slide

PINK = (230, 150, 190)
GLASS = 245
MPP = 8.0  # µm/px of the synthetic thumbnails below (the default TissueParams.thumbnail_mpp)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # skimage deprecations


def _image(shape, tissue: np.ndarray, colour=PINK, seed=0) -> np.ndarray:
    """White glass with ``tissue`` painted in ``colour``, plus a little pixel noise."""
    img = np.full((*shape, 3), GLASS, np.int16)
    img[tissue] = colour
    img += np.random.default_rng(seed).integers(-5, 6, img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return np.hypot(yy - cy, xx - cx) <= r


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_disc_with_hole_is_found_and_the_hole_stays_a_hole():
    shape = (200, 240)
    hole = _disc(shape, 100, 110, 20)  # 20 px = 160 µm radius: 80 000 µm², above min_hole_um2
    truth = _disc(shape, 100, 110, 60) & ~hole
    mask = segment_tissue(_image(shape, truth), MPP)
    assert mask.dtype == bool and mask.shape == shape
    assert _iou(mask, truth) > 0.9
    assert not mask[_disc(shape, 100, 110, 15)].any()  # the hole's core is not tissue
    assert mask[hole].mean() < 0.2


def test_blank_image_gives_an_empty_mask():
    shape = (150, 150)
    assert not segment_tissue(_image(shape, np.zeros(shape, bool)), MPP).any()
    assert not segment_tissue(np.full((*shape, 3), 255, np.uint8), MPP).any()


def test_specks_are_dropped_and_small_holes_filled():
    shape = (200, 260)
    params = TissueParams()
    big = _disc(shape, 100, 90, 60)
    small_hole = _disc(shape, 100, 90, 3)  # ~28 px × 64 µm² ≈ 1 800 µm² < min_hole_um2
    speck = _disc(shape, 100, 220, 6)  # ~113 px × 64 µm² ≈ 7 200 µm² < min_area_um2
    assert small_hole.sum() * MPP**2 < params.min_hole_um2 and speck.sum() * MPP**2 < params.min_area_um2
    mask = segment_tissue(_image(shape, (big & ~small_hole) | speck), MPP, params)
    assert not mask[_disc(shape, 100, 220, 10)].any()  # the speck is gone
    assert mask[small_hole].all()  # the small hole is filled
    assert _iou(mask, big) > 0.9


def test_dark_artefacts_are_not_tissue():
    shape = (200, 260)
    tissue = _disc(shape, 100, 80, 55)
    pen = _disc(shape, 100, 200, 40)  # saturated but nearly black: pen mark, not stain
    img = _image(shape, tissue)
    img[pen] = (20, 10, 30)
    mask = segment_tissue(img, MPP)
    assert not mask[pen].any()
    assert _iou(mask, tissue) > 0.9


def test_mask_scale_follows_mpp():
    """The same physical piece is kept or dropped the same way at two resolutions."""
    params = TissueParams()
    radius_um = 100.0  # area 31 400 µm² < min_area_um2 (50 000): dropped at any resolution
    for mpp in (4.0, 8.0):
        shape = (int(600 / mpp),) * 2
        r = radius_um / mpp
        small = _disc(shape, shape[0] / 2, shape[1] / 2, r)
        assert not segment_tissue(_image(shape, small), mpp, params).any()
        large = _disc(shape, shape[0] / 2, shape[1] / 2, 2 * r)  # 125 600 µm²: kept
        assert _iou(segment_tissue(_image(shape, large), mpp, params), large) > 0.85


def _shapes() -> np.ndarray:
    """A ring with an island in its hole, a rectangle touching the border and an L shape."""
    shape = (200, 240)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    r = np.hypot(yy - 100, xx - 110)
    mask = ((r <= 60) & (r > 25)) | (r <= 10)
    mask[0:30, 0:45] = True
    mask[150:195, 190:200] = True
    mask[185:195, 170:235] = True
    return mask


@pytest.mark.parametrize("downsample", [1.0, 4.0, 16.0, 15.37])
def test_polygons_round_trip_to_the_same_mask(downsample):
    mask = _shapes()
    polygons = mask_to_polygons(mask, downsample)
    assert len(polygons) == 4  # ring (with its hole), island, rectangle, L
    assert sorted(len(p) for p in polygons) == [1, 1, 1, 2]
    back = polygons_to_mask(polygons, mask.shape, downsample)
    np.testing.assert_array_equal(back, mask)


def test_polygons_are_closed_rings_in_level0_pixels():
    mask = np.zeros((50, 60), bool)
    mask[10:20, 30:45] = True  # rows 10..19, columns 30..44 at downsample 16
    (rings,) = mask_to_polygons(mask, 16.0)
    outer = np.asarray(rings[0])
    assert (outer[0] == outer[-1]).all()  # GeoJSON rings are closed
    # vertices are the centres of the corner pixels, in level-0 px
    assert outer[:, 0].min() == pytest.approx((30 + 0.5) * 16) and outer[:, 0].max() == pytest.approx((44 + 0.5) * 16)
    assert outer[:, 1].min() == pytest.approx((10 + 0.5) * 16) and outer[:, 1].max() == pytest.approx((19 + 0.5) * 16)


def test_empty_mask_has_no_polygons():
    assert mask_to_polygons(np.zeros((20, 20), bool), 4.0) == []
    assert not polygons_to_mask([], (20, 20), 4.0).any()


# ---------------------------------------------------------------------------------------------
# whole slides


def test_segment_slide_on_a_generated_slide(processed, blank_slide_id):
    sid = next(s for s in processed["tissue_meta"] if s != blank_slide_id)
    meta = processed["tissue_meta"][sid]
    assert meta["status"] == "ok" and meta["reason"] == ""
    assert (meta["width"], meta["height"]) == (1024, 768) and meta["mpp"] == pytest.approx(0.5)
    polygons, stored = read_tissue(processed["tissue"] / f"{sid}.geojson")
    assert stored == json.loads(json.dumps(meta))
    assert polygons
    points = np.concatenate([np.asarray(ring) for rings in polygons for ring in rings])
    assert (points >= 0).all()
    assert (points[:, 0] <= meta["width"]).all() and (points[:, 1] <= meta["height"]).all()
    # the polygons cover the slide's non-glass area (judged independently at pyramid level 1)
    with open_slide(meta["path"]) as slide:
        level1 = read_region_rgb(slide, 0, 0, 1, slide.level_dimensions[1])
        ds1 = slide.level_downsamples[1]
    smooth = ndimage.uniform_filter(level1.astype(float), (5, 5, 1))
    not_glass = ~((smooth.min(-1) > 215) & (smooth.max(-1) - smooth.min(-1) < 20))
    mask = polygons_to_mask(polygons, level1.shape[:2], ds1)
    assert _iou(mask, not_glass) > 0.75
    # the recorded area is that of the polygons
    ds = meta["thumbnail_downsample"]
    thumb_mask = polygons_to_mask(polygons, (round(meta["height"] / ds), round(meta["width"] / ds)), ds)
    assert meta["tissue_area_mm2"] == pytest.approx(thumb_mask.sum() * (meta["mpp"] * ds) ** 2 / 1e6, abs=1e-4)
    png = cv2.imread(str(processed["tissue"] / f"{sid}.png"))
    assert png.shape[:2] == thumb_mask.shape


def test_every_generated_slide_has_a_status(processed, blank_slide_id):
    statuses = {sid: m["status"] for sid, m in processed["tissue_meta"].items()}
    assert statuses.pop(blank_slide_id) == "skipped"
    assert set(statuses.values()) == {"ok"}


def test_blank_slide_is_skipped(processed, blank_slide_id):
    polygons, meta = read_tissue(processed["tissue"] / f"{blank_slide_id}.geojson")
    assert meta["status"] == "skipped" and meta["reason"]
    assert polygons == [] and meta["tissue_area_mm2"] == 0


def test_corrupt_slide_is_recorded_as_failed_without_raising(tmp_path):
    path = tmp_path / "TCGA-XX-0000-01Z-00-DX1.BROKEN.svs"
    path.write_bytes(np.random.default_rng(0).bytes(10_000))
    meta = segment_slide(path, tmp_path / "out.geojson", tmp_path / "out.png")
    assert meta["status"] == "failed"
    assert str(path) in meta["reason"]
    assert meta["slide_id"] == "TCGA-XX-0000-01Z-00-DX1.BROKEN"
    polygons, stored = read_tissue(tmp_path / "out.geojson")
    assert polygons == [] and stored["status"] == "failed" and stored["reason"] == meta["reason"]
    assert cv2.imread(str(tmp_path / "out.png")) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, "out.geojson", "out.png"])


def _tiff_with_disc(path, shape=(768, 1024)):
    tissue = _disc(shape, 384, 500, 350)  # 175 µm radius at 0.5 µm/px: 96 000 µm²
    tifffile.imwrite(path, _image(shape, tissue), tile=(256, 256), photometric="rgb")
    return tissue


def test_slide_without_mpp_fails_unless_a_fallback_is_given(tmp_path):
    path = tmp_path / "no_mpp.tif"
    _tiff_with_disc(path)
    meta = segment_slide(path, tmp_path / "a.geojson", tmp_path / "a.png")
    assert meta["status"] == "failed" and "no resolution" in meta["reason"] and str(path) in meta["reason"]
    meta = segment_slide(path, tmp_path / "b.geojson", tmp_path / "b.png", mpp_fallback=0.5)
    assert meta["status"] == "ok" and meta["mpp"] == 0.5


def test_thumbnail_resolution_is_physical(tmp_path):
    """The same slide declared at twice the µm/px gets a thumbnail of twice the px: same µm/px."""
    path = tmp_path / "disc.tif"
    truth = _tiff_with_disc(path)
    areas = {}
    for mpp in (0.5, 1.0):
        meta = segment_slide(path, tmp_path / f"{mpp}.geojson", tmp_path / f"{mpp}.png", mpp_fallback=mpp)
        assert meta["status"] == "ok"
        assert meta["thumbnail_downsample"] == pytest.approx(TissueParams().thumbnail_mpp / mpp, rel=0.02)
        areas[mpp] = meta["tissue_area_mm2"]
        expected = truth.sum() * mpp**2 / 1e6
        assert areas[mpp] == pytest.approx(expected, rel=0.1)
    assert areas[1.0] == pytest.approx(4 * areas[0.5], rel=0.1)


def test_thumbnail_of_slide_matches_segmentation_input(processed, blank_slide_id):
    """The mask behind the polygons is the segmentation of the slide's thumbnail."""
    sid = next(s for s in processed["tissue_meta"] if s != blank_slide_id)
    meta = processed["tissue_meta"][sid]
    with open_slide(meta["path"]) as slide:
        thumb, ds = read_thumbnail(slide, meta["mpp"], TissueParams().thumbnail_mpp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        expected = segment_tissue(thumb, meta["mpp"] * ds)
    polygons, _ = read_tissue(processed["tissue"] / f"{sid}.geojson")
    np.testing.assert_array_equal(polygons_to_mask(polygons, thumb.shape[:2], ds), expected)


# ---------------------------------------------------------------------------------------------
# marker ink and dust


BLUE_INK, GREEN_INK, BLACK_INK = (40, 70, 170), (50, 150, 85), (25, 25, 30)  # light each ink lets through


def _ink(img: np.ndarray, where: np.ndarray, ink) -> np.ndarray:
    """Ink absorbs: what lies beneath is multiplied by the light it lets through."""
    out = img.astype(np.float32)
    out[where] *= np.float32(ink) / 255
    return out.round().astype(np.uint8)


def _band(shape, x0, x1):
    band = np.zeros(shape, bool)
    band[:, x0:x1] = True
    return band


@pytest.mark.parametrize("ink", [BLUE_INK, GREEN_INK, BLACK_INK], ids=["blue", "green", "black"])
def test_pen_stroke_across_tissue_is_cut_out_without_a_rim(ink):
    shape = (200, 260)
    tissue = _disc(shape, 100, 110, 70)
    stroke = _band(shape, 100, 125)  # 25 px = 200 µm wide, from glass over tissue to glass
    mask = segment_tissue(_ink(_image(shape, tissue), stroke, ink), MPP)
    assert not mask[stroke].any()
    assert _iou(mask, tissue & ~stroke) > 0.93
    # on the glass beside the stroke (above and below the disc) nothing is found: no rim
    assert not mask[~_disc(shape, 100, 110, 73)].any()


def test_pen_on_glass_only_gives_no_tissue():
    shape = (200, 260)
    img = _ink(_image(shape, np.zeros(shape, bool)), _band(shape, 60, 100), BLUE_INK)
    img = _ink(img, _band(shape, 150, 190), GREEN_INK)
    assert not segment_tissue(img, MPP).any()
    # without pen removal the saturated ink would be taken for tissue
    assert segment_tissue(img, MPP, TissueParams(remove_pen=False)).any()


def test_he_colours_are_never_ink():
    """Eosin pinks and hematoxylin purples (green below red) are kept, however dark or saturated."""
    from preprocessing.tissue import marker_mask

    colours = [(230, 150, 190), (205, 130, 185), (90, 40, 130), (150, 85, 155), (120, 80, 160),
               (240, 200, 220), (180, 60, 110)]
    img = np.array(colours, np.uint8)[None].repeat(20, 0).repeat(20, 1)
    assert not marker_mask(img, MPP).any()
    inks = np.array([BLUE_INK, GREEN_INK, BLACK_INK], np.uint8)[None].repeat(20, 0).repeat(20, 1)
    assert marker_mask(inks, MPP).all()


def test_ink_splits_a_piece_without_making_specks_of_it():
    """A stroke near the edge of a piece leaves a slice smaller than min_area_um2: still tissue."""
    shape = (200, 260)
    tissue = _disc(shape, 100, 110, 70)
    stroke = _band(shape, 150, 165)
    sliver = tissue & _band(shape, 168, 260)
    assert sliver.sum() * MPP**2 < TissueParams().min_area_um2
    mask = segment_tissue(_ink(_image(shape, tissue), stroke, BLUE_INK), MPP)
    assert mask[_disc(shape, 100, 174, 3)].all()  # the core of the slice beyond the stroke
    assert not mask[stroke].any()


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_model_segmenter_on_an_image(tmp_path):
    torch = pytest.importorskip("torch")

    class Pink(torch.nn.Module):  # logits: red minus green, large on the pink disc
        def forward(self, x):
            return ((x[:, 0:1] - x[:, 1:2]) - 0.15) * 50

    path = tmp_path / "pink.pt"
    torch.jit.script(Pink()).save(str(path))
    shape = (200, 240)
    truth = _disc(shape, 100, 110, 60) & ~_disc(shape, 100, 110, 20)
    params = TissueParams(method="model", checkpoint=str(path))
    assert _iou(segment_tissue(_image(shape, truth), MPP, params), truth) > 0.95
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        segment_tissue(_image(shape, truth), MPP, TissueParams(method="model", checkpoint=str(tmp_path / "missing.pt")))


# ---------------------------------------------------------------------------------------------
# faint tissue: thresholds judged from the slide


def _faint(colour, strength: float, glass=(GLASS,) * 3) -> tuple[int, int, int]:
    """``colour`` seen on ``glass`` with its optical density scaled by ``strength``."""
    t = np.asarray(colour, float) / GLASS
    return tuple(int(round(g * v**strength)) for g, v in zip(glass, t))


def test_glass_colour_is_the_slides_brightest_mode():
    """Tinted glass is found under a darker shadow band, tissue and a few white specks."""
    from preprocessing.tissue import glass_colour

    shape = (200, 260)
    tint = (236, 233, 224)
    img = _image(shape, _disc(shape, 100, 110, 60))
    img[~_disc(shape, 100, 110, 60)] = tint
    img[:, :30] = (150, 148, 142)  # a shadow: darker, same hue
    img[5:8, 200:203] = 255  # specks brighter than glass
    colour, glass_px = glass_colour(img, np.ones(shape, bool))
    assert colour == pytest.approx(tint, abs=1)
    assert not glass_px[:, :30].any() and not glass_px[_disc(shape, 100, 110, 55)].any()


def test_very_faint_disc_is_found_where_a_floor_of_20_finds_nothing():
    shape = (200, 240)
    truth = _disc(shape, 100, 110, 60) & ~_disc(shape, 100, 110, 20)
    colour = _faint(PINK, 0.11)  # HSV saturation ≈ 12 of 255
    assert 8 <= cv2.cvtColor(np.uint8([[colour]]), cv2.COLOR_RGB2HSV)[0, 0, 1] <= 15
    img = _image(shape, truth, colour)
    assert _iou(segment_tissue(img, MPP), truth) > 0.9
    assert not segment_tissue(img, MPP, TissueParams(core_chroma=20, edge_chroma=20)).any()


def test_tissue_below_the_core_threshold_is_kept_only_joined_to_a_core():
    """Hysteresis: a pale band (chroma between edge_chroma and core_chroma) that touches a normal
    disc is tissue; the same band alone on the glass is not."""
    shape = (200, 300)
    disc = _disc(shape, 100, 80, 50)
    band = np.zeros(shape, bool)
    band[80:120, 125:260] = True  # 320 × 1080 µm: large enough to be a piece
    pale = _faint(PINK, 0.06)  # chroma ≈ 6: above edge_chroma (5), never above core_chroma (8)
    params = TissueParams()
    joined = segment_tissue(_paint(shape, {PINK: disc, pale: band}, noise=1), MPP, params)
    assert joined[band].mean() > 0.9 and joined[disc].mean() > 0.9
    band_alone = band.copy()
    band_alone[:, 125:140] = False  # a gap of 15 px = 120 µm to the disc
    alone = segment_tissue(_paint(shape, {PINK: disc, pale: band_alone}, noise=1), MPP, params)
    assert alone[disc].mean() > 0.9 and not alone[band_alone].any()


def _paint(shape, colours: dict, noise: int = 3) -> np.ndarray:
    """White glass with each mask painted in its colour, plus pixel noise of ± ``noise``."""
    img = np.full((*shape, 3), GLASS, np.int16)
    for colour, where in colours.items():
        img[where] = colour
    img += np.random.default_rng(0).integers(-noise, noise + 1, img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_grey_background_shadows_and_bubbles_are_not_tissue():
    """Neutral artefacts on grey glass: a coverslip-edge shadow and an air bubble's dark rim,
    darker than the glass but of its colour, are not tissue; a faint disc beside them is."""
    shape = (200, 300)
    grey = (214, 214, 210)
    disc = _disc(shape, 100, 200, 50)
    img = _paint(shape, {_faint(PINK, 0.3, grey): disc, grey: ~disc}).astype(np.float32)
    x = np.arange(shape[1], dtype=np.float32)
    img *= (1 - 0.5 * np.exp(-x / 10) - 0.5 * np.exp(-(((x - 15) / 2) ** 2)))[None, :, None]  # shadow, left
    r = np.hypot(*np.mgrid[0:shape[0], 0:shape[1]] - np.array([100, 80])[:, None, None])
    img *= (1 - 0.5 * np.exp(-(((r - 35) / 2) ** 2)))[..., None]  # bubble rim, radius 280 µm
    mask = segment_tissue(img.round().astype(np.uint8), MPP)
    assert _iou(mask, disc) > 0.9
    assert not mask[:, :140].any()
