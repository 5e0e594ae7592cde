"""Patch encoders by name: which timm architecture, its embedding size, input and normalisation.

Weights only ever come from a local file; nothing is downloaded. The demo encoder alone may run
with seeded random weights, and says so in what it writes.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderSpec:
    arch: str  # timm architecture name
    dim: int  # embedding size
    input_size: int = 224  # px fed to the network
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    mpp: float = 0.5  # µm/px the encoder was trained at
    timm_kwargs: dict = field(default_factory=dict)
    random_weights_allowed: bool = False  # only the demo encoder


ENCODERS: dict[str, EncoderSpec] = {
    # Small CNN with seeded random weights: runs anywhere with no download, for the demo cohort.
    "demo-cnn": EncoderSpec("resnet18", 512, random_weights_allowed=True),
    "resnet50": EncoderSpec("resnet50", 2048),
    # CLAM's encoder: ImageNet ResNet50 truncated after stage 3, average-pooled (1024-d).
    "resnet50-trunc": EncoderSpec("resnet50", 1024, timm_kwargs={"features_only": True, "out_indices": (3,)}),
}


class PooledFeatures(nn.Module):
    """Average-pool the last feature map of a ``features_only`` timm model."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)[-1].mean(dim=(2, 3))


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_encoder(name: str, weights: str | os.PathLike | None = None, seed: int = 0) -> tuple[nn.Module, str]:
    """The encoder in eval mode and a description of its weights (sha256 of the file, or 'random:<seed>')."""
    if name not in ENCODERS:
        raise KeyError(f"unknown encoder {name!r}; known: {', '.join(sorted(ENCODERS))}")
    spec = ENCODERS[name]
    torch.manual_seed(seed)
    model = timm.create_model(spec.arch, pretrained=False, num_classes=0, **spec.timm_kwargs)
    if spec.timm_kwargs.get("features_only"):
        model = PooledFeatures(model)
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: weights file for encoder {name!r} does not exist")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
        target = model.backbone if isinstance(model, PooledFeatures) else model
        missing, unexpected = target.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f"{path}: weights do not fit encoder {name!r} ({len(missing)} missing keys, e.g. {missing[:3]})")
        weights_id = "sha256:" + sha256_file(path)
    elif spec.random_weights_allowed:
        weights_id = f"random:seed={seed}"
    else:
        raise ValueError(f"encoder {name!r} needs a local weights file (config features.weights); nothing is downloaded")
    return model.eval(), weights_id
