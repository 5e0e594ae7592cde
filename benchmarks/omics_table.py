"""Peak memory and seconds of reading one cohort's omics table (rule tabular_omics_*), against reading
every value as a string first, the way it was read before (the reference).

A generated TSV of CASES × GENES values (4 decimals, as published tables are) is validated and
written to parquet, each way in a fresh process; the rule takes Snakemake's default resources
(profiles: 2000 MB × attempt), so the peak is what must fit.

    .venv/bin/python benchmarks/omics_table.py [--cases 1000] [--genes 20000]

Prints a table: how, seconds, peak MB, ratio to the reference.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
RUN = """
import resource, sys, time
sys.path.insert(0, {repo!r})
import pandas as pd
from preprocessing.tabular import index_by_case, validate_omics, write_omics_table
t = time.perf_counter()
if {how!r} == "numbers":
    write_omics_table({src!r}, {out!r})
else:  # every value as a string, then to numbers
    validate_omics(index_by_case(pd.read_csv({src!r}, sep="\\t", dtype=str), {src!r}), {src!r}).to_parquet({out!r})
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def measure(how: str, src: Path, out: Path) -> tuple[float, float]:
    code = RUN.format(repo=str(REPO), how=how, src=str(src), out=str(out))
    seconds, peak_mb = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                      text=True).stdout.split()
    return float(seconds), float(peak_mb)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--genes", type=int, default=20000)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        src = tmp / "rna.tsv"
        pd.DataFrame(rng.normal(size=(args.cases, args.genes)).astype(np.float32),
                     index=pd.Index([f"TCGA-AA-{i:04d}" for i in range(args.cases)], name="case_id"),
                     columns=[f"G{j}" for j in range(args.genes)]).to_csv(src, sep="\t", float_format="%.4f")
        ref = measure("strings", src, tmp / "ref.parquet")
        new = measure("numbers", src, tmp / "new.parquet")
        same = pd.read_parquet(tmp / "ref.parquet").equals(pd.read_parquet(tmp / "new.parquet"))
        size_mb = src.stat().st_size / 2 ** 20
    print(f"{args.cases} cases × {args.genes} genes, {size_mb:.0f} MB of TSV; same parquet: {same}")
    print(f"{'how':<38} {'seconds':>8} {'peak MB':>8} {'ratio':>6}")
    for how, (seconds, peak) in (("values as strings (reference)", ref), ("values as numbers (write_omics_table)", new)):
        print(f"{how:<38} {seconds:8.1f} {peak:8.0f} {peak / ref[1]:6.2f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
