"""Attention of a trained model mapped back onto the slides and onto gene names.

Input: one ``attention.npz`` per fold (written by training), read by
:func:`healnet.attention_io.read_attention` (the format is documented there).  Without
``slide/<case_id>``, the patches are assigned to the case's slides by matching their coordinates,
in order, against the slides' patch files taken in slide-id order (the order the bag was built in).

Outputs: a PNG per (case, slide): ``[thumbnail | heatmap over the thumbnail | colour bar]`` under
a one-line title, the heatmap painting every patch with its attention's percentile rank within
the slide (``jet``: blue = low, red = high), and a TSV ranking genes by their attention.  Where the
planted truth of the generated demo is given (``truth_tumour.npz``, :mod:`generators.demo`), both
panels outline the planted tumour texture in black, so a reader sees whether attention follows it.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from preprocessing.io import atomic_path

from .attention_io import Attention, read_attention

log = logging.getLogger(__name__)

GAP = 8  # px between the panels of a heatmap PNG
HEADER = 18  # px of the title line
BAR = 14  # px width of the colour bar
ALPHA = 0.5  # opacity of the heat over the thumbnail
CMAP = "jet"
OUTLINE = (0, 0, 0)  # colour of the planted tumour's outline


def assign_slides(coords: np.ndarray, slide_coords: dict[str, np.ndarray]) -> np.ndarray:
    """Slide id of each patch of a case's bag, from the coordinates of its slides' patch files
    (``slide_coords``, taken in sorted slide-id order): the bag's patches are those slides'
    patches, concatenated in that order (subsampling keeps the order), so each coordinate is
    matched in order, moving on to the next slide when the current one has no such patch left."""
    order = sorted(slide_coords)
    positions = []
    for sid in order:
        index: dict[tuple, list[int]] = {}
        for i, c in enumerate(np.asarray(slide_coords[sid]).tolist()):
            index.setdefault(tuple(c), []).append(i)
        positions.append(index)
    out, k, last = [], 0, -1
    for c in np.asarray(coords).tolist():
        c = tuple(c)
        while k < len(order):
            nxt = next((i for i in positions[k].get(c, []) if i > last), None)
            if nxt is not None:
                last = nxt
                out.append(order[k])
                break
            k, last = k + 1, -1
        else:
            raise ValueError(f"patch at {c} is not a patch of the case's slides {order} (in bag order)")
    return np.asarray(out, dtype=str)


# ---------------------------------------------------------------------------------------------
# slide heatmaps


def percentile_scores(scores: np.ndarray) -> np.ndarray:
    """Percentile rank of each score in (0, 1] (ties share their mean rank); robust to the few
    very large values attention tends to have."""
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=float)
    if scores.size == 0:
        return scores
    return rankdata(scores) / scores.size


def heat_grid(coords: np.ndarray, values: np.ndarray, patch_size0: int, downsample: float,
              shape: tuple[int, int]) -> np.ndarray:
    """(H, W) float map at thumbnail resolution: each patch's square filled with its value (the
    mean where patches overlap), NaN where there is no patch."""
    total, count = np.zeros(shape), np.zeros(shape)
    h, w = shape
    for (x, y), v in zip(np.asarray(coords), np.asarray(values, dtype=float)):
        x0, y0 = int(np.floor(x / downsample)), int(np.floor(y / downsample))
        x1 = max(x0 + 1, int(np.ceil((x + patch_size0) / downsample)))
        y1 = max(y0 + 1, int(np.ceil((y + patch_size0) / downsample)))
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 > x0 and y1 > y0:
            total[y0:y1, x0:x1] += v
            count[y0:y1, x0:x1] += 1
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def overlay(thumbnail: np.ndarray, grid: np.ndarray, *, alpha: float = ALPHA, cmap: str = CMAP) -> np.ndarray:
    """The thumbnail with ``grid`` (values in [0, 1], NaN = leave as is) blended on top."""
    from matplotlib import colormaps

    colours = colormaps[cmap](np.nan_to_num(grid, nan=0.0))[..., :3] * 255
    out = thumbnail.astype(float)
    inside = ~np.isnan(grid)
    out[inside] = (1 - alpha) * out[inside] + alpha * colours[inside]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def truth_outline(tumour: np.ndarray, cell_px: int, downsample: float, shape: tuple[int, int],
                  share: float = 0.5, width: int = 2) -> np.ndarray:
    """(H, W) bool at thumbnail resolution: the ``width``-px border of the region whose planted
    tumour share (``tumour``: a grid of ``cell_px`` level-0 px cells) is >= ``share``."""
    from scipy import ndimage

    h, w = shape
    rows = np.minimum(((np.arange(h) + 0.5) * downsample // cell_px).astype(int), tumour.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * downsample // cell_px).astype(int), tumour.shape[1] - 1)
    inside = tumour[np.ix_(rows, cols)] >= share
    return inside & ~ndimage.binary_erosion(inside, iterations=width, border_value=1)


def compose(thumbnail: np.ndarray, heat: np.ndarray, title: str, *, cmap: str = CMAP) -> np.ndarray:
    """``[thumbnail | heat | colour bar]`` below a title line: (HEADER + H, 2W + 2 GAP + BAR, 3).
    The heat panel starts at column ``W + GAP``, row ``HEADER``."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    h, w = thumbnail.shape[:2]
    canvas = np.full((HEADER + h, 2 * w + 2 * GAP + BAR, 3), 255, np.uint8)
    canvas[HEADER:, :w] = thumbnail
    canvas[HEADER:, w + GAP: 2 * w + GAP] = heat
    ramp = colormaps[cmap](np.linspace(1, 0, h))[:, :3] * 255  # top = high
    canvas[HEADER:, 2 * w + 2 * GAP:] = np.round(ramp)[:, None, :].astype(np.uint8)
    image = Image.fromarray(canvas)
    ImageDraw.Draw(image).text((2, 3), title, fill=(0, 0, 0))
    return np.asarray(image)


