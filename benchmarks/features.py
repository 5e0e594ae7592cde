"""Feature stage throughput and memory on generated Aperio slides.

    .venv/bin/python benchmarks/features.py [--encoder demo-cnn resnet50] [--size 10000] [--large 60000]
        [--limit 0 256] [--batch 64] [--workers 0 1] [--threads 2] [--repeats 3] [--rss-patches 1500]
        [--stain none macenko]

For each encoder and each (torch threads, DataLoader workers) setting it prints, in one run:

* ``full``: patches/s of the whole stage, slide → Zarr (build the encoder, open the slide, read,
  resize, normalise, encode, write, rename), i.e. one :func:`extract_features` call;
* ``forward``: patches/s of the same encoder on tensors already in memory (on the GPU, with
  bf16 autocast, when there is one), same batch size and patch count;
* ``ratio`` = full / forward (target on a 2-core CPU: ≥ 0.9; with stain normalisation ≥ 0.8).

``--stain`` repeats the full stage for each stain normalisation (``none``, ``macenko``,
``vahadane``, ``reinhard``), each normalising to a target fitted on a 64-patch mosaic of the
slide (:func:`preprocessing.stain_target.cohort_mosaic`), so the table shows the stage with and
without it.

Every measurement runs in a fresh process, as a Snakemake job encodes one slide (a process that
already ran the encoder has a large heap, which forked DataLoader workers would share
copy-on-write and make the parent copy page by page).  Both are timed ``--repeats`` times,
interleaved, and the best of each is reported (the median in brackets), so that other load on
the machine hits both alike.  ``--limit`` caps the patches per encoder (the first K coordinates
of the real slide; resnet50 does ~50 patches/s on 2 cores).

Then peak RSS of one extraction on the small (``--size``²) and the large (``--large``²) slide,
each in a fresh process, with the same number of patches (``--rss-patches``, spread over the
whole slide; 0 = all): the main process (``ru_maxrss``) and main + DataLoader workers (sampled
every 50 ms), and the growth in % (target ≤ 20 %).  Rows are written chunk by chunk, so memory
does not grow with the patch count.

Slides are written tile by tile (JPEG q90, 256-px tiles, pyramid levels 1, 4, 16 with the
Aperio layout of :func:`generators.slide_render.write_svs`), from a bank of 16 rendered H&E-like tiles,
and cached in ``--cache``.  Encoders other than demo-cnn get seeded random weights saved to a
local file: throughput does not depend on the values.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.big_slide import MPP, coords_h5, slide_and_coords  # noqa: E402
from preprocessing.encoders import ENCODERS, build_architecture, build_encoder  # noqa: E402
from preprocessing.feature_store import read_features  # noqa: E402
from preprocessing.features import extract_features, keep_freed_memory  # noqa: E402

def weights_for(encoder: str, cache: Path) -> Path | None:
    """None for the demo encoder; else a cached file of seeded random weights (safetensors)."""
    if ENCODERS[encoder].random_weights_allowed:
        return None
    from safetensors.torch import save_file

    path = cache / f"random-{encoder}.safetensors"
    if not path.exists():
        torch.manual_seed(0)
        model = build_architecture(encoder)
        save_file({k: v.contiguous() for k, v in getattr(model, "backbone", model).state_dict().items()}, str(path))
    return path


# ---------------------------------------------------------------------------------------------
# timings, each in a fresh process (as a Snakemake job runs one slide)


def forward_only(encoder: str, weights: Path | None, n: int, batch: int) -> float:
    """Patches/s of the encoder alone on normalised channels-last tensors already in memory,
    ``n`` patches in batches of ``batch`` (the last one partial, as in the full stage)."""
    spec = ENCODERS[encoder]
    cuda = torch.cuda.is_available()  # as extract_features: the GPU when there is one, bf16 autocast
    device = torch.device("cuda" if cuda else "cpu")
    model, _ = build_encoder(encoder, weights)
    model = model.eval().to(device, memory_format=torch.channels_last)
    x = torch.randn(batch, 3, spec.input_size, spec.input_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
    with torch.inference_mode(), amp:
        if cuda:  # kernels chosen and memory pooled before timing, as the full stage's first batch does
            model(x)
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, n, batch):
            model(x[: min(batch, n - i)]).float().cpu()  # the full stage copies each batch back too
    return n / (time.perf_counter() - start)


class PeakRss:
    """Largest sum of RSS over this process and its children (DataLoader workers), sampled every
    50 ms in a thread; ``ru_maxrss`` alone cannot see workers (``import torch`` already starts a
    500 MB child of its own)."""

    def __enter__(self):
        import threading

        import psutil

        self.peak, self._stop = 0, threading.Event()
        me = psutil.Process()

        def sample():
            while not self._stop.wait(0.05):
                try:
                    procs = [me, *me.children(recursive=True)]
                    self.peak = max(self.peak, sum(p.memory_info().rss for p in procs))
                except psutil.Error:
                    pass

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def child(args: argparse.Namespace) -> None:
    """One measurement in this fresh process; prints a JSON line."""
    kind, slide, h5, out, weights, n, target = args.child
    torch.set_num_threads(args.threads[0])
    keep_freed_memory()  # as extract_features does on the CPU, so that forward-only runs alike
    weights = weights or None
    if kind == "forward":
        print(json.dumps({"rate": forward_only(args.encoder[0], weights, int(n), args.batch)}))
        return
    with PeakRss() if kind == "rss" else nullcontext() as rss:  # the sampler costs CPU: not in timed runs
        start = time.perf_counter()
        meta = extract_features(slide, h5, out, encoder=args.encoder[0], weights=weights, batch_size=args.batch,
                                num_workers=args.workers[0], stain_target=target or None)
        seconds = time.perf_counter() - start
    rows = len(read_features(out)[0])
    assert rows == meta["n_patches"] == int(n)
    print(json.dumps({"rate": rows / seconds, "main": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "total": rss.peak if rss else None}))


def measure(kind: str, encoder: str, threads: int, workers: int, batch: int, slide: Path, h5: Path, out: Path,
            weights: Path | None, n: int, target: Path | None = None) -> dict:
    run = subprocess.run([sys.executable, __file__, "--encoder", encoder, "--threads", str(threads), "--workers",
                          str(workers), "--batch", str(batch), "--child", kind, str(slide), str(h5), str(out),
                          str(weights or ""), str(n), str(target or "")], capture_output=True, text=True, cwd=ROOT)
    if run.returncode:
        raise RuntimeError(run.stderr[-3000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", nargs="+", default=["demo-cnn", "resnet50"])
    p.add_argument("--size", type=int, default=10_000, help="side of the small slide, px")
    p.add_argument("--large", type=int, default=60_000, help="side of the large slide (RSS only), px; 0: skip")
    p.add_argument("--limit", type=int, nargs="+", default=[0, 256],
                   help="patches per encoder (first K coordinates; 0 = all), one value or one per encoder")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    p.add_argument("--threads", type=int, nargs="+", default=[2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rss-patches", type=int, default=1500, help="patches of each RSS run, spread over the slide")
    p.add_argument("--cache", type=Path, default=Path("/tmp/healnet-bench"))
    p.add_argument("--stain", nargs="+", default=["none", "macenko"],
                   help="stain normalisations of the full stage: none, macenko, vahadane, reinhard")
    p.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    slide, coords = slide_and_coords(args.cache, args.size)
    limits = args.limit if len(args.limit) == len(args.encoder) else args.limit[:1] * len(args.encoder)
    work = args.cache / "run"
    rows = []
    targets = stain_targets(args.stain, slide, coords_h5(work / "mosaic.h5", coords, args.size), args.cache)
    for encoder, limit in zip(args.encoder, limits):
        weights = weights_for(encoder, args.cache)
        chosen = coords[:limit] if limit else coords
        h5 = coords_h5(work / f"{encoder}-{len(chosen)}.h5", chosen, args.size)
        for threads in args.threads:
            for workers in args.workers:
                fwd, full = [], {m: [] for m in args.stain}
                for _ in range(args.repeats):  # interleaved, so background load hits all alike
                    common = (encoder, threads, workers, args.batch, slide, h5, work / "out.zarr", weights, len(chosen))
                    fwd.append(measure("forward", *common)["rate"])
                    for method in args.stain:
                        full[method].append(measure("full", *common, targets.get(method))["rate"])
                for method in args.stain:
                    rows.append((encoder, len(chosen), threads, workers, method, max(full[method]),
                                 statistics.median(full[method]), max(fwd), statistics.median(fwd)))
                    print(f"  {encoder} threads={threads} workers={workers} stain={method}: full "
                          f"{max(full[method]):.1f} forward {max(fwd):.1f} patches/s", flush=True)

    print(f"\nthroughput, {args.size}² px slide at {MPP} µm/px, batch {args.batch}, best of {args.repeats} "
          f"(median), patches/s, each run a fresh process")
    print(f"{'encoder':<10} {'patches':>7} {'threads':>7} {'workers':>7} {'stain':>8} {'full stage':>16} "
          f"{'forward only':>16} {'ratio':>13}")
    for enc, n, th, wk, method, full, full_med, fwd, fwd_med in rows:
        print(f"{enc:<10} {n:>7} {th:>7} {wk:>7} {method:>8} {full:>7.1f} ({full_med:>6.1f}) {fwd:>7.1f} "
              f"({fwd_med:>6.1f}) {full / fwd:>5.2f} ({full_med / fwd_med:.2f})")

    if args.large:
        peak_rss_table(args, work)


def stain_targets(methods: list[str], slide: Path, h5: Path, cache: Path) -> dict[str, Path]:
    """A target JSON per stain normalisation but ``none``, fitted on a 64-patch mosaic of the slide."""
    from preprocessing.stain_target import cohort_mosaic, fit_target, write_target

    out = {}
    for method in (m for m in methods if m != "none"):
        out[method] = cache / f"stain-{method}.json"
        write_target(fit_target(method, cohort_mosaic([(str(slide), str(h5))], 64), "benchmark slide"), out[method])
    return out


def peak_rss_table(args: argparse.Namespace, work: Path) -> None:
    """Peak RSS of one extraction on the small and on the large slide, same patch count."""
    for encoder in args.encoder:
        threads, workers = args.threads[0], args.workers[0]
        weights = weights_for(encoder, args.cache)
        results = []
        for side in (args.size, args.large):
            path, all_coords = slide_and_coords(args.cache, side)
            k = min(args.rss_patches or len(all_coords), len(all_coords))
            picked = all_coords[np.linspace(0, len(all_coords) - 1, k).round().astype(int)]
            h5 = coords_h5(work / f"rss-{side}.h5", picked, side)
            results.append((side, measure("rss", encoder, threads, workers, args.batch, path, h5,
                                          work / f"rss-{side}.zarr", weights, k, None)))
        print(f"\npeak RSS, {encoder}, threads {threads}, workers {workers}, batch {args.batch}, "
              f"{args.rss_patches or 'all'} patches spread over the slide, fresh process per slide")
        print(f"{'slide px':>12} {'patches/s':>9} {'main MiB':>9} {'main+workers MiB':>17}")
        for side, res in results:
            print(f"{f'{side}²':>12} {res['rate']:>9.1f} {res['main'] / 2**20:>9.0f} {res['total'] / 2**20:>17.0f}")
        (_, a), (_, b) = results
        print(f"growth {args.size}² → {args.large}²: main {100 * (b['main'] / a['main'] - 1):+.1f} %, "
              f"main+workers {100 * (b['total'] / a['total'] - 1):+.1f} % (target ≤ 20 %)")


if __name__ == "__main__":
    main()
