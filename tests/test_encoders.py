"""preprocessing.encoders: every registry entry builds the architecture it claims (checked on the
meta device for the large ones), weights come only from local files that fit, and their sha256 is
what hashlib computes."""
from __future__ import annotations

import hashlib
import os

import pytest
import timm
import torch

from preprocessing.encoders import (ENCODERS, ClassAndMeanTokens, EncoderSpec, build_architecture, build_encoder,
                                    dinov2_hf_to_timm, load_weights)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download

SMALL = ("demo-cnn", "resnet50", "resnet50-trunc")  # cheap enough to run for real on the CPU
# Parameter counts stated by the model cards / papers (millions), an independent check that the
# timm kwargs rebuild the published networks: UNI 303 (ViT-L/16), UNI2-h 681, Virchow2 632,
# H-optimus-0 and Prov-GigaPath "1.1B" (rounded: ±5 %), Phikon-v2 ViT-L "307M", ResNet50 23.5 without fc.
PUBLISHED_MPARAMS = {"uni": (303, 0.01), "uni2-h": (681, 0.01), "virchow2": (632, 0.01), "h-optimus-0": (1100, 0.05),
                     "prov-gigapath": (1100, 0.05), "phikon-v2": (307, 0.02), "resnet50": (23.5, 0.01)}


def _meta_forward(name: str) -> tuple[torch.nn.Module, torch.Size]:
    spec = ENCODERS[name]
    with torch.device("meta"):
        model = build_architecture(name).eval()
        out = model(torch.empty(2, 3, spec.input_size, spec.input_size))
    return model, out.shape


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_architecture_gives_the_registered_embedding_size(name):
    model, shape = _meta_forward(name)
    assert shape == (2, ENCODERS[name].dim)
    assert all(p.is_meta for p in model.parameters())  # nothing allocated, nothing downloaded


@pytest.mark.parametrize("name", SMALL)
def test_small_encoders_really_run(name):
    torch.manual_seed(0)
    model = build_architecture(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, ENCODERS[name].dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(PUBLISHED_MPARAMS))
def test_parameter_count_matches_the_published_model(name):
    model, _ = _meta_forward(name)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    expected, rel = PUBLISHED_MPARAMS[name]
    assert millions == pytest.approx(expected, rel=rel)


def test_registry_facts():
    assert {n: s.dim for n, s in ENCODERS.items() if n in PUBLISHED_MPARAMS} == {
        "uni": 1024, "uni2-h": 1536, "virchow2": 2560, "h-optimus-0": 1536, "prov-gigapath": 1536,
        "phikon-v2": 1024, "resnet50": 2048}
    assert ENCODERS["h-optimus-0"].mean == (0.707223, 0.578729, 0.703617)
    assert ENCODERS["h-optimus-0"].std == (0.211883, 0.230117, 0.177517)
    assert all(s.input_size == 224 and s.mpp == 0.5 for s in ENCODERS.values())
    assert [n for n, s in ENCODERS.items() if s.random_weights_allowed] == ["demo-cnn"]
    assert all(isinstance(s, EncoderSpec) and s.source for s in ENCODERS.values())


def test_virchow2_embedding_is_class_token_and_mean_of_patch_tokens():
    """The wrapper on a tiny ViT with 4 register tokens, against the tokens timm returns."""
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=64, reg_tokens=4,
                            global_pool="").eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        tokens = vit(x)  # (3, 1 + 4 + 16, 192): class, registers, patches
        out = ClassAndMeanTokens(vit)(x)
    assert tokens.shape == (3, 21, 192)
    torch.testing.assert_close(out, torch.cat([tokens[:, 0], tokens[:, 5:].mean(1)], dim=1))


@pytest.mark.parametrize("name", sorted(n for n, s in ENCODERS.items() if not s.random_weights_allowed))
def test_encoders_other_than_the_demo_need_a_weights_file(name):
    with pytest.raises(ValueError, match="weights file"):
        build_encoder(name)


