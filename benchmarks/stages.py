"""Per-stage figures on one generated slide: seconds for tissue and tiling, patches/s of the full
feature stage (slide → Zarr) against the encoder's forward pass alone on tensors in memory.

    .venv/bin/python benchmarks/stages.py [--encoder demo-cnn] [--size 4096 3072] [--batch 64] [--workers 1]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from generators.slide_render import render_slide, write_svs
from preprocessing.encoders import ENCODERS, build_encoder
from preprocessing.features import extract_features
from preprocessing.tiling import TilingParams, tile_slide
from preprocessing.tissue_geojson import segment_slide


def forward_only(encoder: str, n: int, batch: int) -> float:
    """Patches/s of the encoder alone on random tensors already in memory."""
    spec = ENCODERS[encoder]
    model, _ = build_encoder(encoder)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, spec.input_size, spec.input_size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model(x)  # warm-up
        start, done = time.perf_counter(), 0
        while done < n:
            model(x)
            done += batch
    return done / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--encoder", default="demo-cnn")
    p.add_argument("--size", type=int, nargs=2, default=(4096, 3072))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rgb, _ = render_slide(np.random.default_rng(0), tuple(args.size), 0.5, 0.5)
        write_svs(tmp / "slide.svs", rgb, mpp=0.5, app_mag=20)
        rows = []
        t = time.perf_counter()
        segment_slide(tmp / "slide.svs", tmp / "t.geojson", tmp / "t.png")
        rows.append(("tissue", time.perf_counter() - t, ""))
        t = time.perf_counter()
        n = tile_slide(tmp / "t.geojson", tmp / "p.h5", TilingParams())["n_patches"]
        rows.append(("tiling", time.perf_counter() - t, f"{n} patches"))
        t = time.perf_counter()
        extract_features(tmp / "slide.svs", tmp / "p.h5", tmp / "f.zarr", encoder=args.encoder,
                         batch_size=args.batch, num_workers=args.workers)
        full = n / (time.perf_counter() - t)
        fwd = forward_only(args.encoder, max(n, args.batch * 3), args.batch)
    print(f"slide {args.size[0]}x{args.size[1]} px at 0.5 µm/px, encoder {args.encoder}, batch {args.batch}, "
          f"workers {args.workers}, torch threads {args.threads}")
    print(f"{'stage':<28}{'seconds':>10}  note")
    for name, sec, note in rows:
        print(f"{name:<28}{sec:>10.2f}  {note}")
    print(f"{'features, full stage':<28}{n / full:>10.2f}  {full:.1f} patches/s")
    print(f"{'encoder forward only':<28}{'':>10}  {fwd:.1f} patches/s")
    print(f"{'ratio full / forward':<28}{'':>10}  {full / fwd:.2f}")


if __name__ == "__main__":
    main()
