"""preprocessing.encoders and preprocessing.features: named encoders, local weights only, and
per-slide Zarr stores that are complete, reproducible and aligned with the patch coordinates."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import openslide
import pandas as pd
import pytest
import timm
import torch
import zarr

from preprocessing.encoders import ENCODERS, IMAGENET_MEAN, IMAGENET_STD, build_encoder
from preprocessing.feature_store import read_features
from preprocessing.features import extract_features
from preprocessing.slides import SlideError
from preprocessing.tiling import read_coords


def _probe(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def _out(model, x):
    with torch.no_grad():
        return model(x)


def _state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# encoders


def test_demo_encoder_is_seeded_and_512_wide():
    a, id_a = build_encoder("demo-cnn", seed=0)
    b, id_b = build_encoder("demo-cnn", seed=0)
    c, _ = build_encoder("demo-cnn", seed=1)
    assert id_a == id_b == "random:seed=0"
    assert not a.training  # eval mode: batch norm uses its running statistics
    assert _state_equal(a, b) and not _state_equal(a, c)
    out = _out(a, _probe())
    assert out.shape == (2, ENCODERS["demo-cnn"].dim) == (2, 512)
    assert torch.equal(out, _out(b, _probe()))
    assert not torch.allclose(out, _out(c, _probe()))


def test_unknown_encoder_is_a_key_error():
    with pytest.raises(KeyError, match="demo-cnn"):  # the message lists the known names
        build_encoder("no-such-encoder")


@pytest.mark.parametrize("name", ["resnet50", "resnet50-trunc"])
def test_real_encoder_without_weights_is_refused(name):
    with pytest.raises(ValueError, match="weights file"):
        build_encoder(name)


@pytest.mark.parametrize("wrap", [False, True])
def test_weights_file_round_trip(tmp_path, wrap):
    trained, _ = build_encoder("demo-cnn", seed=5)
    path = tmp_path / "weights.pt"
    state = trained.state_dict()
    torch.save({"state_dict": state} if wrap else state, path)
    loaded, weights_id = build_encoder("demo-cnn", weights=path, seed=0)
    assert weights_id == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert _state_equal(loaded, trained)
    assert torch.equal(_out(loaded, _probe()), _out(trained, _probe()))


def test_safetensors_weights(tmp_path):
    from safetensors.torch import save_file

    trained, _ = build_encoder("demo-cnn", seed=2)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    loaded, weights_id = build_encoder("demo-cnn", weights=str(path))
    assert weights_id == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert _state_equal(loaded, trained)


def test_truncated_resnet_loads_backbone_weights_and_gives_1024(tmp_path):
    backbone = timm.create_model("resnet50", pretrained=False, num_classes=0, features_only=True, out_indices=(3,))
    path = tmp_path / "resnet50.pt"
    torch.save(backbone.state_dict(), path)
    model, weights_id = build_encoder("resnet50-trunc", weights=path)
    assert weights_id.startswith("sha256:")
    x = _probe()[:1]
    out = _out(model, x)
    assert out.shape == (1, ENCODERS["resnet50-trunc"].dim) == (1, 1024)
    backbone.eval()
    expected = _out(backbone, x)[-1].mean(dim=(2, 3))  # stage-3 map, average-pooled
    torch.testing.assert_close(out, expected)


def test_missing_weights_file_names_it(tmp_path):
    path = tmp_path / "absent.pt"
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        build_encoder("resnet50", weights=path)


def test_weights_of_another_network_are_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(ValueError, match="other.pt"):
        build_encoder("demo-cnn", weights=path)


# ---------------------------------------------------------------------------------------------
# feature stores


@pytest.fixture(scope="module")
def tissue_slide(processed, blank_slide_id) -> str:
    """The slide id with the most patches."""
    return max((s for s in processed["tiling"] if s != blank_slide_id), key=lambda s: processed["tiling"][s]["n_patches"])


def test_store_has_one_feature_row_per_patch(processed):
    for sid, meta in processed["features_meta"].items():
        store = processed["features"] / f"{sid}.zarr"
        feats, coords, attrs = read_features(store)
        h5_coords, h5_attrs = read_coords(processed["patches"] / f"{sid}.h5")
        assert feats.shape == (len(h5_coords), 512)
        assert feats.dtype == np.float16
        np.testing.assert_array_equal(coords, h5_coords)
        assert attrs["encoder"] == "demo-cnn" and attrs["weights"] == "random:seed=0"
        assert attrs["target_mpp"] == h5_attrs["target_mpp"] == 0.5
        assert attrs["patch_size"] == 256 and attrs["patch_size_level0"] == 256
        assert attrs["n_patches"] == len(h5_coords) and attrs["dim"] == 512
        assert attrs["status"] == processed["tiling"][sid]["status"]
        assert np.isfinite(feats.astype(np.float32)).all()
    assert not [p for p in processed["features"].rglob("*") if ".tmp" in p.name]


def test_rows_are_the_encoding_of_the_patch_at_their_coordinates(processed, tissue_slide):
    feats, coords, _ = read_features(processed["features"] / f"{tissue_slide}.zarr")
    assert len(np.unique(feats, axis=0)) == len(feats)  # different patches, different features
    model, _ = build_encoder("demo-cnn", seed=0)
    mean, std = np.array(IMAGENET_MEAN) * 255, np.array(IMAGENET_STD) * 255
    with openslide.OpenSlide(processed["slide_paths"][tissue_slide]) as slide:
        for i in (0, len(coords) - 1):
            x, y = coords[i]
            patch = np.asarray(slide.read_region((int(x), int(y)), 0, (256, 256)))[..., :3]
            patch = cv2.resize(patch, (224, 224), interpolation=cv2.INTER_AREA)
            t = torch.from_numpy(((patch - mean) / std).transpose(2, 0, 1)[None].astype(np.float32))
            expected = _out(model, t)[0].numpy()
            np.testing.assert_allclose(feats[i].astype(np.float32), expected, rtol=2e-2, atol=2e-2)


def test_rerun_gives_identical_bytes(processed, tissue_slide, tmp_path):
    out = tmp_path / "again.zarr"
    extract_features(processed["slide_paths"][tissue_slide], processed["patches"] / f"{tissue_slide}.h5", out,
                     batch_size=16)  # as in the fixture
    first = processed["features"] / f"{tissue_slide}.zarr"
    assert np.array_equal(read_features(out)[0], read_features(first)[0])
    assert _files(out) == _files(first)
    # other batch boundaries encode the same patches to the same features (up to float16 rounding)
    other = tmp_path / "batches.zarr"
    extract_features(processed["slide_paths"][tissue_slide], processed["patches"] / f"{tissue_slide}.h5", other,
                     batch_size=3)
    np.testing.assert_allclose(read_features(other)[0].astype(np.float32), read_features(first)[0].astype(np.float32),
                               rtol=1e-2, atol=1e-3)


def test_case_id_is_stored_and_groups_the_slide(processed, tissue_slide, tmp_path):
    """A store written with ``case_id`` names its case and the bag loader groups the slide under
    it; a store written without one has no such attribute and is grouped by the TCGA file-name rule."""
    from healnet.bags import case_of_slide, open_bags
    from preprocessing.feature_store import read_attrs

    first = processed["features"] / f"{tissue_slide}.zarr"
    out = tmp_path / "slide-x.zarr"
    meta = extract_features(processed["slide_paths"][tissue_slide], processed["patches"] / f"{tissue_slide}.h5", out,
                            batch_size=16, case_id="PATIENT-A")  # as in the fixture, plus the case
    assert meta["case_id"] == "PATIENT-A" and read_attrs(out)["case_id"] == "PATIENT-A"
    assert "case_id" not in read_attrs(first)
    rest = {k: v for k, v in _files(out).items() if k != "zarr.json"}  # only the attributes differ
    assert rest == {k: v for k, v in _files(first).items() if k != "zarr.json"}
    bags, positions, dim = open_bags([out])
    assert list(bags) == list(positions) == ["PATIENT-A"] and dim == 512
    np.testing.assert_array_equal(bags["PATIENT-A"].read(), read_features(first)[0].astype(np.float32))
    bags, _, _ = open_bags([first])
    assert list(bags) == [case_of_slide(tissue_slide)]


def test_index_lists_each_store_with_its_case_status_and_rows(processed, tissue_slide, blank_slide_id, tmp_path):
    """The cohort's store index (what training reads instead of one input per slide) gives each
    store's slide, the case written into it, its status and its row count, in the order given; and
    reading it back gives the same stores.  A file that is not an index is refused by name."""
    from preprocessing.feature_store import index_files, read_index, write_index

    named = tmp_path / "slide-y.zarr"
    extract_features(processed["slide_paths"][tissue_slide], processed["patches"] / f"{tissue_slide}.h5", named,
                     batch_size=16, case_id="PATIENT-B")
    stores = [str(named), str(processed["features"] / f"{blank_slide_id}.zarr")]
    index = tmp_path / "index.tsv"
    write_index(stores, index)
    table = pd.read_csv(index, sep="\t", dtype={"case_id": str}, keep_default_na=False)
    n_tissue = len(read_coords(processed["patches"] / f"{tissue_slide}.h5")[0])
    assert table.to_dict("records") == [
        {"slide_id": "slide-y", "case_id": "PATIENT-B", "store": stores[0], "status": "ok", "n_patches": n_tissue},
        {"slide_id": blank_slide_id, "case_id": "", "store": stores[1], "status": "skipped", "n_patches": 0}]
    assert n_tissue > 0 and read_index(index) == stores
    with pytest.raises(ValueError, match="index.tsv: the index has no column 'patches'"):
        index_files(index, "patches")
    not_index = tmp_path / "other.tsv"
    not_index.write_text("slide_id\tpath\nx\ty\n")
    with pytest.raises(ValueError, match="other.tsv: not a feature-store index"):
        read_index(not_index)


def test_index_gives_each_slide_its_files_and_leaves_unknown_ones_out(processed, tissue_slide, blank_slide_id,
                                                                      tmp_path):
    """The files the cohort-level jobs (QC, attention maps, faithfulness, viewer) take from the index
    instead of one input per slide: each store's row carries its slide's file, tissue and patches;
    a slide given no file has none (it is not guessed), and a column outside INDEX_FILES is refused."""
    from preprocessing.feature_store import index_files, write_index

    stores = [str(processed["features"] / f"{s}.zarr") for s in (tissue_slide, blank_slide_id)]
    slide = {tissue_slide: "/slides/a.svs", blank_slide_id: "/slides/b.svs", "not-in-cohort": "/slides/c.svs"}
    patches = {tissue_slide: str(processed["patches"] / f"{tissue_slide}.h5")}
    index = tmp_path / "index.tsv"
    write_index(stores, index, {"slide": slide, "patches": patches})
    assert index_files(index, "slide") == {tissue_slide: "/slides/a.svs", blank_slide_id: "/slides/b.svs"}
    assert index_files(index, "patches") == patches
    with pytest.raises(ValueError, match="index.tsv: the index has no column 'tissue'"):
        index_files(index, "tissue")
    with pytest.raises(ValueError, match=r"\['thumbnail'\] are not among"):
        write_index(stores, tmp_path / "bad.tsv", {"thumbnail": {}})


def test_worker_processes_give_the_same_features(processed, tissue_slide, tmp_path):
    out = tmp_path / "workers.zarr"
    extract_features(processed["slide_paths"][tissue_slide], processed["patches"] / f"{tissue_slide}.h5", out,
                     num_workers=1, batch_size=16)
    np.testing.assert_array_equal(read_features(out)[0], read_features(processed["features"] / f"{tissue_slide}.zarr")[0])


def test_slide_without_patches_gives_an_empty_store(processed, blank_slide_id):
    feats, coords, attrs = read_features(processed["features"] / f"{blank_slide_id}.zarr")
    assert feats.shape == (0, 512) and coords.shape == (0, 2)
    assert attrs["n_patches"] == 0 and attrs["status"] == "skipped"


def test_clam_coordinates_give_the_same_features(processed, tissue_slide, tmp_path):
    coords, _ = read_coords(processed["patches"] / f"{tissue_slide}.h5")
    clam = tmp_path / "clam.h5"
    with h5py.File(clam, "w") as f:
        d = f.create_dataset("coords", data=coords)
        d.attrs.update({"patch_level": 0, "patch_size": 256, "downsample": np.array([1.0, 1.0])})
    out = tmp_path / "clam.zarr"
    meta = extract_features(processed["slide_paths"][tissue_slide], clam, out)
    assert meta["patch_size_level0"] == 256
    np.testing.assert_array_equal(read_features(out)[0], read_features(processed["features"] / f"{tissue_slide}.zarr")[0])


def test_failed_extraction_leaves_no_store(processed, tissue_slide, tmp_path):
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"not a slide")
    out = tmp_path / "features" / "broken.zarr"
    with pytest.raises(SlideError, match="broken.svs"):
        extract_features(broken, processed["patches"] / f"{tissue_slide}.h5", out)
    assert not out.exists()
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


def test_existing_store_is_replaced(processed, tissue_slide, tmp_path):
    out = tmp_path / "s.zarr"
    shutil.copytree(processed["features"] / f"{tissue_slide}.zarr", out)
    (out / "stale-file").write_text("from an older run")
    extract_features(processed["slide_paths"][tissue_slide], processed["patches"] / f"{tissue_slide}.h5", out,
                     dtype="float32")
    assert not (out / "stale-file").exists()
    root = zarr.open_group(str(out), mode="r")
    assert root["features"].dtype == np.float32
    np.testing.assert_allclose(root["features"][:], read_features(processed["features"] / f"{tissue_slide}.zarr")[0],
                               rtol=1e-2, atol=1e-2)


# ---------------------------------------------------------------------------------------------
# incremental writing, resuming, and feature files of other tools


def test_rows_are_written_in_chunks_of_whole_batches(processed, tissue_slide, tmp_path):
    out = tmp_path / "chunked.zarr"
    extract_features(processed["slide_paths"][tissue_slide], processed["patches"] / f"{tissue_slide}.h5", out,
                     batch_size=2, chunk_rows=3)  # rounded up to 4: two batches
    root = zarr.open_group(str(out), mode="r")
    n = root["features"].shape[0]
    assert n > 4 and root["features"].chunks == (4, 512)
    assert len(list((out / "features").rglob("c/*/*"))) == -(-n // 4)  # one file per chunk
    np.testing.assert_allclose(root["features"][:].astype(np.float32),
                               read_features(processed["features"] / f"{tissue_slide}.zarr")[0].astype(np.float32),
                               rtol=1e-2, atol=1e-3)  # other batch boundaries: equal up to float16 rounding
    assert "_rows_done" not in root.attrs and "_fingerprint" not in root.attrs


def test_partial_store_of_other_settings_is_not_resumed(processed, tissue_slide, tmp_path):
    from preprocessing.feature_store import partial_path

    out = tmp_path / "s.zarr"
    stale = zarr.open_group(str(partial_path(out)), mode="w")
    stale.create_array("features", data=np.full((4, 512), 7, np.float16))
    stale.attrs.update({"_fingerprint": {"encoder": "demo-cnn", "batch_size": 999}, "_rows_done": 4})
    extract_features(processed["slide_paths"][tissue_slide], processed["patches"] / f"{tissue_slide}.h5", out,
                     batch_size=16)
    assert _files(out) == _files(processed["features"] / f"{tissue_slide}.zarr")
    assert not partial_path(out).exists()


@pytest.mark.parametrize("layout", ["clam", "trident"])
def test_feature_h5_files_of_clam_and_trident(tmp_path, layout):
    from preprocessing.feature_store import read_feature_h5

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(5, 1024)).astype(np.float32)
    coords = np.array([[0, 0], [256, 0], [512, 0], [0, 256], [256, 256]], np.int64)
    path = tmp_path / f"{layout}.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=feats if layout == "clam" else feats[None])  # TRIDENT: 1×N×D
        d = f.create_dataset("coords", data=coords)
        d.attrs.update({"patch_size": 256, "patch_level": 0} if layout == "clam" else
                       {"patch_size": 256, "patch_size_level0": 512, "target_magnification": 20})
        f.attrs["encoder"] = "uni_v1"
    for read in (read_feature_h5, read_features):  # read_features takes .h5 files too
        got, got_coords, attrs = read(path)
        np.testing.assert_array_equal(got, feats)
        np.testing.assert_array_equal(got_coords, coords)
        assert attrs["patch_size"] == 256 and attrs["encoder"] == "uni_v1" and attrs["n_patches"] == 5
        assert attrs["dim"] == 1024 and attrs["source"] == str(path)
    if layout == "trident":
        assert attrs["patch_size_level0"] == 512


def test_feature_h5_that_does_not_match_is_refused(tmp_path):
    from preprocessing.feature_store import read_feature_h5

    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=np.zeros((3, 8), np.float32))
        f.create_dataset("coords", data=np.zeros((4, 2), np.int64))
    with pytest.raises(ValueError, match="bad.h5.*4 coordinates"):
        read_feature_h5(path)
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=np.zeros((3, 8), np.float32))
    with pytest.raises(ValueError, match="bad.h5.*'coords'"):
        read_feature_h5(path)


# ---------------------------------------------------------------------------------------------
# reading patches


def _compare_tiles_with_openslide(path, rng, sizes=(224, 256, 300), n=20):
    from preprocessing.patch_reader import JpegTiles
    from preprocessing.slides import open_slide, read_region_rgb

    compared = 0
    with open_slide(path) as slide:
        for level in range(slide.level_count):
            ds = int(slide.level_downsamples[level])
            w, h = slide.level_dimensions[level]
            tiles = JpegTiles(str(path), (w, h))
            for size in sizes:
                for _ in range(n):
                    x, y = (int(rng.integers(0, max(1, w - size))), int(rng.integers(0, max(1, h - size))))
                    mine = tiles.read(x, y, size)
                    if mine is None:
                        assert x + size > w or y + size > h
                        continue
                    np.testing.assert_array_equal(mine, read_region_rgb(slide, x * ds, y * ds, level, (size, size)))
                    compared += 1
            assert tiles.read(w - 10, 0, 64) is None  # leaves the image: OpenSlide's job
            tiles.close()
    return compared


def test_direct_tile_reads_equal_openslide(processed, tissue_slide):
    """Unaligned regions spanning up to four JPEG tiles, on every pyramid level."""
    assert _compare_tiles_with_openslide(processed["slide_paths"][tissue_slide], np.random.default_rng(0)) > 30


def test_direct_tile_reads_equal_openslide_on_a_real_aperio_slide(real_slide):
    """CMU-1's Aperio JPEG tiles (240 px, photometric RGB) byte for byte."""
    assert _compare_tiles_with_openslide(real_slide, np.random.default_rng(1)) >= 50