def read_slide_thumbnail(slide_path: str | os.PathLike, max_side: int = 1024) -> tuple[np.ndarray, float]:
    """(RGB thumbnail with its longer side <= ``max_side``, level-0 px per thumbnail px), read with
    :func:`preprocessing.thumbnails.read_thumbnail` (OpenSlide, or tiatoolbox for what it cannot read)."""
    from preprocessing.slides import open_slide
    from preprocessing.thumbnails import read_thumbnail

    with open_slide(slide_path) as slide:
        width, height = slide.dimensions
        ratio = max(1.0, max(width, height) / max_side)
        return read_thumbnail(slide, 1.0, ratio)  # only the ratio of the two resolutions matters


def render_heatmap(slide_path, patches_h5, coords: np.ndarray, scores: np.ndarray, out_png, *, title: str = "",
                   max_side: int = 1024, tumour: tuple[np.ndarray, int] | None = None) -> dict:
    """Heatmap PNG of one slide's patch attention (see the module docstring).  ``coords`` (n, 2)
    level-0 px must be patches of ``patches_h5`` (whose ``patch_size_level0`` gives their size);
    a coordinate not in the h5 file is an error (attention from another tiling).  ``tumour``:
    (planted tumour share per cell, cell px) of the slide, outlined on both panels."""
    from preprocessing.tiling import read_coords

    tiled, attrs = read_coords(patches_h5)
    coords = np.asarray(coords, np.int64).reshape(-1, 2)
    known = {tuple(c) for c in tiled.tolist()}
    unknown = [tuple(c) for c in coords.tolist() if tuple(c) not in known]
    if unknown:
        raise ValueError(f"{patches_h5}: {len(unknown)} of {len(coords)} attention coordinates are not patches of "
                         f"this slide, e.g. {unknown[0]}")
    thumbnail, downsample = read_slide_thumbnail(slide_path, max_side)
    grid = heat_grid(coords, percentile_scores(scores), int(attrs["patch_size_level0"]), downsample,
                     thumbnail.shape[:2])
    heat = overlay(thumbnail, grid)
    if tumour is not None:
        edge = truth_outline(tumour[0], int(tumour[1]), downsample, thumbnail.shape[:2])
        thumbnail, heat = thumbnail.copy(), heat.copy()
        thumbnail[edge], heat[edge] = OUTLINE, OUTLINE
    image = compose(thumbnail, heat, title)
    from PIL import Image

    with atomic_path(out_png) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return {"png": str(out_png), "n_patches": int(len(coords)), "downsample": float(downsample)}


def pick_cases(predictions: pd.DataFrame, attention: Attention, n: int) -> list[str]:
    """Up to ``n`` cases with slide attention: alternately the highest- and lowest-risk ones."""
    with_wsi = predictions[predictions["case_id"].astype(str).isin(attention.wsi)]
    ordered = with_wsi.sort_values(["risk", "case_id"], ascending=[False, True])["case_id"].astype(str).tolist()
    picked = []
    while ordered and len(picked) < n:
        picked.append(ordered.pop(0))
        if ordered and len(picked) < n:
            picked.append(ordered.pop())
    return picked


