"""A zoomable viewer of the slides in the attention report: DeepZoom tiles and one static page.

``results/{cohort}/viewer/`` holds, for each (case, slide) of ``attention/heatmaps/``:

* ``tiles/{slide}_files/{level}/{col}_{row}.jpeg`` and ``tiles/{slide}.dzi``: the DeepZoom
  pyramid of the slide, written by OpenSlide's ``DeepZoomGenerator`` (any DeepZoom viewer reads
  it; the whole pyramid, so a 100 000² px slide is ~150 000 tiles);
* ``data/slide-{i}.js``: the overlays in level-0 px: tissue contours (the tissue stage's GeoJSON),
  the removed pen/ink (recomputed on the tissue stage's thumbnail with its own
  :func:`~preprocessing.tissue.marker_mask` and parameters), every patch of the tiling, and the
  attention of the patches in the model's bag with their percentile rank within the slide;
* ``index.html``, ``viewer.js``, ``viewer.css``, ``viewer_data.js`` (the slide list) and
  ``openseadragon/`` (OpenSeadragon as npm installed it, copied, not kept in the repository).

Data travel as ``<script>`` files, not JSON fetched by XHR, and tile sources are inline DZI
objects, so the page works opened from the file system (``file://``), where browsers refuse
XHR, as well as from any static server (README "Slide viewer").
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from preprocessing.io import atomic_path

from .attention_io import read_attention
from .attention_maps import CMAP, assign_slides, percentile_scores

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("viewer_static")
REPO = Path(__file__).resolve().parents[1]
OPENSEADRAGON = REPO / "node_modules" / "openseadragon" / "build" / "openseadragon"


@dataclass
class ViewerSlide:
    """One slide of the attention report and where its pipeline outputs are."""

    slide_id: str
    case_id: str
    slide_path: str
    tissue_geojson: str
    patches_h5: str
    coords: np.ndarray | None = None  # (n, 2) level-0 px of the patches with attention
    attention: np.ndarray | None = None  # (n,)
    risk: float | None = None


def report_pairs(heatmaps_dir: str | os.PathLike) -> list[tuple[str, str]]:
    """(case, slide) of every heatmap the attention report drew: ``{case}__{slide}.png``."""
    return sorted(tuple(p.stem.split("__", 1)) for p in Path(heatmaps_dir).glob("*__*.png"))


def attach_attention(slides: list[ViewerSlide], attention_files, predictions_files) -> list[ViewerSlide]:
    """Fill each slide's patch coordinates, attention and risk from the folds' ``attention.npz``
    and ``predictions.tsv`` (a case is a test case of one fold), splitting a case's bag over its
    slides as :mod:`healnet.attention_maps` does."""
    from preprocessing.tiling import read_coords

    wsi, coords, per_patch = {}, {}, {}
    for path in attention_files:
        att = read_attention(path)
        wsi.update(att.wsi)
        coords.update(att.coords)
        per_patch.update(att.slides)
    risks = {}
    if predictions_files:
        table = pd.concat([pd.read_csv(p, sep="\t") for p in predictions_files], ignore_index=True)
        risks = dict(zip(table["case_id"].astype(str), table["risk"].astype(float)))
    by_case: dict[str, list[ViewerSlide]] = {}
    for s in slides:
        by_case.setdefault(s.case_id, []).append(s)
    for case, mine in by_case.items():
        for s in mine:
            s.risk = risks.get(case)
        if case not in wsi:
            continue
        owner = per_patch.get(case)
        if owner is None:
            owner = assign_slides(coords[case], {s.slide_id: read_coords(s.patches_h5)[0] for s in mine})
        for s in mine:
            on = owner == s.slide_id
            s.coords, s.attention = coords[case][on], wsi[case][on]
    return slides


# ---------------------------------------------------------------------------------------------
# tiles and overlays


def write_tiles(slide_path: str | os.PathLike, out_dir: Path, name: str, *, tile_size: int = 254, overlap: int = 1,
                quality: int = 80) -> dict:
    """The slide's DeepZoom pyramid under ``out_dir/{name}_files/`` and ``out_dir/{name}.dzi``;
    returns the inline DZI tile source (URLs relative to the page, one level above ``out_dir``)."""
    from openslide.deepzoom import DeepZoomGenerator

    from preprocessing.slides import open_slide

    with open_slide(slide_path) as slide:
        dz = DeepZoomGenerator(slide, tile_size=tile_size, overlap=overlap, limit_bounds=False)
        for level in range(dz.level_count):
            folder = out_dir / f"{name}_files" / str(level)
            folder.mkdir(parents=True, exist_ok=True)
            cols, rows = dz.level_tiles[level]
            for col in range(cols):
                for row in range(rows):
                    dz.get_tile(level, (col, row)).convert("RGB").save(folder / f"{col}_{row}.jpeg", quality=quality)
        (out_dir / f"{name}.dzi").write_text(dz.get_dzi("jpeg"))
        width, height = dz.level_dimensions[-1]
    return {"Image": {"xmlns": "http://schemas.microsoft.com/deepzoom/2008", "Url": f"{out_dir.name}/{name}_files/",
                      "Format": "jpeg", "Overlap": str(overlap), "TileSize": str(tile_size),
                      "Size": {"Width": str(width), "Height": str(height)}},
            "levels": dz.level_count}


def pen_polygons(slide_path: str | os.PathLike, meta: dict) -> list:
    """Polygons (level-0 px) of the marker ink and near-black ink the tissue stage cut out, found
    again with its own function and parameters on a thumbnail at its resolution."""
    from dataclasses import fields

    from preprocessing.slides import open_slide, slide_info
    from preprocessing.thumbnails import read_thumbnail
    from preprocessing.tissue import TissueParams, marker_mask
    from preprocessing.tissue_geojson import mask_to_polygons

    known = {f.name for f in fields(TissueParams)}
    params = TissueParams(**{k: v for k, v in (meta.get("params") or {}).items() if k in known})
    with open_slide(slide_path) as slide:
        info = slide_info(slide, slide_path, meta.get("mpp"))
        thumb, downsample = read_thumbnail(slide, info.mpp, params.thumbnail_mpp)
    marker = marker_mask(thumb, info.mpp * downsample, params)
    return mask_to_polygons(marker, downsample) if marker.any() else []


def _rounded(polygons: list) -> list:
    return [[[[round(x, 1), round(y, 1)] for x, y in ring] for ring in poly] for poly in polygons]


def slide_overlays(s: ViewerSlide) -> dict:
    """Everything the page draws over one slide, level-0 px."""
    from preprocessing.tiling import read_coords
    from preprocessing.tissue_geojson import read_tissue

    polygons, meta = read_tissue(s.tissue_geojson)
    patches, attrs = read_coords(s.patches_h5)
    try:
        pen = pen_polygons(s.slide_path, meta)
    except Exception as err:  # noqa: BLE001 - the viewer without a pen layer, not no viewer
        log.warning("%s: no pen/ink layer: %s", s.slide_id, err)
        pen = []
    out = {"id": s.slide_id, "case": s.case_id, "risk": s.risk, "patch_size": int(attrs["patch_size_level0"]),
           "mpp": meta.get("mpp"), "tissue": _rounded(polygons), "pen": _rounded(pen),
           "patches": np.asarray(patches, np.int64).tolist(), "attention": None}
    if s.attention is not None and len(s.attention):
        out["attention"] = {"coords": np.asarray(s.coords, np.int64).tolist(),
                            "value": [float(f"{v:.6g}") for v in s.attention],
                            "percentile": [round(float(p), 4) for p in percentile_scores(s.attention)]}
    return out


def colormap(n: int = 256) -> list[str]:
    """The heatmaps' colour map (:data:`healnet.attention_maps.CMAP`) as ``n`` hex colours."""
    from matplotlib import colormaps

    rgb = np.round(colormaps[CMAP](np.linspace(0, 1, n))[:, :3] * 255).astype(int)
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in rgb]


