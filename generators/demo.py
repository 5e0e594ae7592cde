"""Deterministic generator of a small TCGA-like cohort in real file formats, with a planted signal.

Why: the pipeline (download -> tiling -> features -> HEALNet survival) needs end-to-end test data
that looks exactly like what the GDC hands out (Aperio SVS slides, STAR gene-count TSVs, the
clinical export, manifest and sample sheet) but is small, offline and has a known answer.

The planted signal: each case has a ``tumour_fraction`` (share of tissue area with dense,
dark-purple "tumour" texture, drawn U(0.05, 0.9)) and a latent ``rna_signal`` (standard normal)
that shifts the expression of :data:`SIGNAL_GENES`.  True risk is
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
import tifffile
from PIL import Image
from scipy import ndimage

from preprocessing.io import atomic_path, file_md5
from preprocessing.truth import read_truth_tumour, write_truth_tumour  # noqa: F401 (read_truth_tumour: re-exported)

MISSING = "'--"  # GDC's marker for a missing clinical value
TSS_CODES = ("A1", "A2", "AR", "BH", "E2", "GM")  # a few tissue-source-site codes
BACKGROUND = (240, 240, 240)  # glass
EOSIN = (230, 150, 190)  # stroma
TUMOUR_CYTOPLASM = (205, 130, 185)
HEMATOXYLIN = (90, 40, 130)  # nuclei
SIGNAL_GENES = ("MKI67", "TOP2A", "CCNB1", "BIRC5", "AURKA",
                "FOXM1", "CDK1", "UBE2C", "PTTG1", "CENPF")
OTHER_NAMED_GENES = ("ESR1", "PGR", "ERBB2", "GAPDH", "ACTB", "KRT5", "KRT18", "VIM", "CD8A", "PTPRC")
FIRST_GENES = (("ENSG00000000003", "TSPAN6"), ("ENSG00000000005", "TNMD"), ("ENSG00000000419", "DPM1"),
               ("ENSG00000000457", "SCYL3"), ("ENSG00000000460", "C1orf112"))
STAR_COLUMNS = ("gene_id", "gene_name", "gene_type", "unstranded", "stranded_first", "stranded_second",
                "tpm_unstranded", "fpkm_unstranded", "fpkm_uq_unstranded")
CLINICAL_COLUMNS = ("case_id", "case_submitter_id", "project_id", "age_at_index", "days_to_birth",
                    "ethnicity", "gender", "race", "vital_status", "days_to_death",
                    "days_to_last_follow_up", "ajcc_pathologic_stage", "primary_diagnosis",
                    "treatment_or_therapy", "treatment_type")
SIGNAL_LOADING = 0.7  # natural-log expression shift of a signal gene per SD of rna_signal
RISK_WEIGHTS = (1.5, 1.5)  # a (tumour fraction, standardised) and b (rna_signal)
TF_RANGE = (0.05, 0.9)
APERIO_HEAD = "Aperio Image Library v12.0.15 \r\n"
CNV_COLUMNS = ("gene_id", "gene_name", "chromosome", "start", "end", "copy_number", "min_copy_number",
               "max_copy_number")
MAF_COLUMNS = ("Hugo_Symbol", "Entrez_Gene_Id", "Center", "NCBI_Build", "Chromosome", "Start_Position",
               "End_Position", "Strand", "Variant_Classification", "Variant_Type", "Reference_Allele",
               "Tumor_Seq_Allele1", "Tumor_Seq_Allele2", "dbSNP_RS", "Tumor_Sample_Barcode",
               "Matched_Norm_Sample_Barcode", "HGVSp_Short", "Gene", "t_depth", "t_ref_count", "t_alt_count",
               "n_depth")
#: Variant classifications drawn for the demo MAFs, with their probabilities.
MAF_CLASSES = {"Missense_Mutation": 0.45, "Silent": 0.2, "Nonsense_Mutation": 0.05, "Frame_Shift_Del": 0.04,
               "Frame_Shift_Ins": 0.02, "In_Frame_Del": 0.02, "Splice_Site": 0.03, "3'UTR": 0.07,
               "Intron": 0.08, "5'Flank": 0.04}
CNV_TYPE, MAF_TYPE = "Gene Level Copy Number", "Masked Somatic Mutation"
TRUTH_TUMOUR, TRUTH_GENES = "truth_tumour.npz", "truth_genes.tsv"  # beside oracle.json


# ----------------------------------------------------------------------------------------------
# small helpers


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")


def _tsv(df: pd.DataFrame) -> str:
    return df.to_csv(sep="\t", index=False, lineterminator="\n")


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to unit SD: the basis of all blob shapes."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="reflect")
    return f / (f.std() + 1e-12)


def _upsample(a: np.ndarray, factor: int, out_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a coarse float map by an integer factor (PIL: fast, C), cropped."""
    h, w = a.shape
    im = Image.fromarray(a.astype(np.float32)).resize((w * factor, h * factor), Image.BILINEAR)
    return np.asarray(im)[: out_hw[0], : out_hw[1]]