def test_patches_are_the_same_with_and_without_direct_reads(processed, tissue_slide):
    from preprocessing.patch_reader import SlidePatches, read_plan

    coords, attrs = read_coords(processed["patches"] / f"{tissue_slide}.h5")
    coords = np.concatenate([coords, coords[:3] + 37])  # and a few off the tile grid
    path = processed["slide_paths"][tissue_slide]
    level, read_size = read_plan(path, int(attrs["patch_size_level0"]), 224)
    direct = SlidePatches(path, coords, level, read_size, 224)
    slow = SlidePatches(path, coords, level, read_size, 224, direct=False)
    for i in range(len(coords)):
        assert torch.equal(direct[i], slow[i])
    assert direct._tiles is not None and slow._tiles is None  # the direct path was taken


def test_transparent_pixels_become_white():
    from PIL import Image

    from preprocessing.patch_reader import rgb_of

    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., :3] = 90
    rgba[..., 3] = 255
    opaque = rgb_of(Image.fromarray(rgba, "RGBA"))
    assert opaque.shape == (4, 5, 3) and (opaque == 90).all()
    rgba[0, 0] = (0, 0, 0, 0)  # outside the scanned area (OpenSlide: premultiplied, so black)
    rgba[1, 1, 3] = 128  # half transparent: left as it is
    rgb = rgb_of(Image.fromarray(rgba, "RGBA"))
    assert (rgb[0, 0] == 255).all() and (rgb[1, 1] == 90).all() and (rgb[2:] == 90).all()


def test_readers_default_to_the_main_process_on_a_cpu_and_to_spare_cores_on_a_gpu(monkeypatch):
    from preprocessing.features import default_workers

    assert default_workers(torch.device("cpu")) == 0  # workers would take cores from the encoder
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert default_workers(torch.device("cuda")) == 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert default_workers(torch.device("cuda")) == 2