# ---------------------------------------------------------------------------------------------
# the page


def build_viewer(slides: list[ViewerSlide], out_dir: str | os.PathLike, *, title: str,
                 openseadragon: str | os.PathLike = OPENSEADRAGON, tile_size: int = 254, overlap: int = 1,
                 quality: int = 80) -> dict:
    """Write the viewer of ``slides`` to ``out_dir`` (atomically: the folder appears complete)."""
    osd = Path(openseadragon)
    if not (osd / "openseadragon.min.js").is_file():
        raise FileNotFoundError(f"{osd}/openseadragon.min.js not found: install the viewer's browser dependencies "
                                "with `npm ci` (or `make install`) in the repository, or set viewer.openseadragon")
    index = {"title": title, "colormap": colormap(), "slides": []}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        shutil.copytree(osd, tmp / "openseadragon", ignore=shutil.ignore_patterns("*.map", "openseadragon.js"))
        for name in ("index.html", "viewer.js", "viewer.css"):
            shutil.copy(STATIC / name, tmp / name)
        (tmp / "data").mkdir()
        for i, s in enumerate(slides):
            source = write_tiles(s.slide_path, tmp / "tiles", s.slide_id, tile_size=tile_size, overlap=overlap,
                                 quality=quality)
            overlays = slide_overlays(s)
            (tmp / "data" / f"slide-{i}.js").write_text(
                f"HEALNET_VIEWER_LOADED({i}, {json.dumps(overlays, separators=(',', ':'))});\n")
            n_att = 0 if overlays["attention"] is None else len(overlays["attention"]["value"])
            index["slides"].append({"id": s.slide_id, "case": s.case_id, "risk": s.risk, "data": f"data/slide-{i}.js",
                                    "tileSource": {"Image": source["Image"]}, "levels": source["levels"],
                                    "n_patches": len(overlays["patches"]), "n_attention": n_att})
            log.info("viewer: %s (%d DeepZoom levels, %d patches, %d with attention)", s.slide_id, source["levels"],
                     len(overlays["patches"]), n_att)
        (tmp / "viewer_data.js").write_text(f"window.HEALNET_VIEWER_INDEX = {json.dumps(index, indent=1)};\n")
    return {"index": str(Path(out_dir) / "index.html"), "slides": [s["id"] for s in index["slides"]]}


