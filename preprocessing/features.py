"""Patch features for one slide, written to a Zarr store that appears only when complete.

DataLoader workers each open their own slide handle and read, resize and normalise patches
while the main process runs the encoder, so the encoder does not wait on I/O.

A patch that cannot be read (a corrupt JPEG tile, say), even on a fresh handle, fails the whole
slide with a :class:`~preprocessing.slides.SlideError` naming the file and the patch's level-0
coordinates, and no store is written: a store always holds every patch of its coordinates file.
"""
from __future__ import annotations

import logging
import os
import platform
from pathlib import Path

import cv2
import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .encoders import ENCODERS, build_encoder
from .io import atomic_path
from .slides import best_level, open_slide, read_region_rgb
from .tiling import read_coords

log = logging.getLogger(__name__)


class SlidePatches(Dataset):
    """Patches of one slide at its coordinates, as normalised CHW float tensors."""

    def __init__(self, slide_path: str, coords: np.ndarray, patch_size_level0: int, out_size: int,
                 mean: tuple[float, ...], std: tuple[float, ...]):
        self.slide_path, self.coords = slide_path, coords
        self.size0, self.out_size = int(patch_size_level0), int(out_size)
        self.mean = np.asarray(mean, np.float32) * 255
        self.std = np.asarray(std, np.float32) * 255
        self._slide = None  # opened lazily, once per worker process

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._slide is None:
            self._slide = open_slide(self.slide_path)
            self.level = best_level(self._slide, self.size0 / self.out_size)
            ds = self._slide.level_downsamples[self.level]
            self.read_size = max(1, round(self.size0 / ds))
        x, y = self.coords[i]
        patch = read_region_rgb(self._slide, x, y, self.level, (self.read_size, self.read_size))
        if self.read_size != self.out_size:
            patch = cv2.resize(patch, (self.out_size, self.out_size), interpolation=cv2.INTER_AREA)
        patch = (patch.astype(np.float32) - self.mean) / self.std
        return torch.from_numpy(patch.transpose(2, 0, 1).copy())


def extract_features(slide_path: str | os.PathLike, coords_h5: str | os.PathLike, out_zarr: str | os.PathLike, *,
                     encoder: str = "demo-cnn", weights: str | None = None, batch_size: int = 64,
                     num_workers: int = 0, device: str | None = None, dtype: str = "float16", seed: int = 0) -> dict:
    """Encode every patch of a slide; write ``features`` (N×D), ``coords`` (N×2, level-0 px) and attributes."""
    spec = ENCODERS[encoder]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    coords, attrs = read_coords(coords_h5)
    model, weights_id = build_encoder(encoder, weights, seed)
    model = model.to(device).to(memory_format=torch.channels_last)
    dataset = SlidePatches(str(slide_path), coords, int(attrs["patch_size_level0"]), spec.input_size, spec.mean, spec.std)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=device == "cuda",
                        persistent_workers=False, prefetch_factor=4 if num_workers else None)
    features = np.zeros((len(coords), spec.dim), dtype=dtype)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    start = 0
    with torch.inference_mode(), autocast:
        for batch in tqdm(loader, desc=Path(slide_path).name[:40], unit="batch", disable=None):
            batch = batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            out = model(batch).float().cpu().numpy()
            features[start:start + len(out)] = out
            start += len(out)
    meta = {
        "encoder": encoder, "arch": spec.arch, "weights": weights_id, "dim": spec.dim,
        "target_mpp": float(attrs.get("target_mpp", spec.mpp)), "patch_size": int(attrs["patch_size"]),
        "patch_size_level0": int(attrs["patch_size_level0"]), "n_patches": int(len(coords)),
        "slide": Path(slide_path).name, "status": str(attrs.get("status", "ok")), "reason": str(attrs.get("reason", "")),
        "versions": {"torch": torch.__version__, "zarr": zarr.__version__, "python": platform.python_version()},
    }
    with atomic_path(out_zarr) as tmp:
        root = zarr.open_group(str(tmp), mode="w")
        chunk = max(1, min(len(coords), 4096))
        root.create_array("features", data=features, chunks=(chunk, spec.dim))
        root.create_array("coords", data=coords, chunks=(chunk, 2))
        root.attrs.update(meta)
    log.info("%s: %d patches encoded with %s (%s)", Path(slide_path).name, len(coords), encoder, weights_id)
    return meta


def read_features(zarr_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict]:
    """Features (N×D), coords (N×2, level-0 px) and attributes of one slide's store."""
    root = zarr.open_group(str(zarr_path), mode="r")
    return root["features"][:], root["coords"][:], dict(root.attrs)
