"""Patient-level cross-validation folds: every slide of a case falls in the same fold."""
from __future__ import annotations

import json
import math
import os

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from preprocessing.io import write_text_atomic


def make_splits(case_ids: list[str], events: np.ndarray, *, n_folds: int = 5, val_fraction: float = 0.2,
                seed: int = 0, strata: list[str] | None = None) -> list[dict[str, list[str]]]:
    """``n_folds`` folds of ``{"train", "val", "test"}`` case ids, stratified by event (and ``strata``).

    The validation cases (for early stopping) are carved out of each fold's training part,
    stratified the same way. Deterministic for a fixed ``seed``.
    """
    case_ids = np.asarray(case_ids)
    if len(set(case_ids)) != len(case_ids):
        raise ValueError("make_splits: case ids must be unique (split patients, not slides)")
    labels = event_labels = np.asarray(events).astype(int).astype(str)
    if strata is not None:
        combined = np.char.add(np.char.add(labels, "|"), np.asarray(strata, dtype=str))
        counts = {v: (combined == v).sum() for v in set(combined)}
        labels = np.where([counts[v] >= n_folds for v in combined], combined, labels)  # rare strata fall back
    folds = []
    outer = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (train_idx, test_idx) in enumerate(outer.split(case_ids, labels)):
        # stratify validation by the same labels, else (a class of one case) by event alone, else
        # (too few cases to put one of each class on both sides) not at all
        n_val = math.ceil(val_fraction * len(train_idx))

        def stratifiable(y: np.ndarray) -> bool:
            per_class = np.unique(y, return_counts=True)[1]
            return per_class.min() >= 2 and len(per_class) <= min(n_val, len(y) - n_val)

        stratify = next((y[train_idx] for y in (labels, event_labels) if stratifiable(y[train_idx])), None)
        fit_idx, val_idx = train_test_split(train_idx, test_size=val_fraction, random_state=seed + k, stratify=stratify)
        folds.append({"train": sorted(case_ids[fit_idx].tolist()), "val": sorted(case_ids[val_idx].tolist()),
                      "test": sorted(case_ids[test_idx].tolist())})
    return folds


def write_splits(path: str | os.PathLike, folds: list[dict], **meta) -> None:
    write_text_atomic(path, json.dumps({**meta, "folds": folds}, indent=1))


def read_splits(path: str | os.PathLike) -> list[dict[str, list[str]]]:
    with open(path) as f:
        return json.load(f)["folds"]


def splits_for_cohort(clinical: str | os.PathLike, out: str | os.PathLike, *, n_folds: int = 5,
                      val_fraction: float = 0.2, seed: int = 0, stratify_by_site: bool = False) -> list[dict]:
    """Folds over the cases whose survival table status is ``ok``, written to ``out`` (JSON)."""
    import pandas as pd

    cases = pd.read_parquet(clinical).query("status == 'ok'")
    folds = make_splits(cases["case_id"].tolist(), cases["event"].to_numpy(), n_folds=n_folds,
                        val_fraction=val_fraction, seed=seed,
                        strata=cases["site"].tolist() if stratify_by_site else None)
    write_splits(out, folds, seed=seed, n_folds=n_folds, n_cases=len(cases))
    return folds
