"""Patch encoders by name: which timm architecture, its embedding size, input and normalisation.

Weights only ever come from a local file (safetensors or a torch checkpoint); nothing is
downloaded.  The demo encoder alone may run with seeded random weights, and says so in what it
writes (``random:seed=N``); every other encoder refuses to run without a file, and a file that
does not fit the architecture (missing keys, other shapes) is an error naming the file.

Sources of the facts in :data:`ENCODERS` (architecture, timm keyword arguments, embedding,
input size, normalisation, resolution):

* TRIDENT, ``trident/patch_encoder_models/load.py`` (github.com/mahmoodlab/TRIDENT): the timm
  kwargs with which UNI, UNI2-h, Virchow2, H-optimus-0 and Prov-GigaPath load their released
  checkpoints with ``strict=True``, their normalisation and Virchow2's pooling;
* the model cards on the Hugging Face hub (MahmoodLab/UNI, MahmoodLab/UNI2-h, paige-ai/Virchow2,
  bioptimus/H-optimus-0, prov-gigapath/prov-gigapath, owkin/phikon-v2);
* Phikon-v2: ViT-L/16 trained with DINOv2, no registers, 224 px at 0.5 µm/px, ImageNet mean/std,
  class token of the last layer (Filiot et al. 2024, arXiv:2409.09173; TRIDENT's loader).  It is
  released as a Hugging Face ``transformers`` Dinov2 checkpoint, which :func:`dinov2_hf_to_timm`
  renames to timm's layout;
* CLAM (github.com/mahmoodlab/CLAM): ImageNet ResNet50 truncated after stage 3, average-pooled.

Every pathology model here was trained on patches at 20× (about 0.5 µm/px).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from timm.layers import SwiGLUPacked, resample_abs_pos_embed
from torch import nn

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)  # H-optimus-0's own statistics (model card)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)
HALF = (0.5, 0.5, 0.5)  # timm's augreg ViTs

#: prefixes that training frameworks put before every key of a state dict
STRIP_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "trunk.", "_orig_mod.")
#: keys under which checkpoints nest the state dict
NESTED_KEYS = ("state_dict", "model", "model_state_dict", "teacher", "module")


@dataclass(frozen=True)
class EncoderSpec:
    arch: str  # timm architecture name
    dim: int  # embedding size
    input_size: int = 224  # px fed to the network (the patch is resized to input_size²)
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per-channel mean of [0, 1] RGB
    std: tuple[float, float, float] = IMAGENET_STD
    mpp: float = 0.5  # µm/px the encoder was trained at
    timm_kwargs: dict = field(default_factory=dict)
    pool: str = "model"  # "model": the network's own output; "cls+mean": class token ⊕ mean of patch tokens
    random_weights_allowed: bool = False  # only the demo encoder
    source: str = ""  # where the facts above come from


_VIT_224 = {"img_size": 224, "dynamic_img_size": True}

ENCODERS: dict[str, EncoderSpec] = {
    # Small CNN with seeded random weights: runs anywhere with no download, for the demo cohort.
    "demo-cnn": EncoderSpec("resnet18", 512, random_weights_allowed=True, source="timm resnet18, random weights"),
    "resnet50": EncoderSpec("resnet50", 2048, source="timm resnet50 (ImageNet weights, e.g. resnet50.tv_in1k)"),
    # CLAM's encoder: ImageNet ResNet50 truncated after stage 3, average-pooled (1024-d).
    "resnet50-trunc": EncoderSpec("resnet50", 1024, timm_kwargs={"features_only": True, "out_indices": (3,)},
                                  source="CLAM resnet_custom.resnet50_baseline; TRIDENT resnet50"),
    "vit-large-patch16": EncoderSpec("vit_large_patch16_224", 1024, mean=HALF, std=HALF,
                                     source="timm vit_large_patch16_224.augreg_in21k_ft_in1k pretrained_cfg"),
    "uni": EncoderSpec("vit_large_patch16_224", 1024,
                       timm_kwargs={**_VIT_224, "patch_size": 16, "init_values": 1e-5},
                       source="Hugging Face hub: MahmoodLab/UNI; TRIDENT UNIInferenceEncoder"),
    "uni2-h": EncoderSpec("vit_giant_patch14_224", 1536,
                          timm_kwargs={**_VIT_224, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5,
                                       "embed_dim": 1536, "mlp_ratio": 2.66667 * 2, "no_embed_class": True,
                                       "mlp_layer": SwiGLUPacked, "act_layer": nn.SiLU, "reg_tokens": 8},
                          source="Hugging Face hub: MahmoodLab/UNI2-h; TRIDENT UNIv2InferenceEncoder"),
    # Virchow2's embedding: class token (1280) concatenated with the mean of the 256 patch tokens
    # (its 4 register tokens are left out) = 2560.
    "virchow2": EncoderSpec("vit_huge_patch14_224", 2560, pool="cls+mean",
                            timm_kwargs={**_VIT_224, "init_values": 1e-5, "reg_tokens": 4, "mlp_ratio": 5.3375,
                                         "global_pool": "", "mlp_layer": SwiGLUPacked, "act_layer": nn.SiLU},
                            source="Hugging Face hub: paige-ai/Virchow2; TRIDENT Virchow2InferenceEncoder"),
    "h-optimus-0": EncoderSpec("vit_giant_patch14_reg4_dinov2", 1536, mean=HOPTIMUS_MEAN, std=HOPTIMUS_STD,
                               timm_kwargs={**_VIT_224, "init_values": 1e-5, "global_pool": "token"},
                               source="Hugging Face hub: bioptimus/H-optimus-0; TRIDENT HOptimus0InferenceEncoder"),
    # The tile encoder of Prov-GigaPath is timm's DINOv2 ViT-g with 16-px patches (its config.json).
    "prov-gigapath": EncoderSpec("vit_giant_patch14_dinov2", 1536,
                                 timm_kwargs={**_VIT_224, "in_chans": 3, "patch_size": 16, "embed_dim": 1536,
                                              "depth": 40, "num_heads": 24, "init_values": 1e-5, "mlp_ratio": 5.33334},
                                 source="Hugging Face hub: prov-gigapath/prov-gigapath; TRIDENT GigaPathInferenceEncoder"),
    # Released as a transformers Dinov2Model (CLS of last_hidden_state); its keys are renamed on load.
    "phikon-v2": EncoderSpec("vit_large_patch16_224", 1024,
                             timm_kwargs={**_VIT_224, "patch_size": 16, "init_values": 1e-5},
                             source="Hugging Face hub: owkin/phikon-v2; arXiv:2409.09173; "
                                    "TRIDENT Phikonv2InferenceEncoder"),
}


class PooledFeatures(nn.Module):
    """Average-pool the last feature map of a ``features_only`` timm model."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)[-1].mean(dim=(2, 3))


