"""Deterministic generator of a small TCGA-like cohort in real file formats, with a planted signal.

Why: the pipeline (download -> tiling -> features -> HEALNet survival) needs end-to-end test data
that looks exactly like what the GDC hands out (Aperio SVS slides, STAR gene-count TSVs, the
clinical export, manifest and sample sheet) but is small, offline and has a known answer.

The planted signal: each case has a ``tumour_fraction`` (share of tissue area with dense,
dark-purple "tumour" texture, drawn U(0.05, 0.9)) and a latent ``rna_signal`` (standard normal)
that shifts the expression of :data:`~generators.omics_files.SIGNAL_GENES`.  True risk is
``z(tumour_fraction) + rna_signal``; survival times are Weibull with hazard ∝ exp(risk + noise),
so both modalities are needed to approach the oracle c-index (about 0.8) in ``oracle.json``.
Copy number carries a weak echo of ``rna_signal`` (the signal genes' segment is gained more often
when it is high); mutations carry none. Some cases lack CNV, some lack a MAF, independently of
slides and RNA; one case's MAF holds only silent variants (a row of zeros downstream).

Layout written under ``out_dir`` (GDC layout: every data file at ``{file_id}/{file_name}``)::

    {file_id}/TCGA-XX-XXXX-01Z-00-DX1.<UUID>.svs            slides (DX2 = second slide of a case)
    {file_id}/<uuid>.rna_seq.augmented_star_gene_counts.tsv  STAR - Counts, one per case with RNA
    {file_id}/TCGA-DEMO.<uuid>.ascat3.gene_level_copy_number.v36.tsv  Gene Level Copy Number
    {file_id}/<uuid>.wxs.aliquot_ensemble_masked.maf.gz       Masked Somatic Mutation (gzipped MAF)
    clinical.tsv          GDC clinical export (missing = '--; some cases on two treatment rows)
    gdc_manifest.txt      id, filename, md5, size, state (one line per slide / RNA file)
    gdc_sample_sheet.tsv  GDC portal sample sheet
    truth.tsv, oracle.json  the planted truth and the oracle c-index
    truth_tumour.npz      per slide, where the planted tumour texture is (format: :mod:`preprocessing.truth`)
    truth_genes.tsv       the planted signal genes: gene_id (versioned, as in the STAR files), gene_name, loading

Everything is a pure function of ``seed`` (byte-identical on rerun, UUIDs included); every file is
written atomically (temp file in the same directory, then ``os.replace``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from preprocessing.io import atomic_path, file_md5
from preprocessing.truth import write_truth_tumour

from .clinical_export import clinical_export
from .omics_files import gene_level_cnv_tsv, gene_positions, gene_table, maf_text, star_counts_tsv, tsv_text
from .slide_render import CELL, label_cells, render_slide, write_svs

TSS_CODES = ("A1", "A2", "AR", "BH", "E2", "GM")  # a few tissue-source-site codes
RISK_WEIGHTS = (1.5, 1.5)  # a (tumour fraction, standardised) and b (rna_signal)
TF_RANGE = (0.05, 0.9)
CNV_TYPE, MAF_TYPE = "Gene Level Copy Number", "Masked Somatic Mutation"
TRUTH_TUMOUR, TRUTH_GENES = "truth_tumour.npz", "truth_genes.tsv"  # beside oracle.json


# ----------------------------------------------------------------------------------------------
# small helpers


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)

# ----------------------------------------------------------------------------------------------
# cohort


def _n_of(p: float, n: int) -> int:
    """round(p * n), but at least one when p > 0, so small cohorts still show the case."""
    return max(1, round(p * n)) if p > 0 else 0


def _barcodes(rng: np.random.Generator, n: int) -> list[str]:
    alnum = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    out: list[str] = []
    while len(out) < n:
        code = f"TCGA-{rng.choice(TSS_CODES)}-{''.join(rng.choice(alnum, 4))}"
        if code not in out:
            out.append(code)
    return out


def _survival(rng: np.random.Generator, risk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Observed (time in whole days >= 1, event) for hazard ∝ exp(risk + small noise): Weibull
    (shape 1.3) event times scaled to a median of 1000 days, uniform censoring whose upper bound
    is set so that round(47.5 %) of cases have the event."""
    n = len(risk)
    t = (rng.exponential(size=n) * np.exp(-(risk + rng.normal(0, 0.25, n)))) ** (1 / 1.3)
    t *= 1000.0 / np.median(t)
    u = rng.uniform(0.02, 1.0, n)
    ratio = np.sort(t / u)  # event iff t < u * c_max iff t / u < c_max
    k = min(max(round(0.475 * n), 1), n - 1) if n > 1 else 1
    c_max = (ratio[k - 1] + ratio[k]) / 2 if n > 1 else ratio[0] * 2
    obs = np.minimum(t, u * c_max)
    return np.maximum(1, np.round(obs)).astype(np.int64), (t <= u * c_max).astype(np.int64)


