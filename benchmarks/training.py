"""HEALNet training throughput and memory with lazy bags read from float16 Zarr stores, and one
training step against the published code's computation.

    .venv/bin/python benchmarks/training.py                      # default: ~5 min on 2 cores
    .venv/bin/python benchmarks/training.py --cases 500          # the issue's full setting (~20 GB of stores)
        [--patches 2000 20000] [--dim 1024] [--epochs 2] [--batch 4] [--threads 2]
        [--max-patches 0] [--no-recompute] [--cache DIR]
    .venv/bin/python benchmarks/training.py --step               # ours against reference-style, ~1 min
        [--patches 2000 8000] [--repeats 15] [--steps 2] [--dim 1024] [--batch 4] [--threads 2]

``--step``: one training step (forward + backward + Adam, in-memory tensors, batch ``--batch``,
``--threads`` threads) of HEALNet (``ours``, :mod:`healnet.model`) and of ``reference-style``
(:class:`ReferenceStyle` of ``reference_healnet.py``, the computation of the published HEALNet code), both in the BLCA-tuned
shape, with the same data, loss (NLL + L1) and optimiser.  The two alternate, ``--steps`` steps each,
``--repeats`` times (the order flipped every repeat), so that other processes on the machine slow
both alike; the table gives the median seconds per step and the median of the per-repeat ratios,
in wall-clock and in CPU time (both threads; time spent waiting for a core is not counted).  Unless set,
``OMP_WAIT_POLICY=PASSIVE`` (before torch loads): with spinning OpenMP threads on a busy machine the
step time measures the scheduler, not the computation.

For each bag size (``--patches``) it generates ``--cases`` cases, one float16 Zarr store each
(``--dim`` channels, chunks of 4096 rows as the feature stage writes them; cached in ``--cache``),
then, in a fresh process per measurement (so that peak RSS is that measurement's own):

* opens the cohort lazily (:func:`healnet.bags.open_bags`: shapes and coordinates only), fits the
  fold (the streaming WSI statistics pass over every patch: ``prepare s``);
* trains HEALNet with the BLCA-tuned shape (:data:`BLCA`) plus a 200-gene RNA modality, forward + backward
  + Adam, ``--epochs`` epochs of every case; bags are read from disk batch by batch, one batch
  ahead in a background thread, and ``--max-patches 0`` (default) keeps every patch, as the
  reference implementation does;
* reports seconds per epoch, per case and epoch, cases/s, and peak RSS (``ru_maxrss``).

Rows ``ours`` compute each context's LayerNorm once per forward and its keys/values once per
weight set; rows ``recompute`` (unless ``--no-recompute``) re-normalise and re-project the raw
context in every layer (``reuse_context=False``), the reference's way, on the same machine.  The
reference's own figures quoted by the issue (≈0.045 s per case and epoch at 2 000 patches, ≈0.17 s
at 8 000, peak RSS up to 1.9 GB) come from other hardware: the ratio against them is indicative.
Last, the data size (on disk, and as float32 in memory, what an eager loader would hold) against
the peak RSS: bags are lazy, so a cohort larger than RAM trains.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

if __name__ == "__main__" and "--step" in sys.argv:
    # idle OpenMP threads sleep instead of spinning: on a shared machine a spinning worker takes the core
    # its own main thread needs (here, with other jobs running, a step took up to 13× longer)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.reference_healnet import BLCA, BLCA_TEXT, GENES, print_step_table, step_rows  # noqa: E402

REFERENCE = {2000: 0.045, 8000: 0.17}  # s per case per epoch, reference implementation (from the issue)
REFERENCE_RSS_MB = 1900


def stores_for(cache: Path, cases: int, patches: int, dim: int) -> list[Path]:
    """``cases`` float16 stores of ``patches`` × ``dim`` (generated once, seeded, written atomically)."""
    import zarr

    from preprocessing.feature_store import COORDS, FEATURES  # the store's layout is feature_store's
    from preprocessing.io import atomic_path

    folder = cache / f"p{patches}-d{dim}"
    paths = []
    for i in range(cases):
        path = folder / f"TCGA-BM-{i:04d}-01Z-00-DX1.zarr"
        if not path.exists():
            rng = np.random.default_rng(i)
            feats = rng.standard_normal((patches, dim), dtype=np.float32).astype(np.float16)
            coords = rng.integers(0, 100_000, (patches, 2))
            with atomic_path(path) as tmp:
                root = zarr.open_group(str(tmp), mode="w")
                root.create_array(FEATURES, data=feats, chunks=(min(patches, 4096), dim))
                root.create_array(COORDS, data=coords, chunks=(min(patches, 4096), 2))
        paths.append(path)
    return paths


def du(paths: list[Path]) -> int:
    return sum(f.stat().st_size for p in paths for f in p.rglob("*") if f.is_file())


def worker(spec: dict) -> dict:
    """One measurement, in its own process."""
    import pandas as pd

    from healnet.bags import bounded_heap, open_bags
    from healnet.data import Cohort
    from healnet.folds import prepare_fold
    from healnet.survival import nll_loss
    from healnet.model import l1_penalty
    from healnet.train import _batches, _run
    from healnet.train_config import TrainConfig
    from healnet.zoo import build_model

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    if spec.get("bounded_heap", True):
        bounded_heap()  # as train_fold_from_files does
    paths = [Path(p) for p in spec["stores"]]
    bags, positions, dim = open_bags(paths)
    ids = sorted(bags)
    rng = np.random.default_rng(0)
    survival = pd.DataFrame({"time": rng.exponential(1000, len(ids)) + 1, "event": rng.random(len(ids)) < 0.6},
                            index=pd.Index(ids, name="case_id"))
    rna = pd.DataFrame(rng.lognormal(3, 1, (len(ids), GENES)), index=ids, columns=[f"G{j}" for j in range(GENES)])
    cohort = Cohort(survival, bags, positions, {"rna": rna})
    cfg = TrainConfig(batch_size=spec["batch"], max_patches=spec["max_patches"] or None, omic_top_k=GENES,
                      device="cpu", model=BLCA)
    start_rss_mb = _rss_mb()
    t = time.perf_counter()
    subsets, _, _ = prepare_fold(cohort, {"train": ids, "val": ids[:1], "test": ids[:1]}, cfg)
    prepare_s = time.perf_counter() - t
    train = subsets["train"]
    model = build_model("healnet", input_channels=[dim, GENES], modalities=["wsi", "rna"], num_classes=4, **BLCA)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    epochs = []
    for _ in range(spec["epochs"]):
        model.train()
        order = torch.randperm(len(ids), generator=gen).numpy()
        batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        t = time.perf_counter()
        for index, batch in _batches(train, batches, [dim, GENES], cfg):
            logits = _run(model, batch, cfg, torch.device("cpu"), reuse_context=spec["reuse"])
            loss = nll_loss(logits, torch.from_numpy(train.labels[index]), torch.from_numpy(train.events[index]))
            loss = loss + 1e-5 * l1_penalty(model)
            opt.zero_grad()
            loss.backward()
            opt.step()
        epochs.append(time.perf_counter() - t)
    return {"prepare_s": prepare_s, "epoch_s": epochs, "start_rss_mb": start_rss_mb,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _ram_gb() -> float:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("MemTotal")) / 1e6


def _rss_mb() -> float:
    """Current resident set size (after the imports and opening the cohort)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def measure(spec: dict) -> dict:
    run = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                         cwd=ROOT)
    if run.returncode != 0:
        raise RuntimeError(f"measurement {spec['label']} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=32)
    p.add_argument("--patches", type=int, nargs="+", help="bag sizes (default 2000 20000; with --step 2000 8000)")
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs; the figures are of the fastest")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-patches", type=int, default=0, help="subsample bags to this many patches (0: keep all)")
    p.add_argument("--no-recompute", action="store_true", help="skip the per-layer recompute rows")
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                   / "healnet-pipeline" / "bench-training")
    p.add_argument("--step", action="store_true", help="one training step: ours against reference-style")
    p.add_argument("--repeats", type=int, default=15, help="with --step: alternating repeats (median reported)")
    p.add_argument("--steps", type=int, default=2, help="with --step: steps per repeat")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.step:
        before = os.getloadavg()[0]
        rows = step_rows(args.patches or [2000, 8000], dim=args.dim, batch=args.batch, threads=args.threads,
                         repeats=args.repeats, steps=args.steps)
        print_step_table(rows, args, (before, os.getloadavg()[0]))
        return
    args.patches = args.patches or [2000, 20000]

    rows, load = [], os.getloadavg()[0]
    for n in args.patches:
        t = time.perf_counter()
        stores = stores_for(args.cache, args.cases, n, args.dim)
        print(f"{args.cases} stores of {n} × {args.dim} float16 ready in {time.perf_counter() - t:.0f} s "
              f"({args.cache})", flush=True)
        for label, reuse in (("ours", True), ("recompute", False)):
            if label == "recompute" and args.no_recompute:
                continue
            spec = {"label": label, "reuse": reuse, "stores": [str(s) for s in stores], "threads": args.threads,
                    "batch": args.batch, "epochs": args.epochs, "max_patches": args.max_patches}
            r = measure(spec)
            used = min(n, args.max_patches) if args.max_patches else n
            epoch = min(r["epoch_s"])
            rows.append({"patches": n, "used": used, "variant": label, "epoch_s": epoch,
                         "s_per_case": epoch / args.cases, "cases_per_s": args.cases / epoch,
                         "prepare_s": r["prepare_s"], "peak_rss_mb": r["peak_rss_mb"],
                         "start_rss_mb": r["start_rss_mb"],
                         "disk_gb": du(stores) / 1e9, "float32_gb": args.cases * n * args.dim * 4 / 1e9})
            print(f"  {label:9s} {epoch:8.2f} s/epoch  {epoch / args.cases:.4f} s/case  "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)

    print(f"\nHEALNet training, {args.cases} cases, dim {args.dim}, batch {args.batch}, {args.threads} threads, "
          f"BLCA shape ({BLCA_TEXT}), fastest of {args.epochs} epochs; "
          f"load average {load:.1f} before, {os.getloadavg()[0]:.1f} after ({os.cpu_count()} CPUs)\n")
    head = (f"{'patches':>8} {'used':>6} {'variant':>10} {'s/epoch':>9} {'s/case/ep':>10} {'cases/s':>8} "
            f"{'prepare s':>9} {'peak RSS MB':>11} {'of which start':>14} {'vs ref s/case':>13} {'vs ref RSS':>10}")
    print(head)
    print("-" * len(head))
    for r in rows:
        ref = REFERENCE.get(r["used"])
        vs = f"{r['s_per_case'] / ref:.2f}×" if ref else "-"
        print(f"{r['patches']:>8} {r['used']:>6} {r['variant']:>10} {r['epoch_s']:>9.2f} {r['s_per_case']:>10.4f} "
              f"{r['cases_per_s']:>8.1f} {r['prepare_s']:>9.1f} {r['peak_rss_mb']:>11.0f} "
              f"{r['start_rss_mb']:>14.0f} {vs:>13} "
              f"{r['peak_rss_mb'] / REFERENCE_RSS_MB:>9.2f}×")
    for ref_n, ref_s in REFERENCE.items():
        print(f"{ref_n:>8} {ref_n:>6} {'reference':>10} {'':>9} {ref_s:>10.4f} {1 / ref_s:>8.1f} {'':>9} "
              f"{'≤' + str(REFERENCE_RSS_MB):>11} {'':>14}   (issue's figures, other hardware)")

    ours = {r["patches"]: r for r in rows if r["variant"] == "ours"}
    rec = {r["patches"]: r for r in rows if r["variant"] == "recompute"}
    if len(ours) >= 2:
        lo, hi = min(ours), max(ours)
        print(f"\ngrowth {lo} → {hi} patches ({hi / lo:.0f}× the patches): "
              f"s/case ×{ours[hi]['s_per_case'] / ours[lo]['s_per_case']:.2f}, "
              f"peak RSS ×{ours[hi]['peak_rss_mb'] / ours[lo]['peak_rss_mb']:.2f}"
              f"   (reference 2000 → 8000: s/case ×{REFERENCE[8000] / REFERENCE[2000]:.2f} for 4× the patches)")
    for n in sorted(set(ours) & set(rec)):
        speedup = rec[n]["s_per_case"] / ours[n]["s_per_case"]
        print(f"{n} patches: time per case, context re-normalised and re-projected per layer ÷ read once per "
              f"forward (ours) = {speedup:.2f}; peak RSS {rec[n]['peak_rss_mb']:.0f} vs {ours[n]['peak_rss_mb']:.0f} MB")
    print("\nlazy bags: data size against peak RSS")
    for n, r in sorted(ours.items()):
        print(f"  {n:>6} patches × {args.cases} cases: stores on disk {r['disk_gb']:.2f} GB, as float32 in RAM "
              f"{r['float32_gb']:.2f} GB (what an eager loader holds), peak RSS {r['peak_rss_mb'] / 1e3:.2f} GB "
              f"= {r['peak_rss_mb'] / 1e3 / r['float32_gb']:.0%} of it; machine RAM {_ram_gb():.1f} GB")


if __name__ == "__main__":
    main()
