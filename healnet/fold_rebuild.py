"""Rebuild a trained fold from its files: the model from ``model.pt`` (state dict, keyword
arguments, channels, fitted transforms) and its test cases from the cohort's inputs.

The test cases and their patches are those of ``predictions.tsv`` and ``attention.npz`` (so a
subsampled bag is the subsample the model saw), and the rebuilt risks must match
``predictions.tsv``: a fold whose inputs changed since training is an error, not a figure.  Apart
from :mod:`healnet.fold_model` because reading a fold's files (and matching its recorded patches
to the cohort's bags) is one job, and running the rebuilt model on a case another.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .attention_io import Attention, read_attention
from .fold_model import CaseInput, FoldModel, case_risks

log = logging.getLogger(__name__)


def _fold_index(fold_dir: Path) -> int:
    metrics = fold_dir / "metrics.json"
    if metrics.exists():
        return int(json.loads(metrics.read_text())["fold"])
    found = re.search(r"fold(\d+)$", fold_dir.name)
    if not found:
        raise ValueError(f"{fold_dir}: no metrics.json and no fold<k> name")
    return int(found.group(1))


def _match_rows(positions: np.ndarray, slide_of_row: np.ndarray | None, coords: np.ndarray,
                slides: np.ndarray | None) -> np.ndarray:
    """Rows of a bag (in order) whose rounded positions (and slides, when known) are ``coords``
    (and ``slides``), taken in bag order: the patches ``attention.npz`` lists for a case."""
    index: dict[tuple, list[int]] = {}
    keys = np.round(positions).astype(np.int64).tolist()
    for i, k in enumerate(keys):
        index.setdefault((slide_of_row[i] if slide_of_row is not None and slides is not None else "", *k), []).append(i)
    rows, last = [], -1
    for j, c in enumerate(np.asarray(coords, np.int64).tolist()):
        key = (str(slides[j]) if slides is not None and slide_of_row is not None else "", *c)
        nxt = next((i for i in index.get(key, []) if i > last), None)
        if nxt is None:
            raise ValueError(f"patch {key} of attention.npz is not in the case's bag (in order): "
                             "the cohort's features changed since training")
        rows.append(nxt)
        last = nxt
    return np.asarray(rows, np.int64)


def _test_cases(cohort, case_ids: list[str], cfg, modalities: tuple[str, ...], transforms: dict,
                attention: Attention, seed: int) -> list[CaseInput]:
    """The test cases' inputs, built like ``healnet.folds.prepare_fold`` builds them but with the
    checkpoint's fitted transforms, and each WSI bag restricted to the patches attention.npz
    lists (the fold's subsample); a subsampled bag without that record is subsampled anew (seeded)."""
    from .bags import BagView, LazyBag

    rng = np.random.default_rng(seed)
    out = []
    for c in case_ids:
        xs, pos, coords, slides, resampled = [], None, None, None, False
        for m in modalities:
            if m == "wsi":
                bag = cohort.bags.get(c)
                if bag is None or not len(bag):
                    xs.append(None)
                    continue
                raw = cohort.positions.get(c)
                slide_of_row = bag.slide_ids() if isinstance(bag, LazyBag) else None
                rows = None
                if c in attention.coords and raw is not None:
                    rows = _match_rows(raw, slide_of_row, attention.coords[c], attention.slides.get(c))
                    if len(rows) == len(bag):
                        rows = None
                elif cfg.max_patches and len(bag) > cfg.max_patches:
                    rows = np.sort(rng.choice(len(bag), cfg.max_patches, replace=False))
                    resampled = True
                mean, std = transforms.get("wsi", (None, None))
                xs.append(BagView(bag, rows, mean, std).load())
                if raw is not None and len(raw):
                    span = np.maximum(raw.max(0) - raw.min(0), 1.0)
                    scaled = (raw - raw.min(0)) / span * 2 - 1
                    pos = scaled if rows is None else scaled[rows]
                    coords = np.round(raw if rows is None else raw[rows]).astype(np.int64)
                if slide_of_row is not None:
                    slides = slide_of_row if rows is None else slide_of_row[rows]
                elif c in attention.slides:
                    slides = attention.slides[c]
            elif m in transforms and m in cohort.omics and c in cohort.omics[m].index:
                x = transforms[m].transform(cohort.omics[m].loc[[c]])[0].astype(np.float32)
                xs.append(x[None, :] if cfg.omic_tokens == "single" else x[:, None])
            else:
                xs.append(None)
        out.append(CaseInput(c, xs, pos, coords, slides, resampled))
    return out


def load_fold(fold_dir: str | os.PathLike, cohort, *, max_cases: int | None = None, device: str = "cpu",
              tolerance: float | None = None) -> FoldModel:
    """Rebuild a trained fold (``model.pt``, ``predictions.tsv``, ``attention.npz`` in ``fold_dir``)
    on ``cohort`` (:class:`healnet.data.Cohort`, e.g. :func:`healnet.data.open_cohort`).

    The first ``max_cases`` test cases (predictions.tsv order; None: all) are kept.  Their rebuilt
    risks must match predictions.tsv within ``tolerance`` (default 1e-3, or 0.05 for a model
    trained on a GPU in bf16); else the cohort's inputs are not those the fold was trained on and
    a ``ValueError`` says so.  Not checked for a model trained with ``train_missing`` (its test
    predictions had modalities removed), nor for a case whose bag had to be subsampled anew (a
    model that records no patch list, e.g. a baseline, on bags over ``max_patches``)."""
    from .train_config import TrainConfig
    from .zoo import build_model

    fold_dir = Path(fold_dir)
    saved = torch.load(fold_dir / "model.pt", map_location="cpu", weights_only=False)
    if "state_dict" not in saved:
        raise ValueError(f"{fold_dir}: {saved.get('architecture')} is not a torch model: no attention, no gradients")
    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in saved["config"].items() if k in known})
    modalities = tuple(saved["modalities"])
    cfg = replace(cfg, modalities=modalities)
    axes = [2 if (cfg.fourier_wsi and m == "wsi") else 0 for m in modalities]
    model = build_model(saved["architecture"], input_channels=saved["input_channels"], modalities=list(modalities),
                        num_classes=cfg.n_bins, input_axes=axes, fourier_encode=cfg.fourier_wsi,
                        **saved["model_kwargs"])
    model.load_state_dict(saved["state_dict"])
    model.to(device).eval()
    predictions = pd.read_csv(fold_dir / "predictions.tsv", sep="\t")
    predictions["case_id"] = predictions["case_id"].astype(str)
    ids = predictions["case_id"].tolist()[: max_cases if max_cases is not None else None]
    attention = Attention(case_ids=[])  # the patches each case's bag kept (none recorded: subsample anew)
    if (fold_dir / "attention.npz").exists():
        attention = read_attention(fold_dir / "attention.npz", require_cases=False)
    transforms = saved["transforms"]
    fold = _fold_index(fold_dir)
    cases = _test_cases(cohort, ids, cfg, modalities, transforms, attention, seed=cfg.seed + fold)
    features = {m: list(transforms[m].columns) for m in modalities if m != "wsi" and m in transforms}
    fm = FoldModel(fold, saved["architecture"], modalities, cfg, model, features, cases,
                   dict(zip(predictions["case_id"], predictions["risk"].astype(float))),
                   channels=list(saved["input_channels"]))
    same = [c for c in cases if not c.resampled]  # the others do not see the fold's patches: not comparable
    if len(same) < len(cases):
        fm.notes.append(f"{len(cases) - len(same)} bags subsampled anew (no patch list in attention.npz)")
    if same:
        rebuilt = np.array([float(case_risks(fm, c, [c.x])[0]) for c in same])
        fm.rebuild_error = float(np.max(np.abs(rebuilt - np.array([fm.risks[c.case_id] for c in same]))))
        on_gpu = False
        if (fold_dir / "metrics.json").exists():
            on_gpu = json.loads((fold_dir / "metrics.json").read_text()).get("device", "cpu") != "cpu"
        tol = tolerance if tolerance is not None else (0.05 if on_gpu else 1e-3)
        if cfg.train_missing:
            fm.notes.append("trained with train_missing: rebuilt risks not compared with predictions.tsv")
        elif fm.rebuild_error > tol:
            raise ValueError(f"{fold_dir}: the rebuilt model's risks differ from predictions.tsv by up to "
                             f"{fm.rebuild_error:.3g} (> {tol:g}): the cohort's inputs are not those the fold was "
                             "trained on")
    log.info("fold %d (%s): %d test cases rebuilt, max |risk - predictions.tsv| = %.2g%s", fold,
             fm.architecture, len(cases), fm.rebuild_error, "".join(f"; {n}" for n in fm.notes))
    return fm
