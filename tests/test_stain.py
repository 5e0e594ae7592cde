"""Stain normalisation (preprocessing/stain.py, its target preprocessing/stain_target.py) on the
real Aperio region the test setup fetches (CMU-1, skin H&E) towards a target of another look (the
demo renderer's H&E), and as a stage of feature extraction: what the store records, fallbacks for
blank and pen patches, determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from generators.slide_render import render_slide
from preprocessing import stain, stain_target
from preprocessing.feature_store import read_features
from preprocessing.features import extract_features
from preprocessing.patch_reader import SlidePatches
from preprocessing.tiling import write_coords

SIDE, PATCH, MPP = (2220, 2967), 256, 0.499


def _grid() -> np.ndarray:
    return np.array([(x, y) for y in range(0, SIDE[1] - PATCH + 1, PATCH) for x in range(0, SIDE[0] - PATCH + 1, PATCH)])


@pytest.fixture(scope="module")
def real_patches(real_slide) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The CMU-1 region's 256-px grid patches (resized to 224) that are mostly stained, their
    corners, and the corner of the patch with the least stain (glass)."""
    coords = _grid()
    ds = SlidePatches(str(real_slide), coords, 0, PATCH, 224)
    x = torch.stack([ds[i] for i in range(len(coords))])
    od = stain.optical_density(x)
    stained = (od >= stain.BETA).all(-1).float().mean(1).numpy()
    keep = stained > 0.2
    assert keep.sum() >= 20 and stained.min() < 0.001
    return x[keep], coords[keep], coords[stained.argmin()]


@pytest.fixture(scope="module")
def other_look() -> np.ndarray:
    """An H&E image of another look: the demo cohort's renderer (its hematoxylin ~15° from CMU-1's)."""
    return render_slide(np.random.default_rng(0), (768, 768), 0.5, 0.5)[0]


def _vectors(method: str, rgb: torch.Tensor) -> torch.Tensor:
    od = stain.optical_density(rgb)
    return (stain.macenko_vectors if method == "macenko" else stain.vahadane_vectors)(od, (od >= stain.BETA).all(-1))


@pytest.mark.parametrize("method, median_deg, max_deg", [("macenko", 2.0, 6.0), ("vahadane", 4.0, 7.0)])
def test_normalised_real_patches_have_the_target_stains(real_patches, other_look, method, median_deg, max_deg):
    x = real_patches[0]
    target = stain_target.fit_target(method, other_look, "demo render")
    ref = torch.tensor(target["stain_matrix"])
    out, status, fit = stain.StainNormaliser(target)(x)
    assert (status == 0).all() and torch.isfinite(fit).all()
    before = stain.angle_deg(_vectors(method, x), ref[None])
    after = stain.angle_deg(_vectors(method, out), ref[None])
    assert before[:, 0].median() > 10  # CMU-1's hematoxylin is not the target's to start with
    assert after.median() < median_deg and after.max() < max_deg, (before.median(0), after.median(0), after.max(0))
    # and each stain's 99th-percentile amount is the target's
    amounts = stain.max_concentrations(stain.optical_density(out) @ torch.linalg.pinv(ref).T)
    np.testing.assert_allclose(amounts.numpy(), np.tile(target["max_concentration"], (len(x), 1)), rtol=0.06)


def test_reinhard_gives_the_target_lab_statistics(real_patches, other_look):
    x = real_patches[0]
    target = stain_target.fit_target("reinhard", other_look, "demo render")
    out, status, _ = stain.StainNormaliser(target)(x)
    assert (status == 0).all()
    mean = torch.tensor(target["lab_mean"])
    lab_before, lab_after = (stain.rgb_to_lab(t).reshape(len(x), -1, 3) for t in (x, out))
    assert (lab_before.mean(1) - mean).abs().max() > 10
    assert (lab_after.mean(1) - mean).abs().max() < 4  # uint8 rounding and clipping of the rebuilt RGB
    assert (lab_after.std(1) - torch.tensor(target["lab_std"])).abs().max() < 8


def test_batched_macenko_is_torchstains_macenko(real_patches, other_look):
    """Every pixel used (stride 1): the batched estimate and rebuild are torchstain's, to one grey level."""
    from torchstain.torch.normalizers import TorchMacenkoNormalizer

    x = real_patches[0][:6]
    target = stain_target.fit_target("macenko", other_look, "demo render")
    ours, status, _ = stain.StainNormaliser(target, stride=1)(x)
    reference = TorchMacenkoNormalizer()
    reference.HERef, reference.maxCRef = torch.tensor(target["stain_matrix"]), torch.tensor(target["max_concentration"])
    for i in range(len(x)):
        theirs = reference.normalize(x[i].permute(2, 0, 1), stains=False)[0]
        assert (theirs - ours[i].int()).abs().max() <= 1