class ClassAndMeanTokens(nn.Module):
    """Class token concatenated with the mean of the patch tokens (register tokens left out), as
    Virchow2's model card defines its tile embedding: 2 × embed_dim wide."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone.forward_features(x)  # (B, prefix + patches, D), after the final norm
        patches = tokens[:, self.backbone.num_prefix_tokens:]
        return torch.cat([tokens[:, 0], patches.mean(dim=1)], dim=-1)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_architecture(name: str) -> nn.Module:
    """The encoder's network with freshly initialised weights, on the current default device (build
    it inside ``with torch.device('meta'):`` to get the structure without allocating memory)."""
    if name not in ENCODERS:
        raise KeyError(f"unknown encoder {name!r}; known: {', '.join(sorted(ENCODERS))}")
    spec = ENCODERS[name]
    model = timm.create_model(spec.arch, pretrained=False, num_classes=0, **spec.timm_kwargs)
    if spec.timm_kwargs.get("features_only"):
        return PooledFeatures(model)
    if spec.pool == "cls+mean":
        return ClassAndMeanTokens(model)
    return model


# ---------------------------------------------------------------------------------------------
# weights files


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a torch checkpoint (memory-mapped where the format allows)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) checkpoints cannot be memory-mapped
        state = torch.load(path, map_location="cpu", weights_only=True)
    while isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        nested = [state[k] for k in NESTED_KEYS if isinstance(state.get(k), dict)]
        if not nested:
            break
        state = nested[0]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict (a {type(state).__name__}); save model.state_dict()")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a prefix that every key shares (``module.`` from DataParallel, ``model.``, ...)."""
    changed = True
    while changed and state:
        changed = False
        for prefix in STRIP_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


_HF_BLOCK = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_HF_BLOCK_PARTS = {
    "attention.output.dense.": "attn.proj.", "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma",
    "mlp.weights_in.": "mlp.fc1.", "mlp.weights_out.": "mlp.fc2.", "norm1.": "norm1.", "norm2.": "norm2.",
    "mlp.fc1.": "mlp.fc1.", "mlp.fc2.": "mlp.fc2.",
}
_HF_TOP = {"embeddings.cls_token": "cls_token", "embeddings.position_embeddings": "pos_embed",
           "embeddings.register_tokens": "reg_token",
           "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
           "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
           "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias"}


