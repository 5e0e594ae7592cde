"""A large Aperio SVS for ``benchmarks/features.py``, written tile by tile from H&E-like tiles (so
its memory does not grow with its size), cached, and the grid of its whole 256-px patches."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import tifffile

from generators.slide_render import APERIO_HEAD, render_slide
from preprocessing.tiling import write_coords

TILE = 256
MPP = 0.5


def tile_bank(n: int = 16, seed: int = 0) -> list[np.ndarray]:
    """``n`` H&E-like 256² tiles cut from one rendered image."""
    side = TILE * int(np.ceil(np.sqrt(n)))
    rgb, _ = render_slide(np.random.default_rng(seed), (side, side), MPP, 0.5)
    k = side // TILE
    return [np.ascontiguousarray(rgb[i * TILE:(i + 1) * TILE, j * TILE:(j + 1) * TILE]) for i in range(k)
            for j in range(k)][:n]


def write_big_svs(path: Path, side: int, quality: int = 90) -> None:
    """A ``side``² px Aperio SVS at 0.5 µm/px written tile by tile (memory independent of ``side``).
    Pyramid levels reuse the tile bank: they have the right sizes, not a true downsample."""
    bank = tile_bank()

    def tiles(width: int, height: int):
        for ty in range(-(-height // TILE)):
            for tx in range(-(-width // TILE)):
                yield bank[(ty * 7 + tx * 13) % len(bank)]

    dims = f"{side}x{side} [0,0 {side}x{side}]"
    meta = (f"|AppMag = 20|StripeWidth = 2040|ScanScope ID = SS1234|Filename = bench{side}|MPP = {MPP!r}"
            f"|OriginalWidth = {side}|OriginalHeight = {side}")
    opts = dict(photometric="rgb", compression="jpeg", compressionargs={"level": quality}, metadata=None,
                software=False)
    thumb = np.full((side // 64, side // 64, 3), 230, np.uint8)
    tmp = path.with_name(path.name + ".tmp")
    with tifffile.TiffWriter(tmp, bigtiff=side > 30000) as tif:
        tif.write(tiles(side, side), shape=(side, side, 3), dtype=np.uint8, tile=(TILE, TILE),
                  description=f"{APERIO_HEAD}{dims} ({TILE}x{TILE}) JPEG/RGB Q={quality}{meta}", **opts)
        tif.write(thumb, description=f"{APERIO_HEAD}{side}x{side} -> {thumb.shape[1]}x{thumb.shape[0]} - {meta}",
                  **opts)
        for ds in (4, 16):
            s = side // ds
            tif.write(tiles(s, s), shape=(s, s, 3), dtype=np.uint8, tile=(TILE, TILE),
                      description=f"{APERIO_HEAD}{dims} -> {s}x{s} JPEG/RGB Q={quality}", **opts)
    tmp.replace(path)


def slide_and_coords(cache: Path, side: int) -> tuple[Path, np.ndarray]:
    """The cached slide of ``side``² px and the level-0 corners of all its whole 256-px patches, row-major."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"bench-{side}.svs"
    if not path.exists():
        t = time.perf_counter()
        write_big_svs(path, side)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.0f} s", flush=True)
    xs = np.arange(0, side - TILE + 1, TILE)
    gx, gy = np.meshgrid(xs, xs)
    return path, np.stack([gx.ravel(), gy.ravel()], axis=1)


def coords_h5(path: Path, coords: np.ndarray, side: int) -> Path:
    write_coords(path, coords, {"width": side, "height": side, "mpp": MPP, "slide_id": path.stem},
                 patch_size=TILE, size0=TILE, target_mpp=MPP)
    return path