def _make_slide(task: tuple) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    """Render and write one slide (a picklable unit of work); returns its realised tumour share
    and its (tumour, tissue) cells (:func:`label_cells`)."""
    path, seq, size, mpp, tumour_fraction, blank = task
    rgb, frac, label = render_slide(np.random.default_rng(seq), size, mpp, tumour_fraction, blank,
                                    return_labels=True)
    write_svs(path, rgb, mpp=mpp, app_mag=10.0 / mpp)
    return frac, label_cells(label)


def generate_cohort(out_dir: str | Path, *, n_cases: int = 80, seed: int = 0,
                    slide_size: tuple[int, int] = (4096, 3072), mpp: float = 0.5, n_genes: int = 2000,
                    project: str = "TCGA-DEMO", p_no_slide: float = 0.1, p_no_rna: float = 0.1,
                    p_two_slides: float = 0.1, n_blank_slides: int = 1, p_no_cnv: float = 0.1,
                    p_no_maf: float = 0.1, workers: int | None = None) -> dict:
    """Write a synthetic cohort (see module docstring) and return its paths and counts.

    ``slide_size`` is the level-0 (width, height) in px, ``mpp`` µm/px; ``p_*`` are the shares of
    cases without a slide, without RNA (never both) and with two slides; ``n_blank_slides`` cases
    with RNA get a slide without tissue; ``p_no_cnv`` and ``p_no_maf`` the shares of cases without
    a copy-number file and without a MAF (drawn independently, from their own random stream, so
    that slides, RNA, clinical file and oracle do not depend on them).  ``workers`` processes render slides (default: one per
    available core); the output does not depend on it.  Deterministic in ``seed``.  An existing
    ``out_dir`` is written over, but files of an earlier run with another seed are not removed.

    Returns paths (``out_dir``, ``clinical``, ``manifest``, ``sample_sheet``, ``truth``,
    ``truth_tumour``, ``truth_genes``, ``oracle``,
    lists ``slides``, ``rna``, ``cnv`` and ``maf``) and counts (``n_cases``, ``n_slides``, ``n_rna``,
    ``n_cnv``, ``n_maf``, ``n_blank_slides``, ``n_events``) plus ``oracle_c_index``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng, uid = np.random.default_rng(seed), random.Random(seed)

    def new_uuid() -> str:
        return str(uuid.UUID(int=uid.getrandbits(128), version=4))

    # who has what: disjoint groups from one permutation
    k_ns, k_nr, k_two = (_n_of(p, n_cases) for p in (p_no_slide, p_no_rna, p_two_slides))
    if k_ns + k_nr + k_two + n_blank_slides > n_cases:
        raise ValueError("n_cases too small for the requested missing / two-slide / blank cases")
    perm = rng.permutation(n_cases)
    groups = np.split(perm, np.cumsum([k_ns, k_nr, k_two, n_blank_slides]))
    n_slides = np.ones(n_cases, np.int64)
    n_slides[groups[0]], n_slides[groups[2]] = 0, 2
    has_rna = np.ones(n_cases, bool)
    has_rna[groups[1]] = False
    blank = np.zeros(n_cases, bool)
    blank[groups[3]] = True

    # latent signal and survival
    tf = np.round(rng.uniform(*TF_RANGE, n_cases), 6)
    rna_signal = np.round(rng.standard_normal(n_cases), 6)
    lo, hi = TF_RANGE
    z_tf = (tf - (lo + hi) / 2) / ((hi - lo) / math.sqrt(12))  # standardised U(lo, hi)
    risk = np.round(RISK_WEIGHTS[0] * z_tf + RISK_WEIGHTS[1] * rna_signal, 6)
    t, event = _survival(rng, risk)
    # copy number and mutations: own random streams, so that nothing above depends on them
    orng, ouid = np.random.default_rng([seed, 5]), random.Random(f"cnv-maf-{seed}")
    has_cnv, has_maf = np.ones(n_cases, bool), np.ones(n_cases, bool)
    has_cnv[orng.choice(n_cases, _n_of(p_no_cnv, n_cases), replace=False)] = False
    has_maf[orng.choice(n_cases, _n_of(p_no_maf, n_cases), replace=False)] = False
    silent_only = int(np.flatnonzero(has_maf)[0]) if has_maf.any() else -1

    def omics_uuid() -> str:
        return str(uuid.UUID(int=ouid.getrandbits(128), version=4))
    cases = pd.DataFrame({"case_submitter_id": _barcodes(rng, n_cases),
                          "case_id": [new_uuid() for _ in range(n_cases)],
                          "tumour_fraction": tf, "rna_signal": rna_signal, "risk": risk,
                          "time": t, "event": event, "n_slides": n_slides,
                          "n_blank_slides": blank.astype(np.int64), "has_rna": has_rna.astype(np.int64),
                          "has_cnv": has_cnv.astype(np.int64), "has_maf": has_maf.astype(np.int64)})

    # data files, GDC layout {file_id}/{file_name}; slides rendered in parallel (own RNG each)
    genes = gene_table(n_genes)
    positions = gene_positions(genes)
    files: list[dict] = []
    slide_tasks, slide_case = [], []
    for i, c in enumerate(cases.itertuples()):
        for k in range(int(c.n_slides)):
            file_id, name = new_uuid(), f"{c.case_submitter_id}-01Z-00-DX{k + 1}.{new_uuid().upper()}.svs"
            slide_tasks.append((out / file_id / name, (seed, 1, i, k), tuple(slide_size), mpp,
                                float(c.tumour_fraction), bool(blank[i])))
            slide_case.append(i)
            files.append({"id": file_id, "filename": name, "case": c.case_submitter_id,
                          "category": "Biospecimen", "type": "Slide Image"})
        if c.has_rna:
            file_id, name = new_uuid(), f"{new_uuid()}.rna_seq.augmented_star_gene_counts.tsv"
            text = star_counts_tsv(np.random.default_rng([seed, 2, i]), genes, float(c.rna_signal))
            _write_text(out / file_id / name, text)
            files.append({"id": file_id, "filename": name, "case": c.case_submitter_id,
                          "category": "Transcriptome Profiling", "type": "Gene Expression Quantification"})
        paired = {"case": f"{c.case_submitter_id}, {c.case_submitter_id}",
                  "type_pair": "Primary Tumor, Blood Derived Normal"}
        if c.has_cnv:  # the sample sheet lists the pair normal first here, tumour first for MAFs
            file_id, name = omics_uuid(), f"{project}.{omics_uuid()}.ascat3.gene_level_copy_number.v36.tsv"
            text = gene_level_cnv_tsv(np.random.default_rng([seed, 3, i]), genes, positions, float(c.rna_signal))
            _write_text(out / file_id / name, text)
            files.append({"id": file_id, "filename": name, "category": "Copy Number Variation", "type": CNV_TYPE,
                          "sample": f"{c.case_submitter_id}-10A, {c.case_submitter_id}-01A",
                          "sample_type": "Blood Derived Normal, Primary Tumor", **paired})
        if c.has_maf:
            file_id, name = omics_uuid(), f"{omics_uuid()}.wxs.aliquot_ensemble_masked.maf.gz"
            text = maf_text(np.random.default_rng([seed, 4, i]), genes, positions, c.case_submitter_id,
                            silent_only=i == silent_only)
            _write_bytes(out / file_id / name, gzip.compress(text.encode(), mtime=0))
            files.append({"id": file_id, "filename": name, "category": "Simple Nucleotide Variation",
                          "type": MAF_TYPE, "sample": f"{c.case_submitter_id}-01A, {c.case_submitter_id}-10A",
                          "sample_type": paired["type_pair"], **paired})
    workers = min(workers or len(os.sched_getaffinity(0)), max(len(slide_tasks), 1))
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as ex:
            rendered = list(ex.map(_make_slide, slide_tasks))
    else:
        rendered = [_make_slide(t) for t in slide_tasks]
    realised = [frac for frac, _ in rendered]
    # realised tumour share of tissue, averaged over a case's slides (nan: no / blank slide)
    per_case = pd.Series(realised, dtype=float).groupby(pd.Series(slide_case, dtype=np.int64)).mean()
    cases["slide_tumour_fraction"] = np.round(per_case.reindex(range(n_cases)).to_numpy(), 6)

    for f in files:
        p = out / f["id"] / f["filename"]
        f["md5"], f["size"] = file_md5(p), p.stat().st_size
    manifest = pd.DataFrame({"id": [f["id"] for f in files], "filename": [f["filename"] for f in files],
                             "md5": [f["md5"] for f in files], "size": [f["size"] for f in files],
                             "state": "released"})
    sheet = pd.DataFrame({"File ID": [f["id"] for f in files], "File Name": [f["filename"] for f in files],
                          "Data Category": [f["category"] for f in files],
                          "Data Type": [f["type"] for f in files], "Project ID": project,
                          "Case ID": [f["case"] for f in files],
                          "Sample ID": [f.get("sample", f"{f['case']}-01A") for f in files],
                          "Sample Type": [f.get("sample_type", "Primary Tumor") for f in files]})

    from sksurv.metrics import concordance_index_censored  # heavy import, only needed here
    c_index = float(concordance_index_censored(event.astype(bool), t.astype(float), risk)[0])
    paths = {k: out / v for k, v in (("clinical", "clinical.tsv"), ("manifest", "gdc_manifest.txt"),
                                     ("sample_sheet", "gdc_sample_sheet.tsv"), ("truth", "truth.tsv"),
                                     ("truth_tumour", TRUTH_TUMOUR), ("truth_genes", TRUTH_GENES),
                                     ("oracle", "oracle.json"))}
    _write_text(paths["clinical"], tsv_text(clinical_export(rng, cases, project)))
    _write_text(paths["manifest"], tsv_text(manifest))
    _write_text(paths["sample_sheet"], tsv_text(sheet))
    truth_cols = ["case_submitter_id", "case_id", "tumour_fraction", "rna_signal", "risk", "time", "event",
                  "n_slides", "n_blank_slides", "has_rna", "has_cnv", "has_maf", "slide_tumour_fraction"]
    _write_text(paths["truth"], cases[truth_cols].to_csv(sep="\t", index=False, lineterminator="\n",
                                                         float_format="%.6f"))
    # where the planted signal is: per slide the tumour texture, and the signal genes
    write_truth_tumour(paths["truth_tumour"], {Path(t[0]).name[: -len(".svs")]: cells
                                               for t, (_, cells) in zip(slide_tasks, rendered)}, cell=CELL)
    signal = genes[genes["loading"] != 0]
    _write_text(paths["truth_genes"], tsv_text(signal[["gene_id", "gene_name", "loading"]]))
    oracle = {"c_index": c_index, "n_cases": n_cases, "n_events": int(event.sum()), "seed": seed}
    _write_text(paths["oracle"], json.dumps(oracle, indent=2) + "\n")

    return {"out_dir": str(out), **{k: str(v) for k, v in paths.items()},
            "slides": [str(out / f["id"] / f["filename"]) for f in files if f["type"] == "Slide Image"],
            "rna": [str(out / f["id"] / f["filename"]) for f in files if f["type"] == "Gene Expression Quantification"],
            "cnv": [str(out / f["id"] / f["filename"]) for f in files if f["type"] == CNV_TYPE],
            "maf": [str(out / f["id"] / f["filename"]) for f in files if f["type"] == MAF_TYPE],
            "n_cases": n_cases, "n_slides": int(n_slides.sum()), "n_rna": int(has_rna.sum()),
            "n_cnv": int(has_cnv.sum()), "n_maf": int(has_maf.sum()),
            "n_blank_slides": int(blank.sum()), "n_events": int(event.sum()), "oracle_c_index": c_index}


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m generators.demo --out DIR --cases N --seed S --slide-size W H --genes G``."""
    ap = argparse.ArgumentParser(description="Generate a deterministic synthetic TCGA-like cohort.")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--cases", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slide-size", type=int, nargs=2, default=(4096, 3072), metavar=("W", "H"),
                    help="level-0 width and height in px")
    ap.add_argument("--mpp", type=float, default=0.5, help="µm per pixel at level 0")
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--project", default="TCGA-DEMO")
    ap.add_argument("--blank-slides", type=int, default=1)
    ap.add_argument("--workers", type=int, default=None, help="slide-rendering processes (default: cores)")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = generate_cohort(a.out, n_cases=a.cases, seed=a.seed, slide_size=tuple(a.slide_size), mpp=a.mpp,
                          n_genes=a.genes, project=a.project, n_blank_slides=a.blank_slides,
                          workers=a.workers)
    summary = {k: v for k, v in res.items() if not isinstance(v, list)}
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
