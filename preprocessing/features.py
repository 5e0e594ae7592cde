"""Patch features for one slide, written to a Zarr store that appears only when complete.

Pipeline (one slide, one encoder)::

    reader (DataLoader worker, or the main process)      main process
    -----------------------------------------------      ------------
    own slide handle, opened lazily                  ->  uint8 batch (B, H, W, 3), pinned on CUDA
    patch read at the best pyramid level                 -> device (non_blocking), NHWC viewed as NCHW
    resized to the encoder's input (uint8, INTER_AREA)   -> float, (x - mean) / std on the device
                                                         -> encoder (inference_mode, channels-last,
                                                            bf16 autocast on CUDA)
                                                         -> rows appended to the store, chunk by chunk

Readers only read and resize uint8 pixels; normalisation happens once per batch in torch (on the
GPU when there is one), which moves 4× fewer bytes than float patches.  Reading is
:mod:`preprocessing.patch_reader`'s: levels stored as JPEG tiles (Aperio, generic TIFF) are
decoded straight from the file (:class:`~preprocessing.patch_reader.JpegTiles`): OpenSlide's
compositing costs 0.6 ms per 256² patch on top of the 0.2 ms decode.  The direct path is checked
against OpenSlide byte for byte on each reader's first patch and falls back to it otherwise.

Stain normalisation (``stain_target``, :mod:`preprocessing.stain`) is one more step on the
device, between the uint8 batch and ``(x - mean) / std``: Macenko and Reinhard batched in torch,
so it runs on the GPU with the encoder.  Each patch's status (normalised, or raw and why) and
fitted stains go to ``stain_status`` and ``stain_fit`` beside ``features``, and the method, its
target and the slide's median stain matrix to the ``stain_norm`` attribute.  Without it the store
is byte for byte what it was before the option existed.

Threads and workers: on the CPU the encoder's intra-op threads should take every core and the
main process should read (``num_workers=0``): a worker process (or thread) only competes with
the encoder for the same cores; on 2 cores the full stage then runs at 0.91× (demo-cnn) and
0.9-0.95× (resnet50) the speed of the encoder alone (``benchmarks/features.py``).  With a GPU
the CPU only reads and decodes: give it ``num_workers`` ≈ CPU cores - 1.

Output: ``features`` (N × D, float16 by default), ``coords`` (N × 2, level-0 px, in the order of
the coordinates file, which our tiler writes row by row so that reads walk along tile rows) and
attributes (encoder, weights sha256 or ``random:seed=N``, µm/px, patch size, library versions,
and the slide's ``case_id`` when given); :mod:`preprocessing.feature_store` owns this layout and
reads it back.
Rows are written in chunks of ``chunk_rows`` as they are computed, so memory does not grow with
the number of patches.  They go to a hidden sibling ``.<name>.tmp-partial`` that is renamed to
``<name>`` only when every row is written: a killed job never leaves anything under the final
name.  A rerun with the same slide, coordinates, encoder, weights and batch size resumes the
partial store at its last complete chunk; chunks are whole batches, so a resumed store is
byte-identical to an uninterrupted one.

A patch that cannot be read (a corrupt JPEG tile, say), even on a fresh handle, fails the whole
slide: the partial store is removed and the store written has no rows, ``status: failed`` and
the :class:`~preprocessing.slides.SlideError` naming the file and the patch's level-0 coordinates
as its ``reason``, as for a slide that could not be opened at all.  QC counts it, training leaves
it out, and the other slides of the cohort go on.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import timm
import torch
import zarr
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from .encoders import ENCODERS, build_encoder
from .feature_store import (CASE_ID, FEATURES, STAIN_FIT, STAIN_STATUS, ChunkWriter, create_store, partial_path,
                            rows_done)
from .io import _remove
from .patch_reader import SlidePatches, read_plan
from .slides import SlideError
from .stain import StainNormaliser
from .stain import summary as stain_summary
from .stain_target import read_target
from .tiling import read_coords

log = logging.getLogger(__name__)

CHUNK_PATCHES = 4096  # about this many rows per Zarr chunk (rounded to whole batches)
AUTOCAST = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def normalise(batch: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) → float32 (B, 3, H, W) in channels-last memory, ``(x/255 - mean) / std``.

    ``mean`` and ``std`` are (1, 3, 1, 1) tensors already multiplied by 255."""
    x = batch.permute(0, 3, 1, 2).float()  # a view of NHWC is channels-last NCHW; float() keeps the layout
    return x.sub_(mean).div_(std)


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """Tell glibc's malloc to keep freed blocks up to ``limit`` bytes for reuse instead of
    returning them to the OS.  A CNN on the CPU allocates and frees activations of 50-200 MB per
    batch; by default each is a fresh ``mmap`` whose pages the kernel zeroes on first touch, which
    cost a third of the CPU time of demo-cnn (1.5× faster with this; see benchmarks/features.py).
    Process-wide and idempotent; False where there is no glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from <malloc.h>
    return bool(libc.mallopt(M_MMAP_THRESHOLD, limit)) and bool(libc.mallopt(M_TRIM_THRESHOLD, limit))


def default_workers(device: torch.device) -> int:
    """DataLoader workers: none on the CPU (readers would take cores from the encoder), and on a
    GPU one per CPU core this process may use, less one for the main process, at most 8."""
    if device.type == "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores - 1))


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _versions() -> dict[str, str]:
    import openslide

    return {"torch": torch.__version__, "timm": timm.__version__, "zarr": zarr.__version__, "numpy": np.__version__,
            "openslide": openslide.__library_version__, "python": platform.python_version()}


# ---------------------------------------------------------------------------------------------
# extraction


def extract_features(slide_path: str | os.PathLike, coords_h5: str | os.PathLike, out_zarr: str | os.PathLike, *,
                     encoder: str = "demo-cnn", weights: str | os.PathLike | None = None, batch_size: int = 64,
                     num_workers: int | None = None, device: str | torch.device | None = None, dtype: str = "float16",
                     seed: int = 0, autocast: str | None = "bfloat16", chunk_rows: int | None = None,
                     prefetch_factor: int = 4, stain_target: str | os.PathLike | dict | None = None,
                     case_id: str | None = None) -> dict:
    """Encode every patch of a slide; write ``features`` (N×D), ``coords`` (N×2, level-0 px) and attributes.

    ``batch_size`` patches go through the encoder at once; ``num_workers`` DataLoader processes read
    them (0: the main process reads; None: :func:`default_workers`).  ``device`` defaults to CUDA when available.  ``dtype`` is
    the stored precision; ``autocast`` the CUDA compute precision (``bfloat16``, ``float16`` or
    ``None`` for float32; the CPU always computes in float32).  ``chunk_rows`` (rounded up to whole
    batches; default about 4096) is the Zarr chunk and the resume granularity.
    ``stain_target`` (a target JSON written by :func:`preprocessing.stain_target.write_target`, or its
    content) normalises each batch's stains on the device before the encoder
    (:mod:`preprocessing.stain`); the store then has ``stain_status`` and ``stain_fit`` per patch
    and a ``stain_norm`` attribute.  None: no normalisation, and no trace of it in the store.
    ``case_id``, when given, is stored as the ``case_id`` attribute: the case the bag loader groups
    the slide under (:mod:`preprocessing.feature_store`); None writes no such attribute, so the
    store is byte for byte what it was before the option existed.
    Returns the store's attributes.
    """
    spec = ENCODERS[encoder]
    if autocast not in (None, *AUTOCAST):
        raise ValueError(f"autocast must be one of {sorted(AUTOCAST)} or None, not {autocast!r}")
    dev = _device(device)
    if dev.type == "cpu":
        keep_freed_memory()
    if num_workers is None:
        num_workers = default_workers(dev)
    out = Path(out_zarr)
    coords, attrs = read_coords(coords_h5)
    n, size0 = len(coords), int(attrs["patch_size_level0"])
    chunk = batch_size * max(1, -(-(chunk_rows or CHUNK_PATCHES) // batch_size))  # whole batches
    model, weights_id = build_encoder(encoder, weights, seed)
    stain = None
    if stain_target is not None:
        target = stain_target if isinstance(stain_target, dict) else read_target(stain_target)
        stain = StainNormaliser(target, dev)
    level, read_size = read_plan(slide_path, size0, spec.input_size) if n else (0, size0)

    meta = {
        "encoder": encoder, "arch": spec.arch, "weights": weights_id, "dim": spec.dim,
        "input_size": spec.input_size, "mean": list(spec.mean), "std": list(spec.std), "encoder_mpp": spec.mpp,
        "target_mpp": float(attrs.get("target_mpp", spec.mpp)), "patch_size": int(attrs["patch_size"]),
        "patch_size_level0": size0, "read_level": int(level), "read_size": int(read_size),
        "n_patches": int(n), "slide": Path(slide_path).name, "status": str(attrs.get("status", "ok")),
        "reason": str(attrs.get("reason", "")), "batch_size": int(batch_size), "dtype": dtype,
        "device": dev.type, "compute_dtype": (autocast or "float32") if dev.type == "cuda" else "float32",
        "versions": _versions(),
    }
    if case_id is not None:
        meta[CASE_ID] = str(case_id)
    fingerprint = {k: meta[k] for k in ("encoder", "weights", "dtype", "batch_size", "device", "compute_dtype",
                                        "read_level", "read_size", "n_patches")}
    fingerprint.update(chunk=chunk, coords_sha256=hashlib.sha256(np.ascontiguousarray(coords).tobytes()).hexdigest(),
                       slide_bytes=os.path.getsize(slide_path) if n else 0)
    if stain is not None:
        fingerprint["stain"] = {"target": stain.target, **stain.settings()}

    tmp = partial_path(out)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    start = rows_done(tmp, fingerprint)
    try:
        if start == 0:
            root = create_store(tmp, coords, spec.dim, dtype, chunk, stain)
            root.attrs.update({"_fingerprint": fingerprint, "_rows_done": 0})
        else:
            root = zarr.open_group(str(tmp), mode="r+")
            log.info("%s: resuming at patch %d of %d", Path(slide_path).name, start, n)
        names = (FEATURES,) if stain is None else (FEATURES, STAIN_STATUS, STAIN_FIT)
        writer = ChunkWriter(root, start, chunk, names)
        if start < n:
            dataset = SlidePatches(str(slide_path), coords, level, read_size, spec.input_size)
            _encode(model.to(dev), dataset, writer, start, batch_size=batch_size, num_workers=num_workers,
                    device=dev, autocast=autocast, prefetch_factor=prefetch_factor, spec=spec,
                    desc=Path(slide_path).name[:40], stain=stain)
        writer.flush()
        if stain is not None:
            meta["stain_norm"] = stain_summary(stain.target, root[STAIN_STATUS][:], root[STAIN_FIT][:],
                                               stain.settings())
            _log_fallbacks(Path(slide_path).name, meta["stain_norm"])
        root.attrs.put(meta)  # the final attributes, without the resume bookkeeping
    except SlideError as err:  # an unreadable patch: the slide fails, the cohort goes on
        _remove(tmp)
        log.error("%s", err)
        meta.update(status="failed", reason=str(err), n_patches=0)
        if stain is not None:
            meta["stain_norm"] = stain_summary(stain.target, np.zeros(0, np.uint8), np.zeros((0, len(stain.columns))),
                                               stain.settings())
        create_store(tmp, coords[:0], spec.dim, dtype, chunk, stain).attrs.put(meta)
    except Exception:
        _remove(tmp)  # an error, not an interruption: nothing to resume
        raise
    if out.exists():
        _remove(out)  # os.replace cannot replace a non-empty folder
    os.replace(tmp, out)
    log.info("%s: %d patches encoded with %s (%s)", Path(slide_path).name, meta["n_patches"], encoder, weights_id)
    return meta


def _log_fallbacks(slide: str, summary: dict) -> None:
    if summary["n_fallback"]:
        log.warning("%s: %d of %d patches encoded without stain normalisation (%s)", slide, summary["n_fallback"],
                    summary["n_fallback"] + summary["n_normalised"],
                    ", ".join(f"{k}: {v}" for k, v in summary["fallback"].items() if v))


def _encode(model: torch.nn.Module, dataset: SlidePatches, writer: ChunkWriter, start: int, *, batch_size: int,
            num_workers: int, device: torch.device, autocast: str | None, prefetch_factor: int, spec,
            desc: str, stain: StainNormaliser | None = None) -> None:
    """Run the encoder over ``dataset[start:]`` (stain-normalised first, where ``stain`` is given)
    and append its rows to ``writer``.

    On CUDA the copy of batch k's output back to the host is waited for only after batch k+1
    was launched, so the GPU computes while the host writes."""
    cuda = device.type == "cuda"
    loader = DataLoader(Subset(dataset, range(start, len(dataset))), batch_size=batch_size, num_workers=num_workers,
                        pin_memory=cuda, prefetch_factor=prefetch_factor if num_workers else None)
    model = model.eval().to(memory_format=torch.channels_last)
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1) * 255
    amp = torch.autocast("cuda", dtype=AUTOCAST[autocast]) if cuda and autocast else nullcontext()
    pending = None  # (host tensor, CUDA event) of the previous batch
    with torch.inference_mode(), tqdm(total=len(dataset), initial=start, unit="patch", desc=desc,
                                      disable=None, mininterval=5) as bar:
        for batch in loader:
            x = batch.to(device, non_blocking=cuda)
            extra = ()
            if stain is not None:
                x, status, fit = stain(x)
                extra = (status.to("cpu", non_blocking=cuda), fit.to("cpu", non_blocking=cuda))
            with amp:
                y = model(normalise(x, mean, std))
            rows = (y.float().to("cpu", non_blocking=cuda), *extra)  # pinned host memory when non-blocking
            if cuda:
                event = torch.cuda.Event()
                event.record()
                if pending is not None:
                    pending[1].synchronize()
                    writer.append(*(t.numpy() for t in pending[0]))
                pending = (rows, event)
            else:
                writer.append(*(t.numpy() for t in rows))
            bar.update(len(batch))
        if pending is not None:
            pending[1].synchronize()
            writer.append(*(t.numpy() for t in pending[0]))
