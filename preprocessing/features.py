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
GPU when there is one), which moves 4× fewer bytes than float patches.  Levels stored as JPEG
tiles (Aperio, generic TIFF) are decoded straight from the file (:class:`JpegTiles`): OpenSlide's
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
import json
import logging
import os
import platform
from contextlib import nullcontext
from pathlib import Path

import cv2
import numpy as np
import timm
import torch
import zarr
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from .encoders import ENCODERS, build_encoder
from .feature_store import CASE_ID, COORDS, FEATURES, STAIN_FIT, STAIN_STATUS
from .io import _remove
from .slides import SlideError, best_level, open_slide
from .stain import StainNormaliser, read_target
from .stain import summary as stain_summary
from .tiling import read_coords

log = logging.getLogger(__name__)

CHUNK_PATCHES = 4096  # about this many rows per Zarr chunk (rounded to whole batches)
DIRECT_VENDORS = ("aperio", "generic-tiff")  # OpenSlide vendors whose levels are plain tiled TIFF pages
AUTOCAST = {"bfloat16": torch.bfloat16, "float16": torch.float16}


class JpegTiles:
    """One pyramid level of a tiled, JPEG-compressed TIFF (Aperio SVS, generic pyramidal TIFF),
    read straight from its tiles with tifffile (libjpeg-turbo through imagecodecs).

    OpenSlide composites every region through cairo: about 0.6 ms per 256² px on top of the
    0.2 ms JPEG decode, which on a 2-core CPU is more than a tenth of a small encoder's time.
    The few most recent tiles are kept, so that neighbouring unaligned patches decode each tile
    once per row.  :meth:`read` returns None where it cannot answer exactly (region outside the
    image, missing or undecodable tile): the caller then asks OpenSlide.
    """

    def __init__(self, path: str, size: tuple[int, int], keep: int = 8):
        import tifffile

        self._tif = tifffile.TiffFile(path)
        width, height = size
        pages = [p for p in self._tif.pages if p.is_tiled and p.compression == 7 and p.dtype == np.uint8
                 and p.shape == (height, width, 3) and p.planarconfig == 1]
        if not pages:
            self._tif.close()
            raise LookupError(f"{path}: no tiled JPEG page of {width}×{height} px")
        self._page = pages[0]
        self.width, self.height = width, height
        self.tw, self.th = self._page.tilewidth, self._page.tilelength
        self.cols = -(-width // self.tw)
        self._decode = self._page.decode
        self._tiles: dict[int, np.ndarray | None] = {}  # insertion-ordered: the oldest goes first
        self._keep = keep

    def _tile(self, row: int, col: int) -> np.ndarray | None:
        i = row * self.cols + col
        if i not in self._tiles:
            offset, count = self._page.dataoffsets[i], self._page.databytecounts[i]
            tile = None
            if count:
                fh = self._tif.filehandle
                fh.seek(offset)
                try:
                    tile = self._decode(fh.read(count), i, jpegtables=self._page.jpegtables)[0][0]
                except Exception as err:  # corrupt: OpenSlide reads it again and names the patch
                    log.debug("%s: tile %d undecodable: %s", self._tif.filehandle.path, i, err)
            if len(self._tiles) >= self._keep:
                del self._tiles[next(iter(self._tiles))]
            self._tiles[i] = tile
        return self._tiles[i]

    def read(self, x: int, y: int, size: int) -> np.ndarray | None:
        """RGB uint8 (size, size, 3) whose top-left is (x, y) px of this level, or None."""
        if x < 0 or y < 0 or x + size > self.width or y + size > self.height:
            return None
        r0, c0 = y // self.th, x // self.tw  # first and last tile row and column
        r1, c1 = (y + size - 1) // self.th, (x + size - 1) // self.tw
        if (r0, c0) == (r1, c1):  # inside one tile: a view, no copy
            tile = self._tile(r0, c0)
            return None if tile is None else tile[y - r0 * self.th:y - r0 * self.th + size,
                                                  x - c0 * self.tw:x - c0 * self.tw + size]
        out = np.empty((size, size, 3), np.uint8)
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                tile = self._tile(r, c)
                if tile is None:
                    return None
                ty0, tx0 = max(y, r * self.th), max(x, c * self.tw)  # overlap, level px
                ty1, tx1 = min(y + size, (r + 1) * self.th), min(x + size, (c + 1) * self.tw)
                out[ty0 - y:ty1 - y, tx0 - x:tx1 - x] = tile[ty0 - r * self.th:ty1 - r * self.th,
                                                             tx0 - c * self.tw:tx1 - c * self.tw]
        return out

    def close(self) -> None:
        self._tif.close()


class SlidePatches(Dataset):
    """Patches of one slide as uint8 (out_size, out_size, 3) RGB tensors.

    ``level`` and ``read_size`` (px at that level) say where and how much to read.  The slide is
    opened on first use, so each DataLoader worker gets its own handle.  Aperio and generic TIFF
    levels stored as JPEG tiles are read with :class:`JpegTiles` once its first patch matched
    OpenSlide's to the byte; anything else, and any patch it cannot read, goes through OpenSlide.
    """

    def __init__(self, slide_path: str, coords: np.ndarray, level: int, read_size: int, out_size: int,
                 direct: bool = True):
        self.slide_path, self.coords = str(slide_path), coords
        self.level, self.read_size, self.out_size = int(level), int(read_size), int(out_size)
        self.direct = direct
        self._slide = self._tiles = None

    def __len__(self) -> int:
        return len(self.coords)

    def __getstate__(self) -> dict:  # a handle never travels to another process
        return {**self.__dict__, "_slide": None, "_tiles": None}

    def _open(self, x: int, y: int) -> None:
        self._slide = open_slide(self.slide_path)
        ds = self._slide.level_downsamples[self.level]
        vendor = self._slide.properties.get("openslide.vendor")
        self._ds = int(ds) if ds == int(ds) else 0  # direct reads only on whole-number downsamples
        if not (self.direct and self._ds and self._slide.backend == "openslide" and vendor in DIRECT_VENDORS):
            return
        try:
            tiles = JpegTiles(self.slide_path, self._slide.level_dimensions[self.level])
        except (LookupError, OSError, ValueError) as err:
            log.debug("%s: no direct tile reads: %s", self.slide_path, err)
            return
        mine = tiles.read(x // self._ds, y // self._ds, self.read_size)
        theirs = self._openslide(x, y)
        if mine is not None and np.array_equal(mine, theirs):
            self._tiles = tiles
        else:
            log.info("%s: direct tile reads differ from OpenSlide's; reading through OpenSlide", self.slide_path)
            tiles.close()

    def _openslide(self, x: int, y: int) -> np.ndarray:
        return rgb_of(self._slide.read_region((x, y), self.level, (self.read_size, self.read_size)))

    def __getitem__(self, i: int) -> torch.Tensor:
        x, y = (int(v) for v in self.coords[i])
        if self._slide is None:
            self._open(x, y)
        patch = None
        if self._tiles is not None and x % self._ds == 0 and y % self._ds == 0:
            patch = self._tiles.read(x // self._ds, y // self._ds, self.read_size)
        if patch is None:
            patch = self._openslide(x, y)
        if self.read_size != self.out_size:  # never cv2.setNumThreads in a forked worker: it deadlocks
            patch = cv2.resize(patch, (self.out_size, self.out_size), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(np.ascontiguousarray(patch))


def rgb_of(region: Image.Image) -> np.ndarray:
    """RGB uint8 array of an RGBA region; fully transparent pixels (outside the scanned area)
    become white, as :func:`~preprocessing.slides.read_region_rgb` makes them.  A region without
    transparency, the usual case, takes one C conversion instead of three array copies."""
    if region.getchannel("A").getextrema()[0] == 255:
        return np.asarray(region.convert("RGB"))
    rgba = np.asarray(region)
    rgb = rgba[..., :3].copy()
    rgb[rgba[..., 3] == 0] = 255
    return rgb


def read_plan(slide_path: str | os.PathLike, patch_size_level0: int, out_size: int) -> tuple[int, int]:
    """(pyramid level, px to read there): the coarsest level that still gives ``out_size`` px or
    more for a patch of ``patch_size_level0`` level-0 px."""
    with open_slide(slide_path) as slide:
        level = best_level(slide, patch_size_level0 / out_size)
        return level, max(1, round(patch_size_level0 / slide.level_downsamples[level]))


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
# the partial store


def partial_path(out_zarr: str | os.PathLike) -> Path:
    """Where rows go while a slide is being encoded: a hidden sibling no glob for ``*.zarr`` matches."""
    out = Path(out_zarr)
    return out.with_name(f".{out.name}.tmp-partial")


def _rows_done(tmp: Path, fingerprint: dict) -> int:
    """Rows already in a partial store written with the same ``fingerprint``, else 0 (and the
    stale store is removed)."""
    if not tmp.exists():
        return 0
    try:
        attrs = json.loads((tmp / "zarr.json").read_text())["attributes"]
        if attrs.get("_fingerprint") == fingerprint:
            return int(attrs["_rows_done"])
        why = "written with other settings"
    except (OSError, ValueError, KeyError, TypeError) as err:  # torn by a kill: start again
        why = f"unreadable ({err})"
    log.info("%s: partial store %s; starting again", tmp, why)
    _remove(tmp)
    return 0


def _create_store(path: Path, coords: np.ndarray, dim: int, dtype: str, chunk: int,
                  stain: StainNormaliser | None = None) -> zarr.Group:
    """An empty ``features`` array (N × ``dim``) beside ``coords`` (N × 2), both in chunks of ``chunk`` rows;
    with stain normalisation also ``stain_status`` (N, uint8) and ``stain_fit`` (N × K float32) per patch."""
    root = zarr.open_group(str(path), mode="w")
    rows = max(1, min(len(coords), chunk))
    root.create_array(FEATURES, shape=(len(coords), dim), dtype=dtype, chunks=(rows, dim))
    root.create_array(COORDS, data=coords, chunks=(rows, 2))
    if stain is not None:
        root.create_array(STAIN_STATUS, shape=(len(coords),), dtype="uint8", chunks=(rows,))
        k = len(stain.columns)
        root.create_array(STAIN_FIT, shape=(len(coords), k), dtype="float32", chunks=(rows, k))
    return root


class _ChunkWriter:
    """Appends rows to ``root[name]`` for each of ``names`` (``features``, and the per-patch stain
    arrays when there are any) one whole chunk at a time and records progress (``_rows_done``)
    after each chunk, so a killed job can resume at the last complete chunk."""

    def __init__(self, root: zarr.Group, start: int, chunk_rows: int, names: tuple[str, ...] = (FEATURES,)):
        self.root, self.arrays = root, [root[name] for name in names]
        self.start = self.filled = start  # rows on disk; rows on disk + in the buffer
        self.buffers = [np.empty((chunk_rows, *a.shape[1:]), dtype=a.dtype) for a in self.arrays]

    def append(self, *columns: np.ndarray) -> None:
        """Rows of every array, in the order of ``names``."""
        done, n = 0, len(columns[0])
        while done < n:
            at = self.filled - self.start
            take = min(n - done, len(self.buffers[0]) - at)
            for buffer, rows in zip(self.buffers, columns):
                buffer[at:at + take] = rows[done:done + take]
            self.filled += take
            done += take
            if self.filled - self.start == len(self.buffers[0]):
                self.flush()

    def flush(self) -> None:
        if self.filled > self.start:
            for array, buffer in zip(self.arrays, self.buffers):
                array[self.start:self.filled] = buffer[:self.filled - self.start]
            self.start = self.filled
            self.root.attrs["_rows_done"] = self.start
            log.debug("%d rows written", self.start)


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
    ``stain_target`` (a target JSON written by :func:`preprocessing.stain.write_target`, or its
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
    start = _rows_done(tmp, fingerprint)
    try:
        if start == 0:
            root = _create_store(tmp, coords, spec.dim, dtype, chunk, stain)
            root.attrs.update({"_fingerprint": fingerprint, "_rows_done": 0})
        else:
            root = zarr.open_group(str(tmp), mode="r+")
            log.info("%s: resuming at patch %d of %d", Path(slide_path).name, start, n)
        names = (FEATURES,) if stain is None else (FEATURES, STAIN_STATUS, STAIN_FIT)
        writer = _ChunkWriter(root, start, chunk, names)
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
        _create_store(tmp, coords[:0], spec.dim, dtype, chunk, stain).attrs.put(meta)
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


def _encode(model: torch.nn.Module, dataset: SlidePatches, writer: _ChunkWriter, start: int, *, batch_size: int,
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