# ----------------------------------------------------------------------------------------------
# slides

_CELL = 16  # px per cell of the coarse grid on which tissue / tumour shapes are drawn


def _tissue_field(rng: np.random.Generator, gh: int, gw: int) -> np.ndarray:
    """Coarse map > 0 on tissue: 1-4 wobbly ellipses (some with holes) covering 30-45 % of the
    slide, with a background margin at the border."""
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    cover = rng.uniform(0.30, 0.45)
    n_pieces = int(rng.integers(1, 5))
    field = np.full((gh, gw), -np.inf, np.float32)
    for _ in range(n_pieces):
        aspect, ang = rng.uniform(0.55, 1.0), rng.uniform(-0.6, 0.6)  # major axis roughly along x
        r = math.sqrt(cover * gh * gw / (n_pieces * math.pi * aspect)) * rng.uniform(0.85, 1.15)
        ex = 1.15 * math.hypot(r * math.cos(ang), r * aspect * math.sin(ang))  # half extents,
        ey = 1.15 * math.hypot(r * math.sin(ang), r * aspect * math.cos(ang))  # wobble included
        cx = rng.uniform(min(ex, gw / 2), max(gw - ex, gw / 2))
        cy = rng.uniform(min(ey, gh / 2), max(gh - ey, gh / 2))
        u = ((xx - cx) * math.cos(ang) + (yy - cy) * math.sin(ang)) / r
        v = (-(xx - cx) * math.sin(ang) + (yy - cy) * math.cos(ang)) / (r * aspect)
        theta = np.arctan2(v, u)
        wobble = 1 + sum(rng.uniform(0, 0.08) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
                         for k in range(2, 6))
        piece = 1 - np.hypot(u, v) / wobble
        if rng.random() < 0.5:  # holes: background-coloured gaps inside the piece
            for _ in range(int(rng.integers(1, 3))):
                d, phi = rng.uniform(0, 0.45) * r, rng.uniform(0, 2 * math.pi)
                rh = r * rng.uniform(0.15, 0.3)
                dist = np.hypot(yy - cy - d * math.sin(phi), xx - cx - d * math.cos(phi))
                piece -= 2 * np.clip(1 - dist / rh, 0, None)
        field = np.maximum(field, piece)
    field += 0.1 * _smooth_noise(rng, (gh, gw), min(gh, gw) / 20)
    edge = np.minimum(np.minimum(yy + 0.5, gh - 0.5 - yy), np.minimum(xx + 0.5, gw - 0.5 - xx))
    edge /= min(gh, gw)  # soft push away from the border, then a hard margin of glass
    field = np.minimum(field - 30 * np.clip(0.15 - edge, 0, None) ** 2, (edge - 0.03) * 50)
    return field - np.quantile(field, 1 - cover)


def _nuclei_stamps(rng: np.random.Generator, mpp: float, n: int = 6) -> list[tuple[np.ndarray, np.ndarray]]:
    """A few elliptical nucleus footprints (pixel offsets), 5.5-9 µm long axis."""
    stamps = []
    for _ in range(n):
        a = rng.uniform(2.8, 4.5) / mpp
        b, ang = a * rng.uniform(0.6, 1.0), rng.uniform(0, math.pi)
        R = int(math.ceil(a))
        dy, dx = np.mgrid[-R:R + 1, -R:R + 1]
        u = dx * math.cos(ang) + dy * math.sin(ang)
        v = -dx * math.sin(ang) + dy * math.cos(ang)
        inside = (u / a) ** 2 + (v / b) ** 2 <= 1
        stamps.append((dy[inside], dx[inside]))
    return stamps