def render_case(attention: Attention, case_id: str, slide_paths: dict[str, str], patch_files: dict[str, str],
                out_dir, *, risk: float | None = None, max_side: int = 1024,
                tumour: tuple[dict[str, np.ndarray], int] | None = None) -> list[str]:
    """One heatmap PNG per slide of ``case_id``: ``<out_dir>/<case_id>__<slide_id>.png``; ``tumour``:
    (planted tumour share grid per slide id, cell px), outlined where the slide has one."""
    from preprocessing.tiling import read_coords

    from .bags import case_of_slide

    scores, coords = attention.wsi[case_id], attention.coords[case_id]
    slides = attention.slides.get(case_id)
    if slides is None:
        mine = {s: read_coords(p)[0] for s, p in patch_files.items() if case_of_slide(s) == case_id}
        if not mine:
            raise ValueError(f"case {case_id}: none of the patch files belongs to this case")
        slides = assign_slides(coords, mine)
    written = []
    for slide in sorted(set(slides.tolist())):
        if slide not in slide_paths or slide not in patch_files:
            raise ValueError(f"case {case_id}: slide {slide} has no slide file or patch file among the inputs")
        on = slides == slide
        out = Path(out_dir) / f"{case_id}__{slide}.png"
        planted = (tumour[0][slide], tumour[1]) if tumour is not None and slide in tumour[0] else None
        title = f"{case_id}  {slide}" + (f"  risk {risk:.3f}" if risk is not None else "") + "  (red = high attention"
        title += ", black outline = planted tumour)" if planted is not None else ")"
        render_heatmap(slide_paths[slide], patch_files[slide], coords[on], scores[on], out, title=title,
                       max_side=max_side, tumour=planted)
        written.append(str(out))
    return written


# ---------------------------------------------------------------------------------------------
# genes


def gene_ranking(attentions: list[Attention], gene_names: pd.DataFrame | None = None) -> pd.DataFrame:
    """Genes ranked by mean attention over the test cases of all folds, per modality.

    Columns: modality, rank (1 = most attended), gene_id, gene_name, mean_attention,
    std_attention, n_cases (cases whose fold's model used the gene: folds select their own
    genes), n_folds.  ``gene_names`` has columns gene_id, gene_name (``omics/rna_genes.tsv``); a
    missing name is left empty."""
    records = []
    for fold, att in enumerate(attentions):
        for m, per_case in att.omics.items():
            genes = att.genes[m]
            for case, values in per_case.items():
                records.append(pd.DataFrame({"modality": m, "gene_id": genes, "attention": values, "case": case,
                                             "fold": fold}))
    columns = ["modality", "rank", "gene_id", "gene_name", "mean_attention", "std_attention", "n_cases", "n_folds"]
    if not records:
        return pd.DataFrame(columns=columns)
    long = pd.concat(records, ignore_index=True)
    table = (long.groupby(["modality", "gene_id"])
             .agg(mean_attention=("attention", "mean"), std_attention=("attention", "std"),
                  n_cases=("case", "nunique"), n_folds=("fold", "nunique")).reset_index())
    names = {}
    if gene_names is not None and len(gene_names):
        names = dict(zip(gene_names["gene_id"].astype(str), gene_names["gene_name"].astype(str)))
    table["gene_name"] = table["gene_id"].map(lambda g: names.get(g, names.get(str(g).split(".")[0], "")))
    table = table.sort_values(["modality", "mean_attention", "gene_id"], ascending=[True, False, True])
    table["rank"] = table.groupby("modality").cumcount() + 1
    return table[columns].reset_index(drop=True)


def attention_report(attention_files, predictions_files, slide_paths: dict[str, str], patch_files: dict[str, str],
                     out_dir, genes_out, *, gene_names: str | os.PathLike | None = None, n_cases: int = 4,
                     max_side: int = 1024, truth_tumour: str | os.PathLike | None = None) -> dict:
    """Heatmaps of ``n_cases`` test cases (highest and lowest predicted risk, over all folds) into
    ``out_dir`` and the gene ranking into ``genes_out``; ``truth_tumour``: the generated demo's
    ``truth_tumour.npz``, whose planted tumour is outlined on the heatmaps."""
    attentions = [read_attention(p) for p in attention_files]
    predictions = pd.concat([pd.read_csv(p, sep="\t") for p in predictions_files], ignore_index=True) \
        if predictions_files else pd.DataFrame(columns=["case_id", "risk"])
    merged = Attention(case_ids=[c for a in attentions for c in a.case_ids])
    for a in attentions:
        merged.wsi.update(a.wsi)
        merged.coords.update(a.coords)
        merged.slides.update(a.slides)
    risks = dict(zip(predictions["case_id"].astype(str), predictions["risk"]))
    tumour = None
    if truth_tumour and os.path.exists(truth_tumour):
        from preprocessing.truth import read_truth_tumour

        shares, _, cell = read_truth_tumour(truth_tumour)
        tumour = (shares, cell)
    out_dir = Path(out_dir)
    written = []
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for case in pick_cases(predictions, merged, n_cases):
            written += render_case(merged, case, slide_paths, patch_files, tmp, risk=risks.get(case), max_side=max_side,
                                   tumour=tumour)
        if not written:  # keep the folder (a Snakemake output) even when no slide attention exists
            (tmp / "README.txt").write_text("no slide attention in the inputs\n")
    names = pd.read_csv(gene_names, sep="\t") if gene_names and os.path.exists(gene_names) else None
    ranking = gene_ranking(attentions, names)
    with atomic_path(genes_out) as tmp:
        ranking.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    log.info("attention: %d heatmaps, %d ranked genes", len(written), len(ranking))
    return {"heatmaps": [str(out_dir / Path(p).name) for p in written], "genes": len(ranking)}
