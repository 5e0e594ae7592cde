"""QC tables that account for every input slide and case: used, skipped (why) or failed (why).

A report on every stage's outputs (tissue masks, patch coordinates, feature stores through
:mod:`preprocessing.feature_store`, survival, omics) and on the folds of :mod:`healnet.splits`:
it sits on the reporting side, so no stage depends on the learner."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from preprocessing.feature_store import index_files, store_summary
from preprocessing.io import atomic_path
from preprocessing.omics import omics_cases
from preprocessing.tiling import read_coords
from preprocessing.tissue_geojson import read_tissue

from .splits import read_splits


SLIDE_COLUMNS = ["slide_id", "case_id", "file", "status", "reason", "mpp", "width", "height", "tissue_area_mm2",
                 "n_patches", "features"]


def slides_table(slides: pd.DataFrame, index: str | os.PathLike | None) -> pd.DataFrame:
    """One row per slide of the inventory with status, reason, mpp, size, tissue area (mm²) and patches
    (a slide the GDC download step failed or skipped, ``download_status``: that status and why).

    ``index`` is the cohort's feature index (:func:`preprocessing.feature_store.write_index`, with its
    ``tissue`` and ``patches`` columns): it names each slide's store, tissue GeoJSON and patch
    coordinates, so that QC knows no folder layout. A slide it does not list was not processed; None
    (a cohort of tables) lists none."""
    files = {column: index_files(index, column) if index else {} for column in ("store", "tissue", "patches")}
    rows = []
    for slide in slides.itertuples():
        sid = slide.slide_id
        row = {"slide_id": sid, "case_id": slide.case_id, "file": slide.path, "status": "failed",
               "reason": "not processed", "mpp": None, "width": None, "height": None,
               "tissue_area_mm2": None, "n_patches": 0, "features": False}
        fetched = str(getattr(slide, "download_status", "") or "").lower()
        if fetched in ("failed", "skipped"):  # never on disk: the GDC download step says why
            reason = str(slide.download_reason)
            row.update(status=fetched, reason=f"download failed: {reason}" if fetched == "failed" else reason)
            rows.append(row)
            continue
        geojson = Path(files["tissue"].get(sid, ""))
        if geojson.is_file():
            _, meta = read_tissue(geojson)
            row.update({k: meta.get(k) for k in ("mpp", "width", "height", "tissue_area_mm2")})
            row.update(status=meta.get("status", "failed"), reason=meta.get("reason", ""))
        h5 = Path(files["patches"].get(sid, ""))
        if h5.is_file():
            coords, attrs = read_coords(h5)
            row.update(status=str(attrs.get("status")), reason=str(attrs.get("reason")), n_patches=len(coords))
        store = files["store"].get(sid)
        row["features"] = bool(store) and Path(store).exists()
        if row["features"] and row["status"] == "ok":  # a patch that could not be read fails the slide here
            summary = store_summary(store)
            if summary["status"] != "ok":
                row.update(status=summary["status"], reason=summary["reason"], n_patches=0)
        if row["status"] == "ok" and not row["features"]:
            row.update(status="failed", reason="no feature store")
        rows.append(row)
    return pd.DataFrame(rows, columns=SLIDE_COLUMNS)


def case_test_folds(folds: list[dict]) -> dict[str, int]:
    """case -> the fold it is tested in. With repeated cross-validation (folds with ``repeat`` and
    ``fold_in_repeat`` keys) every case is tested once per repeat: this is its fold of repeat 0,
    numbered within the repeat (0..n_folds-1, equal to the fold index k there); with one repeat,
    the fold index k."""
    fold_of: dict[str, int] = {}
    first = sorted(range(len(folds)), key=lambda k: folds[k].get("repeat", 0))  # stable: repeat 0 first, by k
    for k in first:
        fold = folds[k]
        for case in fold["test"]:
            fold_of.setdefault(case, int(fold.get("fold_in_repeat", k)))
    return fold_of


def cases_table(survival: pd.DataFrame, slides_qc: pd.DataFrame, omics_cases: dict[str, set[str]] | set[str],
                folds: list[dict[str, list[str]]], modalities: list[str] | None = None) -> pd.DataFrame:
    """One row per case: what it has, its survival status, its test fold, and used or why not.

    ``omics_cases`` gives, per omics modality (``rna``, ``cnv``, ``mutations``, a table name),
    the cases with a row in its matrix (a bare set means RNA); column ``has_{name}`` each.
    ``modalities`` (``wsi`` and omics names; default: all) are those the model learns from: an
    ``ok`` case with none of them usable is excluded, "no usable modality (…)". ``test_fold`` is
    the case's fold of repeat 0 (see :func:`case_test_folds`).
    """
    if not isinstance(omics_cases, dict):
        omics_cases = {"rna": set(omics_cases)}
    modalities = list(modalities) if modalities is not None else ["wsi", *omics_cases]
    fold_of = case_test_folds(folds)
    usable = slides_qc[slides_qc["status"] == "ok"].groupby("case_id").size()
    table = survival.copy()
    table["n_slides_usable"] = table["case_id"].map(usable).fillna(0).astype(int)
    has_any = (table["n_slides_usable"] > 0) if "wsi" in modalities else pd.Series(False, index=table.index)
    for name, cases in omics_cases.items():
        table[f"has_{name}"] = table["case_id"].isin(cases)
        if name in modalities:
            has_any |= table[f"has_{name}"]
    table["test_fold"] = table["case_id"].map(fold_of).astype("Int64")
    labels = {"wsi": "tissue patches", "rna": "RNA", "cnv": "CNV", "mutations": "mutations"}
    missing = ", ".join(f"no {labels.get(m, m)}" for m in modalities)
    table.loc[(table["status"] == "ok") & ~has_any, ["status", "reason"]] = ["excluded", f"no usable modality ({missing})"]
    table["status"] = table["status"].replace({"ok": "used"})
    table.loc[table["status"] != "used", "test_fold"] = pd.NA
    return table


def write_qc_tables(slides: pd.DataFrame | None, index: str | os.PathLike | None, clinical: str | os.PathLike,
                    omics: dict[str, str | os.PathLike] | str | os.PathLike, splits: str | os.PathLike,
                    slides_out, cases_out, modalities: list[str] | None = None) -> None:
    """Both QC tables for a cohort, from the outputs of every stage, written atomically.

    ``slides`` is the inventory's slides, None for a cohort without slides (tables only: an empty
    ``slides.tsv``, every case still in ``cases.tsv``); ``index`` the cohort's feature index (see
    :func:`slides_table`); ``omics`` maps modality names to their
    ``omics/{name}.parquet`` (a bare path means RNA); ``modalities`` are those training uses (see
    :func:`cases_table`).
    """
    if not isinstance(omics, dict):
        omics = {"rna": omics}
    if slides is None:
        slides = pd.DataFrame(columns=["slide_id", "case_id", "path"])
    slides_qc = slides_table(slides, index)
    cases_qc = cases_table(pd.read_parquet(clinical), slides_qc, omics_cases(omics), read_splits(splits), modalities)
    for table, path in ((slides_qc, slides_out), (cases_qc, cases_out)):
        with atomic_path(path) as tmp:
            table.to_csv(tmp, sep="\t", index=False)
