"""Tissue segmentation against known truth: generated Aperio slides (generators.synthetic) with
tissue pieces, holes, pen marks, dust, no tissue, and pen on glass only.

The truth is the generator's label map at 8 µm/px (tissue under ink is not tissue).  Scores are
taken on the GeoJSON that segment_slide writes, rasterised back onto the truth grid, so the
polygon round trip is tested too.
"""
from __future__ import annotations

import json
import tracemalloc

import cv2
import numpy as np
import openslide
import pytest

from mask_tools import grow, iou, shrink
from generators import synthetic
from preprocessing.slides import open_slide, read_region_rgb
from preprocessing.tiling import read_coords, tile_slide
from preprocessing.tissue import TissueParams
from preprocessing.tissue_geojson import polygons_to_mask, read_tissue, segment_slide

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),  # skimage deprecations
              pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")]  # TorchScript still works

SIZE, MPP = (8192, 6144), 0.5  # 4.1 × 3.1 mm; the truth grid (8 µm/px) is 512 × 384
WITH_TISSUE = ("pieces_with_holes", "pen_marks", "dust")
WITHOUT_TISSUE = ("blank", "pen_only")
PRESETS = WITH_TISSUE + WITHOUT_TISSUE  # the stain presets have their own tests (test_faint_tissue.py)