def render_slide(rng: np.random.Generator, size: tuple[int, int], mpp: float,
                 tumour_fraction: float, blank: bool = False, *, return_labels: bool = False):
    """H&E-like level-0 RGB image (H, W, 3) uint8 for ``size`` = (width, height) px at ``mpp``
    µm/px, and the realised tumour share of the tissue area (nan for a blank slide); with
    ``return_labels`` also the level-0 label map (H, W) uint8: 0 glass, 1 stroma, 2 tumour.

    Tumour regions are thresholded smooth noise (blobs of ~0.5 mm) inside the tissue, with the
    threshold set at the quantile that makes their area share equal ``tumour_fraction``."""
    W, H = size
    gh, gw = -(-H // _CELL), -(-W // _CELL)
    label = np.zeros((H, W), np.uint8)  # 0 glass, 1 stroma, 2 tumour
    realised = float("nan")
    if not blank:
        tissue_c = _tissue_field(rng, gh, gw)
        sigma = min(150.0 / (_CELL * mpp), min(gh, gw) / 8)  # ~150 µm -> blobs >= ~0.5 mm
        tumour_c = _smooth_noise(rng, (gh, gw), sigma)
        tumour_c -= np.quantile(tumour_c[tissue_c > 0], 1 - tumour_fraction)
        tissue = (_upsample(tissue_c, _CELL, (H, W)) > 0).view(np.uint8)
        label = tissue * (1 + (_upsample(tumour_c, _CELL, (H, W)) > 0).view(np.uint8))
        realised = float(np.count_nonzero(label == 2) / max(np.count_nonzero(tissue), 1))

    # nuclei: uniform candidates at tumour density, kept with a class-dependent probability
    nuc = np.zeros((H, W), np.float32)
    if not blank:
        n_cand = int(rng.poisson(H * W * mpp**2 / 90.0))  # one tumour nucleus per ~90 µm²
        ys, xs = rng.integers(0, H, n_cand), rng.integers(0, W, n_cand)
        keep = rng.random(n_cand) < np.array([0.0, 0.12, 1.0])[label[ys, xs]]
        ys, xs = ys[keep], xs[keep]
        val = rng.uniform(0.7, 0.95, ys.size).astype(np.float32)
        stamps = _nuclei_stamps(rng, mpp)
        which = rng.integers(0, len(stamps), ys.size)
        for k, (dy, dx) in enumerate(stamps):
            s = which == k
            yy = np.clip(ys[s, None] + dy[None], 0, H - 1)
            xx = np.clip(xs[s, None] + dx[None], 0, W - 1)
            nuc[yy, xx] = np.broadcast_to(val[s, None], yy.shape)

    # colour, one channel at a time in place (float32 temporaries of 3 channels are slow)
    offset = rng.integers(-4, 5, (H, W), dtype=np.int8).astype(np.float32) + 0.5  # grain, +0.5 rounds
    if not blank:  # low-frequency staining variation inside tissue (masked on the coarse grid)
        offset -= _upsample(_smooth_noise(rng, (gh, gw), 1.5) * 8.0 * (tissue_c > 0), _CELL, (H, W))
    base = np.array([BACKGROUND, EOSIN, TUMOUR_CYTOPLASM], np.float32)
    rgb = np.empty((H, W, 3), np.uint8)
    for ch in range(3):
        c = base[:, ch][label]
        c += nuc * (HEMATOXYLIN[ch] - c)
        c += offset
        rgb[..., ch] = np.clip(c, 0, 255, out=c)
    return (rgb, realised, label) if return_labels else (rgb, realised)


def label_cells(label: np.ndarray, cell: int = _CELL) -> tuple[np.ndarray, np.ndarray]:
    """(tumour, tissue) share of each ``cell`` × ``cell`` px square of a level-0 label map, as
    uint8 0-255 on the (ceil(H / cell), ceil(W / cell)) grid: small enough to keep per slide, fine
    enough (8 µm at 0.5 µm/px) to score 256-px patches against."""
    H, W = label.shape
    gh, gw = -(-H // cell), -(-W // cell)
    padded = np.zeros((gh * cell, gw * cell), np.uint8)
    padded[:H, :W] = label
    blocks = padded.reshape(gh, cell, gw, cell)
    counts = cell * cell
    tumour = np.count_nonzero(blocks == 2, axis=(1, 3)) / counts
    tissue = np.count_nonzero(blocks > 0, axis=(1, 3)) / counts
    return (np.round(tumour * 255).astype(np.uint8), np.round(tissue * 255).astype(np.uint8))


def write_svs(path: str | Path, rgb: np.ndarray, *, mpp: float, app_mag: float, tile: int = 256,
              n_levels: int = 3, quality: int = 90) -> None:
    """Write ``rgb`` (H, W, 3 uint8, level 0) as an Aperio SVS that OpenSlide reads as vendor
    'aperio': tiled JPEG levels downsampled 1, 4, 16, ... each a top-level IFD, a stripped
    thumbnail as the second IFD, and Aperio ImageDescriptions (``MPP`` in µm/px, ``AppMag`` the
    objective magnification)."""
    path = Path(path)
    H, W = rgb.shape[:2]
    levels = [np.ascontiguousarray(rgb)]
    im = Image.fromarray(levels[0])
    for _ in range(1, n_levels):
        im = im.reduce(4)  # box filter, like Aperio's 4x pyramid
        levels.append(np.asarray(im))
    f = max(1, math.ceil(max(levels[1].shape[:2]) / 768)) if n_levels > 1 else 1
    thumb = np.asarray(Image.fromarray(levels[min(1, n_levels - 1)]).reduce(f))
    dims = f"{W}x{H} [0,0 {W}x{H}]"
    meta = (f"|AppMag = {app_mag:g}|StripeWidth = 2040|ScanScope ID = SS1234|Filename = {path.stem[:23]}"
            f"|MPP = {float(mpp)!r}|OriginalWidth = {W}|OriginalHeight = {H}")
    opts = dict(photometric="rgb", compression="jpeg", compressionargs={"level": quality},
                metadata=None, software=False)
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp) as tif:
        tif.write(levels[0], tile=(tile, tile),
                  description=f"{APERIO_HEAD}{dims} ({tile}x{tile}) JPEG/RGB Q={quality}{meta}", **opts)
        tif.write(thumb, description=f"{APERIO_HEAD}{W}x{H} -> {thumb.shape[1]}x{thumb.shape[0]} - {meta}",
                  **opts)
        for lvl in levels[1:]:
            desc = f"{APERIO_HEAD}{dims} -> {lvl.shape[1]}x{lvl.shape[0]} JPEG/RGB Q={quality}"
            tif.write(lvl, tile=(tile, tile), description=desc, **opts)


# ----------------------------------------------------------------------------------------------
# RNA


def gene_table(n_genes: int) -> pd.DataFrame:
    """Fixed (seed-independent) annotation: Ensembl-like ``gene_id`` (with ``.version``), name,
    type, length (bp), base log-mean count and signal loading; sorted by id like GDC files.
    The ids are synthetic apart from the first five rows."""
    named = SIGNAL_GENES + OTHER_NAMED_GENES
    if n_genes < len(FIRST_GENES) + len(named) + 5:
        raise ValueError(f"n_genes must be >= {len(FIRST_GENES) + len(named) + 5}")
    rng = np.random.default_rng(20240601)
    n_rest = n_genes - len(FIRST_GENES)
    nums = np.sort(rng.choice(np.arange(1000, 290000), n_rest, replace=False))
    ids = [i for i, _ in FIRST_GENES] + [f"ENSG{n:011d}" for n in nums]
    versions = rng.integers(1, 20, n_genes)
    names = [n for _, n in FIRST_GENES] + [""] * n_rest
    types = ["protein_coding"] * n_genes
    slots = len(FIRST_GENES) + rng.choice(n_rest, len(named), replace=False)
    for k in range(len(FIRST_GENES), n_genes):
        if rng.random() < 0.15:
            types[k] = "lncRNA"
    for s, name in zip(slots, named):
        names[s], types[s] = name, "protein_coding"
    for k in range(n_genes):
        if not names[k]:
            names[k] = f"LINC{k:05d}" if types[k] == "lncRNA" else f"GENE{k:05d}"
    is_lnc = np.array([t == "lncRNA" for t in types])
    log_mean = rng.normal(np.where(is_lnc, math.log(30), math.log(300)), 1.5)
    loading = np.zeros(n_genes)
    for s, name in zip(slots, named):
        if name in SIGNAL_GENES:
            log_mean[s], loading[s] = math.log(1500) + rng.normal(0, 0.3), SIGNAL_LOADING
        elif name in ("GAPDH", "ACTB"):
            log_mean[s] = math.log(60000)
    length = np.clip(rng.lognormal(math.log(2500), 0.6, n_genes), 300, 50000).astype(np.int64)
    return pd.DataFrame({"gene_id": [f"{i}.{v}" for i, v in zip(ids, versions)], "gene_name": names,
                         "gene_type": types, "length": length, "log_mean": log_mean, "loading": loading})


def star_counts_tsv(rng: np.random.Generator, genes: pd.DataFrame, rna_signal: float) -> str:
    """One GDC 'STAR - Counts' file (augmented_star_gene_counts.tsv) as text: negative-binomial
    counts around each gene's base mean shifted by ``loading * rna_signal``; TPM, FPKM and FPKM-UQ
    from counts and gene length as the GDC computes them."""
    n = len(genes)
    mu = np.exp(genes["log_mean"].to_numpy() + genes["loading"].to_numpy() * rna_signal
                + rng.normal(0, 0.35, n) + rng.normal(0, 0.25))  # biological + library-size noise
    phi = 0.1  # NB dispersion
    counts = rng.poisson(rng.gamma(1 / phi, phi * mu)).astype(np.int64)
    first = rng.binomial(counts, 0.5)
    length = genes["length"].to_numpy().astype(float)
    pc = (genes["gene_type"] == "protein_coding").to_numpy()
    rate = counts / (length / 1e3)
    tpm = rate / rate.sum() * 1e6
    fpkm = counts * 1e9 / (length * max(counts[pc].sum(), 1))
    fpkm_uq = counts * 1e9 / (length * max(np.percentile(counts[pc], 75), 1.0))
    body = pd.DataFrame({"gene_id": genes["gene_id"], "gene_name": genes["gene_name"],
                         "gene_type": genes["gene_type"], "unstranded": counts,
                         "stranded_first": first, "stranded_second": counts - first,
                         "tpm_unstranded": tpm, "fpkm_unstranded": fpkm, "fpkm_uq_unstranded": fpkm_uq})
    total = int(counts.sum())
    unmapped, multi = (int(total * rng.uniform(a, b)) for a, b in ((0.02, 0.06), (0.05, 0.12)))
    nofeat, amb = int(total * rng.uniform(0.03, 0.08)), int(total * rng.uniform(0.02, 0.05))
    stats = [("N_unmapped", unmapped, unmapped, unmapped), ("N_multimapping", multi, multi, multi),
             ("N_noFeature", nofeat, nofeat + total - int(first.sum()), nofeat + int(first.sum())),
             ("N_ambiguous", amb, amb // 20, amb // 20)]
    head = "# gene-model: GENCODE v36\n" + "\t".join(STAR_COLUMNS) + "\n"
    head += "".join(f"{k}\t\t\t{a}\t{b}\t{c}\t\t\t\n" for k, a, b, c in stats)
    return head + body.to_csv(sep="\t", index=False, header=False, float_format="%.4f", lineterminator="\n")


# ----------------------------------------------------------------------------------------------
# copy number and mutations


def gene_positions(genes: pd.DataFrame) -> pd.DataFrame:
    """Fixed (seed-independent) chromosome (``chr1``…``chr22``, ``chrX``), start and end (bp) per
    gene; the signal genes share one 5 Mb region of chr8, so that one segment can gain them all."""
    rng = np.random.default_rng(20240602)
    chroms = np.array([f"chr{k}" for k in range(1, 23)] + ["chrX"])
    chrom = rng.choice(chroms, len(genes))
    start = rng.integers(1_000_000, 150_000_000, len(genes))
    signal = genes["gene_name"].isin(SIGNAL_GENES).to_numpy()
    chrom[signal] = "chr8"
    start[signal] = 120_000_000 + np.sort(rng.integers(0, 5_000_000, signal.sum()))
    return pd.DataFrame({"chromosome": chrom, "start": start, "end": start + genes["length"].to_numpy() - 1})


def gene_level_cnv_tsv(rng: np.random.Generator, genes: pd.DataFrame, positions: pd.DataFrame,
                       rna_signal: float) -> str:
    """One GDC 'Gene Level Copy Number' TSV as text: absolute copies, 2 except on 0-4 gained or
    lost chromosome arms; the signal region (chr8, 120-125 Mb) is gained with probability
    rising with ``rna_signal`` (a weak echo of the RNA signal). ~0.5 % of genes are in no
    segment (empty values); ~1 % span a breakpoint (min < max)."""
    n = len(genes)
    cn = np.full(n, 2, np.int64)
    for _ in range(int(rng.integers(0, 5))):
        chrom, arm = f"chr{int(rng.integers(1, 23))}", rng.random() < 0.5
        on = (positions["chromosome"].to_numpy() == chrom) & ((positions["start"].to_numpy() < 60_000_000) == arm)
        cn[on] = rng.choice([0, 1, 3, 4], p=[0.05, 0.45, 0.35, 0.15])
    signal = genes["gene_name"].isin(SIGNAL_GENES).to_numpy()
    if rng.random() < 1 / (1 + math.exp(-1.5 * rna_signal)):
        cn[signal] = 3 + int(rng.random() < 0.3)
    lo, hi = cn.copy(), cn.copy()
    span = rng.random(n) < 0.01
    lo[span] = np.maximum(cn[span] - 1, 0)
    text = [str(v) for v in cn]
    cols = [text, [str(v) for v in lo], [str(v) for v in hi]]
    for k in np.flatnonzero(rng.random(n) < 0.005):
        for c in cols:
            c[k] = ""
    body = pd.DataFrame({"gene_id": genes["gene_id"], "gene_name": genes["gene_name"],
                         "chromosome": positions["chromosome"], "start": positions["start"],
                         "end": positions["end"], "copy_number": cols[0], "min_copy_number": cols[1],
                         "max_copy_number": cols[2]})
    return _tsv(body)


def maf_text(rng: np.random.Generator, genes: pd.DataFrame, positions: pd.DataFrame, case: str,
             silent_only: bool = False) -> str:
    """One GDC masked somatic mutation file (MAF, before gzip): ``#`` header lines, then 0-40
    variants of protein-coding genes with classes from :data:`MAF_CLASSES` (only ``Silent`` and
    ``Intron`` when ``silent_only``)."""
    tumour, normal = f"{case}-01A-11D-A00D-09", f"{case}-10A-01D-A00D-09"
    coding = np.flatnonzero((genes["gene_type"] == "protein_coding").to_numpy())
    n = int(rng.integers(0, 41))
    idx = rng.choice(coding, n)
    classes = np.array(list(MAF_CLASSES))
    if silent_only:
        cls = rng.choice(np.array(["Silent", "Intron"]), n)
    else:
        cls = rng.choice(classes, n, p=np.array(list(MAF_CLASSES.values())) / sum(MAF_CLASSES.values()))
    bases = np.array(list("ACGT"))
    ref, alt = rng.choice(bases, n), rng.choice(bases, n)
    alt = np.where(alt == ref, np.roll(bases, 1)[np.searchsorted(bases, ref)], alt)
    deletion, insertion = np.isin(cls, ["Frame_Shift_Del", "In_Frame_Del"]), cls == "Frame_Shift_Ins"
    start = positions["start"].to_numpy()[idx] + rng.integers(0, 500, n)
    depth = rng.integers(30, 200, n)
    alt_count = np.maximum(3, (depth * rng.uniform(0.05, 0.6, n)).astype(np.int64))
    body = pd.DataFrame({
        "Hugo_Symbol": genes["gene_name"].to_numpy()[idx], "Entrez_Gene_Id": 0, "Center": "DEMO",
        "NCBI_Build": "GRCh38", "Chromosome": positions["chromosome"].to_numpy()[idx],
        "Start_Position": start, "End_Position": start, "Strand": "+", "Variant_Classification": cls,
        "Variant_Type": np.where(deletion, "DEL", np.where(insertion, "INS", "SNP")),
        "Reference_Allele": np.where(insertion, "-", ref), "Tumor_Seq_Allele1": np.where(insertion, "-", ref),
        "Tumor_Seq_Allele2": np.where(deletion, "-", alt), "dbSNP_RS": "novel",
        "Tumor_Sample_Barcode": tumour, "Matched_Norm_Sample_Barcode": normal, "HGVSp_Short": "",
        "Gene": genes["gene_id"].str.split(".").str[0].to_numpy()[idx], "t_depth": depth,
        "t_ref_count": depth - alt_count, "t_alt_count": alt_count, "n_depth": rng.integers(30, 200, n)},
        columns=list(MAF_COLUMNS)).sort_values(["Chromosome", "Start_Position"], kind="stable")
    head = ("#version gdc-1.0.0\n#filedate 20240601\n#annotation.spec gdc-1.0.1-public\n"
            f"#n.analyzed.samples 1\n#tumor.aliquots.submitter_id {tumour}\n")
    return head + _tsv(body)


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


def _clinical(rng: np.random.Generator, cases: pd.DataFrame, project: str) -> pd.DataFrame:
    """GDC clinical export rows: ~60 % of cases on two rows (radiation + pharmaceutical)."""
    stages = np.array(["Stage I", "Stage IIA", "Stage IIB", "Stage IIIA", "Stage IIIC", "Stage IV"])
    rows = []
    for c in cases.itertuples():
        age = int(np.clip(rng.normal(60, 12), 28, 89))
        dead = bool(c.event)
        stage_score = c.risk + rng.normal(0, 1.0)
        stage = stages[int(np.clip(np.floor((stage_score + 2.5) * len(stages) / 5), 0, len(stages) - 1))]
        base = {
            "case_id": c.case_id, "case_submitter_id": c.case_submitter_id, "project_id": project,
            "age_at_index": age, "days_to_birth": -int(age * 365.25 + rng.integers(0, 365)),
            "ethnicity": rng.choice(["not hispanic or latino", "hispanic or latino", "not reported"],
                                    p=[0.8, 0.05, 0.15]),
            "gender": rng.choice(["female", "male"]),
            "race": rng.choice(["white", "black or african american", "asian", "not reported"],
                               p=[0.7, 0.15, 0.08, 0.07]),
            "vital_status": "Dead" if dead else "Alive",
            "days_to_death": c.time if dead else MISSING,
            "days_to_last_follow_up": (MISSING if rng.random() < 0.5 else int(rng.integers(0, c.time + 1)))
            if dead else c.time,
            "ajcc_pathologic_stage": MISSING if rng.random() < 0.05 else stage,
            "primary_diagnosis": rng.choice(["Adenocarcinoma, NOS", "Infiltrating duct carcinoma, NOS"]),
        }
        if rng.random() < 0.6:
            for t in ("Radiation Therapy, NOS", "Pharmaceutical Therapy, NOS"):
                rows.append(base | {"treatment_or_therapy": rng.choice(["yes", "no"]), "treatment_type": t})
        else:
            rows.append(base | {"treatment_or_therapy": MISSING, "treatment_type": MISSING})
    return pd.DataFrame(rows, columns=list(CLINICAL_COLUMNS))


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
    _write_text(paths["clinical"], _tsv(_clinical(rng, cases, project)))
    _write_text(paths["manifest"], _tsv(manifest))
    _write_text(paths["sample_sheet"], _tsv(sheet))
    truth_cols = ["case_submitter_id", "case_id", "tumour_fraction", "rna_signal", "risk", "time", "event",
                  "n_slides", "n_blank_slides", "has_rna", "has_cnv", "has_maf", "slide_tumour_fraction"]
    _write_text(paths["truth"], cases[truth_cols].to_csv(sep="\t", index=False, lineterminator="\n",
                                                         float_format="%.6f"))
    # where the planted signal is: per slide the tumour texture, and the signal genes
    write_truth_tumour(paths["truth_tumour"], {Path(t[0]).name[: -len(".svs")]: cells
                                               for t, (_, cells) in zip(slide_tasks, rendered)}, cell=_CELL)
    signal = genes[genes["loading"] != 0]
    _write_text(paths["truth_genes"], _tsv(signal[["gene_id", "gene_name", "loading"]]))
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