def viewer_slides(pairs: list[tuple[str, str]], slide_paths: dict[str, str], tissue_files: dict[str, str],
                  patch_files: dict[str, str]) -> list[ViewerSlide]:
    """The report's (case, slide) pairs with their files; a pair whose files are missing is an error."""
    missing = [sid for _, sid in pairs if sid not in slide_paths or sid not in tissue_files or sid not in patch_files]
    if missing:
        raise ValueError(f"no slide, tissue or patch file for the report's slides {missing[:5]}")
    return [ViewerSlide(sid, case, str(slide_paths[sid]), str(tissue_files[sid]), str(patch_files[sid]))
            for case, sid in pairs]


def view_results(cohort_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *, model: str = "healnet",
                 openseadragon: str | os.PathLike = OPENSEADRAGON, **tiles) -> dict:
    """``healnet view RESULTS/COHORT``: the viewer of a finished cohort, found by the pipeline's
    layout (heatmaps, attention of ``model``'s folds, predictions, tissue, patches; each slide's
    path as its tissue GeoJSON records it), written to ``COHORT/viewer`` unless told otherwise."""
    from preprocessing.tissue_geojson import read_tissue

    root = Path(cohort_dir)
    pairs = report_pairs(root / "attention" / "heatmaps")
    if not pairs:
        raise FileNotFoundError(f"{root}/attention/heatmaps: no heatmap: run the pipeline's attention_maps first")
    ids = {sid for _, sid in pairs}
    tissue = {sid: root / "tissue" / f"{sid}.geojson" for sid in ids}
    paths = {sid: read_tissue(p)[1].get("path") for sid, p in tissue.items() if p.exists()}
    slides = viewer_slides(pairs, {k: v for k, v in paths.items() if v}, tissue,
                           {sid: root / "patches" / f"{sid}.h5" for sid in ids})
    folds = sorted((root / "models" / model).glob("fold*"))
    attach_attention(slides, [f / "attention.npz" for f in folds if (f / "attention.npz").exists()],
                     [f / "predictions.tsv" for f in folds if (f / "predictions.tsv").exists()])
    return build_viewer(slides, out_dir or root / "viewer", title=f"{root.name}: {model} attention",
                        openseadragon=openseadragon, **tiles)