def dinov2_hf_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face ``transformers`` Dinov2Model state dict to timm's VisionTransformer
    layout (query/key/value fused into ``qkv``; ``mask_token`` dropped).  The position embedding
    is left at its stored grid; :func:`_fit_pos_embed` resamples it to the model's."""
    out, qkv = {}, {}
    for key, value in state.items():
        if key == "embeddings.mask_token":
            continue
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
            continue
        m = _HF_BLOCK.match(key)
        if not m:
            out[key] = value  # left as is: reported as unexpected if the model has no such key
            continue
        i, rest = m.groups()
        if rest.startswith("attention.attention."):
            which, kind = rest[len("attention.attention."):].split(".")  # query|key|value, weight|bias
            qkv.setdefault((i, kind), {})[which] = value
            continue
        for old, new in _HF_BLOCK_PARTS.items():
            if rest.startswith(old):
                out[f"blocks.{i}.{new}{rest[len(old):]}"] = value
                break
        else:
            out[key] = value
    for (i, kind), parts in qkv.items():
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return out


def _fit_pos_embed(state: dict[str, torch.Tensor], target: nn.Module) -> None:
    """Resample a ViT's stored position embedding (bicubic, as DINOv2 and transformers interpolate
    at run time) when it was saved for another grid than the model's, e.g. 518 px vs 224 px."""
    pos, want = state.get("pos_embed"), getattr(target, "pos_embed", None)
    if pos is None or want is None or pos.shape == want.shape or pos.shape[-1] != want.shape[-1]:
        return
    prefix = 0 if getattr(target, "no_embed_class", False) else target.num_prefix_tokens
    state["pos_embed"] = resample_abs_pos_embed(pos.float(), new_size=list(target.patch_embed.grid_size),
                                                num_prefix_tokens=prefix, interpolation="bicubic", antialias=False)


def _load_into(target: nn.Module, state: dict[str, torch.Tensor], path: Path, name: str) -> None:
    """Check that ``state`` fits ``target`` (no missing key, no other shape) and load it."""
    expected = target.state_dict()
    missing = [k for k in expected if k not in state]
    wrong = [f"{k} {tuple(state[k].shape)} in the file vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    unexpected = [k for k in state if k not in expected]
    if missing or wrong:
        what = []
        if missing:
            what.append(f"{len(missing)} of {len(expected)} keys missing, e.g. {missing[:3]}")
        if wrong:
            what.append(f"{len(wrong)} with another shape, e.g. {wrong[:2]}")
        raise ValueError(f"{path}: weights do not fit encoder {name!r} ({ENCODERS[name].arch}): {'; '.join(what)}")
    if unexpected:  # e.g. a classifier head, or layer4 for CLAM's truncated ResNet50
        log.info("%s: %d keys not used by %s, e.g. %s", path, len(unexpected), name, unexpected[:3])
    state = {k: (state[k].float() if state[k].is_floating_point() else state[k]) for k in expected}
    target.load_state_dict(state, strict=True, assign=True)


def load_weights(name: str, weights: str | os.PathLike) -> nn.Module:
    """The encoder with the weights of a local file.  The network is built on the meta device and
    takes the file's tensors as they are (no random initialisation of a billion parameters)."""
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file for encoder {name!r} does not exist")
    try:
        state = _strip_prefixes(_read_state_dict(path))
    except Exception as err:  # noqa: BLE001 - pickle, zip, safetensors header errors: all 'cannot read'
        raise ValueError(f"{path}: cannot read weights for encoder {name!r}: {err}") from err
    if any(k.startswith("embeddings.patch_embeddings.") for k in state):  # a transformers checkpoint
        state = dinov2_hf_to_timm(state)
    with torch.device("meta"):
        model = build_architecture(name)
    target = getattr(model, "backbone", model)
    _fit_pos_embed(state, target)
    _load_into(target, state, path, name)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # buffers the file does not hold (non-persistent): build for real and copy the weights
        fresh = build_architecture(name)
        getattr(fresh, "backbone", fresh).load_state_dict(target.state_dict(), strict=True)
        model = fresh
    return model


def build_encoder(name: str, weights: str | os.PathLike | None = None, seed: int = 0) -> tuple[nn.Module, str]:
    """The encoder in eval mode and a description of its weights: ``sha256:<hex>`` of the file, or
    ``random:seed=<seed>`` for the demo encoder without a file."""
    if name not in ENCODERS:
        raise KeyError(f"unknown encoder {name!r}; known: {', '.join(sorted(ENCODERS))}")
    if weights:
        model = load_weights(name, weights)
        weights_id = "sha256:" + sha256_file(weights)
    elif ENCODERS[name].random_weights_allowed:
        torch.manual_seed(seed)
        model = build_architecture(name)
        weights_id = f"random:seed={seed}"
    else:
        raise ValueError(f"encoder {name!r} needs a local weights file (config features.weights); "
                         "nothing is downloaded")
    return model.eval(), weights_id
