"""How fast Snakemake plans this workflow at cohort scale (no slide is read).

1. dry run (`snakemake -n`) of a generated config with 2 000 slides in 4 cohorts: target < 60 s;
2. no-op rerun of a finished 100-slide DAG (`snakemake --cores 2` with nothing to do): target < 15 s.

Sample sheets, manifests and clinical files are generated in the GDC formats; every data file (slide,
STAR counts) is an empty placeholder, which is all that planning needs. The finished state of step 2 is
made with `snakemake --touch` on placeholder outputs (and the rules' own directories).

    .venv/bin/python benchmarks/dag.py [--slides 2000] [--cohorts 4] [--noop-slides 100] [--keep DIR]

Prints a table: what, jobs, seconds, target, ratio (seconds / target; below 1 meets it).
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
CLINICAL_COLUMNS = ["case_id", "case_submitter_id", "project_id", "age_at_index", "days_to_birth", "ethnicity",
                    "gender", "race", "vital_status", "days_to_death", "days_to_last_follow_up",
                    "ajcc_pathologic_stage", "primary_diagnosis", "treatment_or_therapy", "treatment_type"]


def make_cohort(root: Path, name: str, n_slides: int, seed: int) -> dict:
    """A GDC-like cohort of ``n_slides`` cases with one slide and one STAR-counts file each."""
    rnd = uuid.UUID(int=seed)  # deterministic ids
    ids = (str(uuid.uuid5(rnd, f"{name}-{i}")) for i in range(10 ** 9))
    data = root / name
    data.mkdir(parents=True, exist_ok=True)
    sheet = ["\t".join(["File ID", "File Name", "Data Category", "Data Type", "Project ID", "Case ID",
                        "Sample ID", "Sample Type"])]
    manifest = ["\t".join(["id", "filename", "md5", "size", "state"])]
    clinical = ["\t".join(CLINICAL_COLUMNS)]
    project = f"TCGA-{name.upper()}"
    for i in range(n_slides):
        case = f"TCGA-{name[:2].upper()}-{i:04d}"
        sample = f"{case}-01A"
        files = [(next(ids), f"{case}-01Z-00-DX1.{next(ids).upper()}.svs", "Biospecimen", "Slide Image"),
                 (next(ids), f"{next(ids)}.rna_seq.augmented_star_gene_counts.tsv", "Transcriptome Profiling",
                  "Gene Expression Quantification")]
        for fid, fname, category, dtype in files:
            (data / fid).mkdir(exist_ok=True)
            (data / fid / fname).touch()
            sheet.append("\t".join([fid, fname, category, dtype, project, case, sample, "Primary Tumor"]))
            manifest.append("\t".join([fid, fname, "d41d8cd98f00b204e9800998ecf8427e", "0", "released"]))
        dead = i % 3 == 0
        clinical.append("\t".join([next(ids), case, project, "60", "-21900", "not reported", "female", "white",
                                   "Dead" if dead else "Alive", str(100 + i) if dead else "'--",
                                   "'--" if dead else str(200 + i), "Stage II", "Infiltrating duct carcinoma, NOS",
                                   "no", "'--"]))
    for fname, lines in (("gdc_sample_sheet.tsv", sheet), ("gdc_manifest.txt", manifest), ("clinical.tsv", clinical)):
        (data / fname).write_text("\n".join(lines) + "\n")
    return {"data_dir": str(data), "sample_sheet": str(data / "gdc_sample_sheet.tsv"),
            "manifest": str(data / "gdc_manifest.txt"), "clinical": str(data / "clinical.tsv"), "mpp_fallback": 0.5}


def write_config(work: Path, cohorts: dict) -> Path:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["cohorts"] = cohorts
    cfg["cohort_files"] = []
    cfg["results"] = str(work / "results")
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def snakemake(work: Path, config: Path, *args: str, timeout: float = 900) -> tuple[float, str]:
    t0 = time.monotonic()
    run = subprocess.run(SNAKEMAKE + ["-d", str(work), "--configfile", str(config), "--cores", "2", *args],
                         capture_output=True, text=True, timeout=timeout)
    seconds = time.monotonic() - t0
    if run.returncode != 0:
        sys.exit(f"snakemake {' '.join(args)} failed:\n{(run.stdout + run.stderr)[-3000:]}")
    return seconds, run.stdout + run.stderr


def placeholders(summary: str) -> int:
    """Create every output that `snakemake --summary` lists as missing: empty files, and folders for
    the directory() outputs (Zarr stores, heatmap and viewer folders); --touch then marks them finished."""
    n = 0
    for line in summary.splitlines():
        cols = line.split("\t")
        if len(cols) < 3 or cols[0] == "output_file" or "missing" not in line:
            continue
        out = Path(cols[0])
        if out.suffix == ".zarr" or out.name in ("heatmaps", "viewer"):
            out.mkdir(parents=True, exist_ok=True)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.touch()
        n += 1
    if not n:
        sys.exit(f"snakemake --summary listed no missing output:\n{summary[-2000:]}")
    return n


def n_jobs(log: str) -> int:
    m = re.search(r"^total\s+(\d+)", log, re.M)
    return int(m.group(1)) if m else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slides", type=int, default=2000)
    ap.add_argument("--cohorts", type=int, default=4)
    ap.add_argument("--noop-slides", type=int, default=100)
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = ap.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="dag-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        # 1. dry run at scale
        big = root / "big"
        big.mkdir(exist_ok=True)
        per = args.slides // args.cohorts
        cohorts = {f"c{k}": make_cohort(big / "raw", f"c{k}", per, seed=k) for k in range(args.cohorts)}
        cfg = write_config(big, cohorts)
        secs, log = snakemake(big, cfg, "-n", "--quiet", "rules")
        rows.append((f"dry run, {per * args.cohorts} slides in {args.cohorts} cohorts", n_jobs(log), secs, 60.0))

        # 2. no-op rerun of a finished DAG (outputs made by --touch)
        small = root / "small"
        small.mkdir(exist_ok=True)
        cfg = write_config(small, {"one": make_cohort(small / "raw", "one", args.noop_slides, seed=99)})
        _, log = snakemake(small, cfg, "-n", "--quiet", "rules")
        planned = n_jobs(log)
        _, summary = snakemake(small, cfg, "--summary")
        made = placeholders(summary)
        secs_touch, log = snakemake(small, cfg, "--touch")
        secs, log = snakemake(small, cfg)
        if "Nothing to be done" not in log:
            sys.exit(f"the touched DAG is not finished:\n{log[-3000:]}")
        rows.append((f"no-op rerun, finished {args.noop_slides}-slide DAG", planned, secs, 15.0))
        rows.append((f"  (--touch of its {planned} jobs, not a target)", planned, secs_touch, float("nan")))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    print(f"{'what':<50} {'jobs':>6} {'seconds':>8} {'target s':>9} {'ratio':>6}")
    for what, jobs, secs, target in rows:
        ratio = secs / target if target == target else float("nan")
        tgt = f"{target:9.0f}" if target == target else f"{'-':>9}"
        rat = f"{ratio:6.2f}" if ratio == ratio else f"{'-':>6}"
        print(f"{what:<50} {jobs:>6} {secs:8.1f} {tgt} {rat}")
    return 0 if all(secs < target for _, _, secs, target in rows if target == target) else 1


if __name__ == "__main__":
    sys.exit(main())