def test_blank_and_pen_patches_fall_back_to_raw(real_patches, other_look):
    x = real_patches[0][:2]
    glass = torch.full((1, 224, 224, 3), 238, dtype=torch.uint8)
    pen = x[:1].clone()
    pen[:, :, :120] = torch.tensor([40, 70, 190], dtype=torch.uint8)  # blue marker over half the patch
    batch = torch.cat([x, glass, pen])
    for method in stain.METHODS:
        out, status, fit = stain.StainNormaliser(stain_target.fit_target(method, other_look, "demo render"))(batch)
        assert [stain.STATUS[int(s)] for s in status] == ["ok", "ok", "blank", "pen"], method
        assert torch.equal(out[2:], batch[2:]) and not torch.equal(out[:2], batch[:2])
        assert torch.isnan(fit[2:]).all() and torch.isfinite(fit[:2]).all()


def test_a_target_without_stain_is_refused():
    with pytest.raises(ValueError, match="stained"):
        stain_target.fit_target("macenko", np.full((64, 64, 3), 240, np.uint8), "glass.png")
    with pytest.raises(ValueError, match="unknown stain_norm"):
        stain_target.fit_target("ruifrok", np.zeros((8, 8, 3), np.uint8), "x")


def test_store_records_method_target_and_fallbacks(real_slide, real_patches, other_look, tmp_path):
    """Feature extraction with a target: the store names method and target (with its stain matrix),
    the slide's fitted matrix, counts the glass patch that fell back, and is reproducible; the
    normalised features differ from the raw ones."""
    _, coords, glass = real_patches
    h5 = tmp_path / "s.h5"
    write_coords(h5, np.concatenate([coords[:5], glass[None]]), {"width": SIDE[0], "height": SIDE[1], "mpp": MPP,
                                                            "slide_id": "s"}, patch_size=PATCH, size0=PATCH,
                 target_mpp=MPP)
    target = stain_target.fit_target("macenko", other_look, "demo render")
    stain_target.write_target(target, tmp_path / "target.json")
    meta = extract_features(real_slide, h5, tmp_path / "a.zarr", batch_size=4, stain_target=tmp_path / "target.json")
    feats, _, attrs = read_features(tmp_path / "a.zarr")
    s = attrs["stain_norm"]
    assert s == meta["stain_norm"] and s["method"] == "macenko" and s["target"] == target
    assert s["target"]["stain_matrix"] == target["stain_matrix"] and np.array(s["stain_matrix"]).shape == (3, 2)
    assert (s["n_normalised"], s["n_fallback"], s["fallback"]["blank"]) == (5, 1, 1)
    root = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
    assert root["stain_status"][:].tolist() == [0, 0, 0, 0, 0, 1] and root["stain_fit"].shape == (6, 8)
    raw, _, raw_attrs = read_features(extract_features(real_slide, h5, tmp_path / "raw.zarr", batch_size=4) and
                                      tmp_path / "raw.zarr")
    assert "stain_norm" not in raw_attrs and "stain_status" not in zarr.open_group(str(tmp_path / "raw.zarr"), mode="r")
    assert not np.array_equal(raw[:5], feats[:5]) and np.array_equal(raw[5], feats[5])  # the glass patch: raw
    extract_features(real_slide, h5, tmp_path / "b.zarr", batch_size=4, stain_target=target)
    assert np.array_equal(read_features(tmp_path / "b.zarr")[0], feats)


def test_a_cohort_target_draws_the_patches_the_slides_own_jobs_tile(processed):
    """Rule stain_target runs before any slide's job has tiled it, so it tiles the slides itself: the
    mosaic must be the one drawn from the coordinates tiled separately (tests/conftest.py, defaults)."""
    from preprocessing.tiling import TilingParams
    from preprocessing.tissue import TissueParams

    ids = sorted(processed["slide_paths"])[:4]
    slides = [processed["slide_paths"][s] for s in ids]
    expected = stain_target.cohort_mosaic([(p, processed["patches"] / f"{s}.h5") for s, p in zip(ids, slides)],
                                          n_patches=9, seed=5)
    got = stain_target.tiled_cohort_mosaic(slides, TissueParams(), TilingParams(), [None] * len(slides),
                                           n_patches=9, seed=5)
    assert got.shape == expected.shape and got.shape[0] > 0
    np.testing.assert_array_equal(got, expected)
