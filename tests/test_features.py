"""preprocessing.encoders and preprocessing.features: named encoders, local weights only, and
per-slide Zarr stores that are complete, reproducible and aligned with the patch coordinates."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import openslide
import pytest
import timm
import torch
import zarr

from preprocessing.encoders import ENCODERS, IMAGENET_MEAN, IMAGENET_STD, build_encoder
from preprocessing.features import extract_features, read_features
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
