"""Patient-level cross-validation folds: every sample and slide of a patient falls in the same part.

Folds are drawn over patients (``groups``; by default a TCGA barcode's first 12 characters,
:func:`patient_of`) and then expanded to all of each patient's samples, so that two samples of one
patient (``TCGA-AB-1234-01A`` and ``-11A``) are never in training and test at once. Repeated
cross-validation (``n_repeats``) draws the fold assignment again with seed + r for repeat r; fold
index k = r * n_folds + i, and such folds carry ``repeat`` and ``fold_in_repeat`` keys.
"""
from __future__ import annotations

import json
import math
import os
import re

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from preprocessing.io import write_text_atomic

TCGA_PATIENT = re.compile(r"^TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}")


def patient_of(case_id: str) -> str:
    """The patient of a sample id: ``TCGA-XX-XXXX`` for a TCGA barcode, else the id itself."""
    match = TCGA_PATIENT.match(case_id)
    return match.group(0) if match else case_id


def patient_groups(case_ids: list[str], clinical: str | None = None, column: str | None = None) -> list[str]:
    """The patient of each case: the clinical table's ``column``, else :func:`healnet.splits.patient_of`."""
    if column is None:
        return [patient_of(c) for c in case_ids]
    from preprocessing.tabular import read_table

    table = read_table(clinical)
    if column not in table.columns:
        raise ValueError(f"{clinical}: no column {column!r} (--patient-column); "
                         f"columns: {', '.join(table.columns[:20])}")
    patients = table[column].reindex(case_ids)
    empty = patients.isna() | patients.astype(str).str.strip().eq("")
    if empty.any():
        raise ValueError(f"{clinical}: no patient in column {column!r} for {int(empty.sum())} case(s): "
                         f"{', '.join(patients.index[empty][:10])}")
    return patients.astype(str).str.strip().tolist()


def make_splits(case_ids: list[str], events: np.ndarray, *, n_folds: int = 5, val_fraction: float = 0.2,
                seed: int = 0, strata: list[str] | None = None, groups: list[str] | None = None,
                n_repeats: int = 1) -> list[dict]:
    """``n_repeats`` × ``n_folds`` folds of ``{"train", "val", "test"}`` case ids, stratified by
    event (and ``strata``), never splitting a group (patient) of ``groups``.

    The validation cases (for early stopping) are carved out of each fold's training part,
    stratified the same way. Deterministic for a fixed ``seed``; with one repeat and no groups of
    more than one case, the folds are exactly those of the ungrouped call.
    """
    case_ids = np.asarray(case_ids)
    if len(set(case_ids)) != len(case_ids):
        raise ValueError("make_splits: case ids must be unique (split patients, not slides)")
    if n_repeats < 1:
        raise ValueError(f"make_splits: n_repeats must be >= 1, got {n_repeats}")
    if groups is not None:
        return _grouped_splits(case_ids, np.asarray(events), groups, n_folds=n_folds, val_fraction=val_fraction,
                               seed=seed, strata=strata, n_repeats=n_repeats)
    if n_repeats == 1:
        return _folds(case_ids, events, n_folds, val_fraction, seed, strata)
    return [{**fold, "repeat": r, "fold_in_repeat": i} for r in range(n_repeats)
            for i, fold in enumerate(_folds(case_ids, events, n_folds, val_fraction, seed + r, strata))]


def _grouped_splits(case_ids: np.ndarray, events: np.ndarray, groups: list[str], *, strata: list[str] | None,
                    **kwargs) -> list[dict]:
    """Folds over the groups (event: any of its cases had one; stratum: its first case's),
    expanded to every case of each group."""
    groups = np.asarray(groups, dtype=str)
    if len(groups) != len(case_ids):
        raise ValueError(f"make_splits: {len(groups)} groups for {len(case_ids)} cases")
    members: dict[str, list[str]] = {}
    for case, group in zip(case_ids.tolist(), groups.tolist()):
        members.setdefault(group, []).append(case)
    order = list(members)  # first appearance, so that singleton groups reproduce the ungrouped folds
    position = {g: i for i, g in enumerate(order)}
    group_events = np.zeros(len(order), dtype=int)
    np.maximum.at(group_events, [position[g] for g in groups.tolist()], events.astype(int))
    if strata is not None:
        first_stratum = dict(zip(reversed(groups.tolist()), reversed([str(s) for s in strata])))
        strata = [first_stratum[g] for g in order]
    folds = make_splits(order, group_events, strata=strata, **kwargs)
    return [{k: sorted(c for g in v for c in members[g]) if k in ("train", "val", "test") else v
             for k, v in fold.items()} for fold in folds]


def _folds(case_ids: np.ndarray, events: np.ndarray, n_folds: int, val_fraction: float, seed: int,
           strata: list[str] | None) -> list[dict[str, list[str]]]:
    """One stratified ``n_folds``-fold assignment with inner validation splits (see make_splits)."""
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


def split_meta(*, seed: int, n_folds: int, n_cases: int, n_repeats: int = 1, n_patients: int | None = None) -> dict:
    """The header of ``splits.json``; the repeat and patient counts only where they say something."""
    meta = {"seed": seed, "n_folds": n_folds, "n_cases": n_cases}
    if n_repeats > 1:
        meta["n_repeats"] = n_repeats
    if n_patients is not None and n_patients != n_cases:
        meta["n_patients"] = n_patients
    return meta


def splits_for_cohort(clinical: str | os.PathLike, out: str | os.PathLike, *, n_folds: int = 5,
                      val_fraction: float = 0.2, seed: int = 0, stratify_by_site: bool = False,
                      n_repeats: int = 1) -> list[dict]:
    """Folds over the cases whose survival table status is ``ok``, grouped by :func:`patient_of`,
    written to ``out`` (JSON)."""
    import pandas as pd

    cases = pd.read_parquet(clinical).query("status == 'ok'")
    ids = cases["case_id"].tolist()
    groups = [patient_of(c) for c in ids]
    folds = make_splits(ids, cases["event"].to_numpy(), n_folds=n_folds, val_fraction=val_fraction, seed=seed,
                        strata=cases["site"].tolist() if stratify_by_site else None, groups=groups,
                        n_repeats=n_repeats)
    write_splits(out, folds, **split_meta(seed=seed, n_folds=n_folds, n_cases=len(cases), n_repeats=n_repeats,
                                          n_patients=len(set(groups))))
    return folds
