"""GDC omics files as text: STAR gene counts, gene-level copy number and masked somatic MAFs.

Why a module of its own: these writers turn a fixed gene annotation and a case's latent
``rna_signal`` into the exact file formats the GDC hands out; they know nothing of slides or of
how the demo cohort (:mod:`generators.demo`) picks its cases, files and random streams.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

SIGNAL_GENES = ("MKI67", "TOP2A", "CCNB1", "BIRC5", "AURKA",
                "FOXM1", "CDK1", "UBE2C", "PTTG1", "CENPF")
OTHER_NAMED_GENES = ("ESR1", "PGR", "ERBB2", "GAPDH", "ACTB", "KRT5", "KRT18", "VIM", "CD8A", "PTPRC")
FIRST_GENES = (("ENSG00000000003", "TSPAN6"), ("ENSG00000000005", "TNMD"), ("ENSG00000000419", "DPM1"),
               ("ENSG00000000457", "SCYL3"), ("ENSG00000000460", "C1orf112"))
STAR_COLUMNS = ("gene_id", "gene_name", "gene_type", "unstranded", "stranded_first", "stranded_second",
                "tpm_unstranded", "fpkm_unstranded", "fpkm_uq_unstranded")
SIGNAL_LOADING = 0.7  # natural-log expression shift of a signal gene per SD of rna_signal
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


def tsv_text(df: pd.DataFrame) -> str:
    """``df`` as GDC-style TSV text (tab-separated, no index, ``\\n`` line ends)."""
    return df.to_csv(sep="\t", index=False, lineterminator="\n")


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
    return tsv_text(body)


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
    return head + tsv_text(body)