def test_safetensors_round_trip_records_the_files_sha256(tmp_path):
    from safetensors.torch import save_file

    trained, _ = build_encoder("demo-cnn", seed=7)
    path = tmp_path / "demo.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in trained.state_dict().items()}, str(path))  # DataParallel keys
    loaded, weights_id = build_encoder("demo-cnn", weights=path, seed=0)
    assert weights_id == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained(x), rtol=0, atol=0)


def test_nested_torch_checkpoint_with_prefix(tmp_path):
    trained, _ = build_encoder("demo-cnn", seed=3)
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 10, "model": {f"model.{k}": v for k, v in trained.state_dict().items()}}, path)
    loaded, _ = build_encoder("demo-cnn", weights=path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), trained.state_dict().values()))


def test_weights_of_a_smaller_resnet_are_refused_naming_the_file(tmp_path):
    from safetensors.torch import save_file

    resnet18 = timm.create_model("resnet18", pretrained=False, num_classes=0)
    path = tmp_path / "resnet18-weights.safetensors"
    save_file(resnet18.state_dict(), str(path))
    with pytest.raises(ValueError, match=r"resnet18-weights\.safetensors.*resnet50.*missing"):
        build_encoder("resnet50", weights=path)


def test_a_tensor_of_another_shape_is_refused(tmp_path):
    state = build_architecture("demo-cnn").state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)  # 7×7 in resnet18
    path = tmp_path / "reshaped.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"reshaped\.pt.*conv1\.weight \(64, 3, 3, 3\)"):
        build_encoder("demo-cnn", weights=path)


def test_missing_or_unreadable_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.safetensors"):
        build_encoder("uni", weights=tmp_path / "absent.safetensors")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.bin"):
        build_encoder("uni", weights=junk)


def test_clam_truncated_resnet_takes_a_full_imagenet_resnet50_file(tmp_path):
    """CLAM users have full ResNet50 weights; layer4 and fc are simply not used."""
    full = timm.create_model("resnet50", pretrained=False)
    path = tmp_path / "resnet50_full.pth"
    torch.save(full.state_dict(), path)
    model, _ = build_encoder("resnet50-trunc", weights=path)
    assert torch.equal(model.backbone.layer3[0].conv1.weight, full.layer3[0].conv1.weight)


# ---------------------------------------------------------------------------------------------
# transformers DINOv2 checkpoints (Phikon-v2's format)


@pytest.mark.parametrize("hf_image_size", [224, 64])  # 64: the stored position grid is resampled on load
def test_transformers_dinov2_checkpoint_gives_the_same_class_token(tmp_path, monkeypatch, hf_image_size):
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import save_file

    config = transformers.Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, patch_size=16,
                                       image_size=hf_image_size, layerscale_value=0.5, mlp_ratio=4)
    torch.manual_seed(0)
    hf = transformers.Dinov2Model(config).eval()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(path))
    tiny = EncoderSpec("vit_small_patch16_224", 64, timm_kwargs={"img_size": 224, "embed_dim": 64, "depth": 2,
                                                                  "num_heads": 4, "init_values": 1e-5},
                       source="test")
    monkeypatch.setitem(ENCODERS, "tiny-dinov2", tiny)
    model = load_weights("tiny-dinov2", path).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = hf(pixel_values=x).last_hidden_state[:, 0]
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)


def test_dinov2_renaming_fuses_query_key_value():
    d = 8
    q, k, v = (torch.full((d, d), float(i)) for i in range(3))
    state = {"encoder.layer.0.attention.attention.query.weight": q, "encoder.layer.0.attention.attention.key.weight": k,
             "encoder.layer.0.attention.attention.value.weight": v, "embeddings.mask_token": torch.zeros(1, d),
             "encoder.layer.0.layer_scale1.lambda1": torch.ones(d), "layernorm.bias": torch.zeros(d)}
    out = dinov2_hf_to_timm(state)
    assert sorted(out) == ["blocks.0.attn.qkv.weight", "blocks.0.ls1.gamma", "norm.bias"]
    assert torch.equal(out["blocks.0.attn.qkv.weight"], torch.cat([q, k, v]))