@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Every preset generated (seed 1) and segmented with default parameters."""
    root = tmp_path_factory.mktemp("synthetic")
    out = {}
    for preset in PRESETS:
        slide = synthetic.generate(root / f"{preset}.svs", preset, SIZE, MPP, seed=1)
        meta = segment_slide(slide.path, root / f"{preset}.geojson", root / f"{preset}.png")
        polygons, _ = read_tissue(root / f"{preset}.geojson")
        mask = polygons_to_mask(polygons, slide.truth.shape, slide.truth_downsample)
        out[preset] = {"slide": slide, "meta": meta, "polygons": polygons, "mask": mask, "root": root}
    return out


# ---------------------------------------------------------------------------------------------
# the generator: real Aperio files whose pixels agree with their truth


def test_generated_slide_is_an_aperio_pyramid_with_its_resolution(runs):
    slide = runs["pen_marks"]["slide"]
    with openslide.OpenSlide(str(slide.path)) as s:
        assert s.properties[openslide.PROPERTY_NAME_VENDOR] == "aperio"
        assert s.dimensions == SIZE
        assert [round(d) for d in s.level_downsamples] == [1, 4, 16, 64]
        assert float(s.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(MPP)
        assert float(s.properties["aperio.AppMag"]) == pytest.approx(20)
        assert s.properties["tiff.ImageDescription"].startswith("Aperio")
        assert int(s.properties["openslide.level[0].tile-width"]) == 256
        assert "thumbnail" in s.associated_images


def test_truth_files_describe_the_truth(runs):
    slide = runs["pen_marks"]["slide"]
    truth, meta = synthetic.read_truth(slide.path)
    np.testing.assert_array_equal(truth, slide.truth)
    assert truth.shape == (SIZE[1] // 16, SIZE[0] // 16)
    assert meta["truth_downsample"] == 16 and meta["mpp"] == MPP and meta["truth_mpp"] == 8
    assert meta["tissue_area_mm2"] == pytest.approx(truth.sum() * 64 / 1e6, abs=1e-4)
    labels = cv2.imread(str(slide.path.with_suffix(".labels.png")), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(labels == synthetic.TISSUE, truth)
    assert meta["pen_area_mm2"] > 0.2  # the preset has pen, some of it over tissue
    assert json.loads(slide.path.with_suffix(".truth.json").read_text()) == meta


@pytest.mark.parametrize("preset", PRESETS)
def test_pixels_of_the_slide_match_its_labels(runs, preset):
    """Read back at 8 µm/px (level 2 here), away from edges: tissue is pink, glass is near white,
    ink is blue, green or black; judged by colour alone, not by the segmenter."""
    slide = runs[preset]["slide"]
    with open_slide(slide.path) as s:
        rgb = read_region_rgb(s, 0, 0, 2, s.level_dimensions[2]).astype(int)
    assert rgb.shape[:2] == slide.labels.shape
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    inner = {code: shrink(slide.labels == code, 2) for code in (synthetic.BACKGROUND, synthetic.TISSUE,
                                                                  synthetic.PEN)}
    assert (rgb[inner[synthetic.BACKGROUND]].min(-1) > 200).all()
    pink = (r > g + 30) & (b > g + 10)
    assert pink[inner[synthetic.TISSUE]].all()
    ink = (g > r + 10) | (b > r + 40) | (rgb.max(-1) < 60)
    assert ink[inner[synthetic.PEN]].all()
    assert not pink[inner[synthetic.BACKGROUND] | inner[synthetic.PEN]].any()


def test_generation_streams_tiles_instead_of_holding_level_0(tmp_path):
    """An 8192² px slide: level 0 alone would take 201 MB; the generator allocates far less."""
    tracemalloc.start()
    try:
        synthetic.generate(tmp_path / "big.svs", "pen_marks", (8192, 8192), 0.5, workers=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 80e6
    with open_slide(tmp_path / "big.svs") as s:
        assert s.dimensions == (8192, 8192)


def test_sizes_off_the_label_grid_and_unknown_presets_are_refused(tmp_path):
    with pytest.raises(ValueError, match="label px"):
        synthetic.generate(tmp_path / "odd.svs", "blank", (1000, 1000), 0.5)
    with pytest.raises(ValueError, match="unknown preset"):
        synthetic.generate(tmp_path / "x.svs", "marmalade")
    with pytest.raises(FileNotFoundError, match="no ground truth"):
        synthetic.read_truth(tmp_path / "missing.svs")


# ---------------------------------------------------------------------------------------------
# segmentation against the truth


@pytest.mark.parametrize("preset", WITH_TISSUE)
def test_iou_against_truth_is_at_least_095(runs, preset):
    run = runs[preset]
    assert run["meta"]["status"] == "ok"
    assert iou(run["mask"], run["slide"].truth) >= 0.95


@pytest.mark.parametrize("preset", WITH_TISSUE)
def test_nothing_is_found_away_from_the_tissue(runs, preset):
    """No rim along pen strokes, no dust speck, no glass: every mask pixel is within 2 px (16 µm)
    of true tissue."""
    run = runs[preset]
    stray = run["mask"] & ~grow(run["slide"].truth, 2)
    assert stray.sum() == 0, f"{stray.sum()} px found away from tissue, labels {np.unique(run['slide'].labels[stray])}"


def test_holes_stay_holes(runs):
    run = runs["pieces_with_holes"]
    truth = run["slide"].truth
    n, holes = cv2.connectedComponents((~truth).astype(np.uint8), connectivity=4)
    border = set(np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]])))
    inner = [k for k in range(1, n) if k not in border]
    assert len(inner) >= 3  # the preset draws one or two holes in each of its three pieces
    for k in inner:
        hole = holes == k
        assert hole.sum() * 64 > TissueParams().min_hole_um2  # generated above the fill limit
        assert run["mask"][shrink(hole, 1)].mean() < 0.05
    # each hole is a hole ring of a polygon in the GeoJSON, not just missing pixels
    assert sum(len(rings) - 1 for rings in run["polygons"]) >= len(inner)


def test_pen_marks_are_excluded_and_the_tissue_beside_them_kept(runs):
    run = runs["pen_marks"]
    labels, mask = run["slide"].labels, run["mask"]
    pen = labels == synthetic.PEN
    over_tissue = shrink(pen, 1) & grow(labels == synthetic.TISSUE, 40)
    assert over_tissue.sum() > 500  # the strokes do cross tissue
    assert not mask[shrink(pen, 1)].any()
    assert run["meta"]["marker_area_mm2"] == pytest.approx(pen.sum() * 64 / 1e6, rel=0.15)
    assert mask[shrink(labels == synthetic.TISSUE, 2)].mean() > 0.99


def test_patches_avoid_pen_marks(runs, tmp_path):
    """Tiling on the GeoJSON: no patch is mostly ink, and patches cover the true tissue."""
    run = runs["pen_marks"]
    summary = tile_slide(run["root"] / "pen_marks.geojson", tmp_path / "p.h5")
    coords, attrs = read_coords(tmp_path / "p.h5")
    assert summary["status"] == "ok" and len(coords) == summary["n_patches"] > 50
    size0, ds = attrs["patch_size_level0"], run["slide"].truth_downsample
    labels = run["slide"].labels
    for x, y in coords:
        patch = labels[int(y // ds):int((y + size0) // ds), int(x // ds):int((x + size0) // ds)]
        assert (patch == synthetic.PEN).mean() < 0.5
        assert (patch == synthetic.TISSUE).mean() > 0.3


@pytest.mark.parametrize("preset", WITHOUT_TISSUE)
def test_slides_without_tissue_are_skipped(runs, preset):
    run = runs[preset]
    assert run["meta"]["status"] == "skipped" and run["meta"]["reason"] == "no tissue found"
    assert run["polygons"] == [] and run["meta"]["tissue_area_mm2"] == 0
    assert not run["slide"].truth.any()


def test_pen_only_slide_would_be_tissue_without_pen_removal(runs, tmp_path):
    """The pen-only slide is skipped because of pen removal, not because ink is never tissue-like."""
    slide = runs["pen_only"]["slide"]
    meta = segment_slide(slide.path, tmp_path / "s.geojson", tmp_path / "s.png", TissueParams(remove_pen=False))
    assert meta["status"] == "ok"


# ---------------------------------------------------------------------------------------------
# a deep segmenter plugged in as a TorchScript file


@pytest.fixture(scope="module")
def saturation_models(tmp_path_factory) -> dict:
    """Tiny TorchScript 'networks' that call tissue where saturation exceeds 0.15: one returns
    logits (1, 1, H, W), one probabilities (1, H, W), one a map of half the size (a wrong model)."""
    torch = pytest.importorskip("torch")

    class Saturation(torch.nn.Module):
        def __init__(self, output: str):
            super().__init__()
            self.output = output

        def forward(self, x):
            hi, lo = x.amax(1, keepdim=True), x.amin(1, keepdim=True)
            logits = ((hi - lo) / (hi + 1e-6) - 0.15) * 40
            if self.output == "probabilities":
                return torch.sigmoid(logits)[:, 0]
            if self.output == "half":
                return logits[:, :, ::2, ::2]
            return logits

    root = tmp_path_factory.mktemp("models")
    paths = {}
    for output in ("logits", "probabilities", "half"):
        paths[output] = root / f"{output}.pt"
        torch.jit.script(Saturation(output)).save(str(paths[output]))
    return paths


@pytest.mark.parametrize("output", ["logits", "probabilities"])
def test_model_segmenter_reaches_the_truth(runs, saturation_models, tmp_path, output):
    run = runs["pieces_with_holes"]
    params = TissueParams(method="model", checkpoint=str(saturation_models[output]))
    meta = segment_slide(run["slide"].path, tmp_path / "m.geojson", tmp_path / "m.png", params)
    assert meta["status"] == "ok" and meta["params"]["method"] == "model"
    polygons, _ = read_tissue(tmp_path / "m.geojson")
    mask = polygons_to_mask(polygons, run["slide"].truth.shape, run["slide"].truth_downsample)
    assert iou(mask, run["slide"].truth) >= 0.95


def test_missing_checkpoint_is_an_error_naming_the_file(runs, tmp_path):
    missing = tmp_path / "nowhere" / "tissue.pt"
    with pytest.raises(FileNotFoundError, match="nowhere/tissue.pt"):
        segment_slide(runs["blank"]["slide"].path, tmp_path / "a.geojson", tmp_path / "a.png",
                      TissueParams(method="model", checkpoint=str(missing)))
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        segment_slide(runs["blank"]["slide"].path, tmp_path / "a.geojson", tmp_path / "a.png",
                      TissueParams(method="model"))
    assert not (tmp_path / "a.geojson").exists()


def test_model_output_of_the_wrong_shape_is_an_error_naming_the_checkpoint(runs, saturation_models, tmp_path):
    with pytest.raises(ValueError, match=r"half\.pt: model output has shape \(1, 1, 192, 256\)"):
        segment_slide(runs["pieces_with_holes"]["slide"].path, tmp_path / "a.geojson", tmp_path / "a.png",
                      TissueParams(method="model", checkpoint=str(saturation_models["half"])))


def test_unknown_method_is_an_error(runs, tmp_path):
    with pytest.raises(ValueError, match="unknown tissue method 'otsu'"):
        segment_slide(runs["blank"]["slide"].path, tmp_path / "a.geojson", tmp_path / "a.png",
                      TissueParams(method="otsu"))
