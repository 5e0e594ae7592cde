"""healnet.splits: patient-level, stratified, reproducible cross-validation folds."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from healnet.splits import make_splits, patient_of, read_splits, splits_for_cohort, write_splits


def _cohort(n=103, seed=0, p_event=0.37):
    rng = np.random.default_rng(seed)
    ids = [f"TCGA-{rng.choice(['A1', 'BH', 'E2'])}-{i:04d}" for i in range(n)]
    return ids, (rng.random(n) < p_event).astype(int)


@pytest.mark.parametrize("n_folds", [3, 5])
def test_folds_are_patient_level_and_cover_every_case(n_folds):
    ids, events = _cohort()
    folds = make_splits(ids, events, n_folds=n_folds, seed=1)
    assert len(folds) == n_folds
    tests = [c for f in folds for c in f["test"]]
    assert sorted(tests) == sorted(ids)  # every case is tested exactly once
    for f in folds:
        train, val, test = set(f["train"]), set(f["val"]), set(f["test"])
        assert not (train & val) and not (train & test) and not (val & test)
        assert train | val | test == set(ids)
        assert len(f["train"]) == len(train)  # no duplicates inside a subset
        assert len(val) == math.ceil(0.2 * (len(train) + len(val)))
        assert len(test) in (len(ids) // n_folds, len(ids) // n_folds + 1)


def test_folds_are_stratified_by_event():
    ids, events = _cohort(n=101, p_event=0.3)
    event_of = dict(zip(ids, events))
    n_folds = 5
    folds = make_splits(ids, events, n_folds=n_folds, seed=3)
    for f in folds:
        test_events = sum(event_of[c] for c in f["test"])
        assert abs(test_events - events.sum() / n_folds) <= 1
        rest = f["train"] + f["val"]
        val_events = sum(event_of[c] for c in f["val"])
        expected_val = sum(event_of[c] for c in rest) * len(f["val"]) / len(rest)
        assert abs(val_events - expected_val) <= 1


@pytest.mark.filterwarnings("ignore:The least populated class")
def test_site_strata_are_balanced_and_rare_sites_fall_back():
    ids, events = _cohort(n=120, seed=4)
    sites = [c.split("-")[1] for c in ids]
    ids, events, sites = ids + ["TCGA-ZZ-9999"], np.append(events, 1), sites + ["ZZ"]  # a site of one case
    folds = make_splits(ids, events, n_folds=4, seed=0, strata=sites)
    assert sorted(c for f in folds for c in f["test"]) == sorted(ids)
    key = {c: (e, s) for c, e, s in zip(ids, events, sites)}
    for stratum in {(e, s) for e, s in zip(events, sites) if s != "ZZ"}:
        total = sum(k == stratum for k in key.values())
        for f in folds:
            assert abs(sum(key[c] == stratum for c in f["test"]) - total / 4) <= 1
    # the one-case site must not switch off the stratification of the validation cases by event
    event_of = dict(zip(ids, events))
    for f in folds:
        rest = f["train"] + f["val"]
        expected_val = sum(event_of[c] for c in rest) * len(f["val"]) / len(rest)
        assert abs(sum(event_of[c] for c in f["val"]) - expected_val) <= 1


def test_deterministic_by_seed():
    ids, events = _cohort()
    assert make_splits(ids, events, seed=7) == make_splits(ids, events, seed=7)
    assert make_splits(ids, events, seed=7) != make_splits(ids, events, seed=8)
    # the input order of the cases does not matter... only their ids are reported, sorted
    for f in make_splits(ids, events, seed=7):
        assert all(f[k] == sorted(f[k]) for k in ("train", "val", "test"))


def test_duplicate_cases_are_refused():
    ids, events = _cohort(n=20)
    with pytest.raises(ValueError, match="unique"):
        make_splits(ids + ids[:1], np.append(events, events[0]))


def test_splits_for_cohort_uses_valid_cases_only(tmp_path):
    ids, events = _cohort(n=40)
    status = ["ok"] * 35 + ["excluded"] * 5
    clinical = tmp_path / "survival.parquet"
    pd.DataFrame({"case_id": ids, "event": events, "status": status,
                  "site": [c.split("-")[1] for c in ids]}).to_parquet(clinical)
    out = tmp_path / "splits.json"
    folds = splits_for_cohort(clinical, out, n_folds=5, seed=2)
    assert sorted(c for f in folds for c in f["test"]) == sorted(ids[:35])
    assert read_splits(out) == folds
    meta = json.loads(out.read_text())
    assert meta["n_cases"] == 35 and meta["seed"] == 2 and meta["n_folds"] == 5
    assert folds == make_splits(ids[:35], events[:35], n_folds=5, seed=2)


def test_write_read_round_trip(tmp_path):
    folds = [{"train": ["a"], "val": ["b"], "test": ["c"]}]
    write_splits(tmp_path / "s.json", folds, seed=1)
    assert read_splits(tmp_path / "s.json") == folds


def test_tiny_cohort_still_gets_folds():
    """Too few training cases to stratify the validation split: it is drawn unstratified."""
    ids = [f"TCGA-AA-{i:04d}" for i in range(8)]
    events = np.array([1, 0, 1, 0, 1, 0, 0, 1])
    folds = make_splits(ids, events, n_folds=2, val_fraction=0.25, seed=0)
    assert sorted(c for f in folds for c in f["test"]) == ids
    for f in folds:
        assert len(f["val"]) == 1 and len(f["train"]) == 3
        assert sum(events[ids.index(c)] for c in f["test"]) == 2  # the outer folds are still stratified


def test_no_patient_in_two_folds_even_with_several_slides_each(tmp_path):
    """(d) Slides of one patient never sit in two folds, nor in two parts of one fold: folds are
    drawn over cases, and a survival table with one row per slide (a case twice) is refused."""
    from healnet.bags import case_of_slide

    rng = np.random.default_rng(2)
    cases = [f"TCGA-{s}-{i:04d}" for i, s in enumerate(rng.choice(["A1", "BH", "E2"], 60))]
    slides = [f"{c}-01Z-00-DX{k}.{rng.integers(1e9)}" for c in cases for k in range(1, int(rng.integers(1, 4)) + 1)]
    events = (rng.random(60) < 0.4).astype(int)
    folds = make_splits(cases, events, n_folds=5, seed=0)
    for slide in slides:
        case = case_of_slide(slide)
        places = [(k, part) for k, f in enumerate(folds) for part in ("train", "val", "test") if case in f[part]]
        assert sorted(k for k, _ in places) == list(range(5))  # in exactly one part of every fold
        assert sum(part == "test" for _, part in places) == 1  # and tested in exactly one fold
    clinical = tmp_path / "survival.parquet"
    per_slide = pd.DataFrame({"case_id": [case_of_slide(s) for s in slides], "event": 1, "status": "ok"})
    per_slide.to_parquet(clinical)
    assert per_slide["case_id"].duplicated().any()
    with pytest.raises(ValueError, match="unique"):
        splits_for_cohort(clinical, tmp_path / "splits.json")


def _two_samples_per_patient(n_patients=40, seed=5):
    """Sample barcodes, two per patient (tumour 01A and normal 11A), events per patient."""
    rng = np.random.default_rng(seed)
    patients = [f"TCGA-{rng.choice(['A1', 'BH'])}-{i:04d}" for i in range(n_patients)]
    samples = [f"{p}-{s}" for p in patients for s in ("01A", "11A")]
    events = np.repeat((rng.random(n_patients) < 0.4).astype(int), 2)
    return samples, events


def test_patient_of():
    assert patient_of("TCGA-AB-1234-01A-11R-A12B-07") == "TCGA-AB-1234"
    assert patient_of("TCGA-AB-1234") == "TCGA-AB-1234"
    assert patient_of("tcga-ab-1234-01a") == "tcga-ab-1234-01a"  # not a TCGA barcode: the id itself
    assert patient_of("P-007") == "P-007"


@pytest.mark.parametrize("n_repeats", [1, 3])
def test_grouped_folds_never_split_a_patient(n_repeats):
    samples, events = _two_samples_per_patient()
    groups = [patient_of(s) for s in samples]
    folds = make_splits(samples, events, n_folds=4, seed=0, groups=groups, n_repeats=n_repeats)
    assert len(folds) == 4 * n_repeats
    for fold in folds:
        parts = {p: {patient_of(s) for s in fold[p]} for p in ("train", "val", "test")}
        assert not (parts["train"] & parts["val"]) and not (parts["train"] & parts["test"])
        assert not (parts["val"] & parts["test"])
        assert sorted(fold["train"] + fold["val"] + fold["test"]) == sorted(samples)
    for r in range(n_repeats):  # each repeat tests every sample exactly once
        tested = [s for f in folds[r * 4:(r + 1) * 4] for s in f["test"]]
        assert sorted(tested) == sorted(samples)


def test_singleton_groups_give_the_ungrouped_folds():
    ids, events = _cohort()
    assert make_splits(ids, events, seed=4, groups=ids) == make_splits(ids, events, seed=4)
    sites = [c.split("-")[1] for c in ids]
    assert (make_splits(ids, events, seed=4, strata=sites, groups=list(ids))
            == make_splits(ids, events, seed=4, strata=sites))


def test_repeats_use_seed_plus_r_and_are_labelled():
    ids, events = _cohort()
    one = make_splits(ids, events, n_folds=3, seed=7)
    assert all(set(f) == {"train", "val", "test"} for f in one)  # one repeat: exactly as before
    assert make_splits(ids, events, n_folds=3, seed=7, n_repeats=1) == one
    folds = make_splits(ids, events, n_folds=3, seed=7, n_repeats=3)
    assert len(folds) == 9
    for k, fold in enumerate(folds):
        r, i = divmod(k, 3)
        assert (fold["repeat"], fold["fold_in_repeat"]) == (r, i)
        expected = make_splits(ids, events, n_folds=3, seed=7 + r)[i]
        assert {p: fold[p] for p in ("train", "val", "test")} == expected
    assert folds[0]["test"] != folds[3]["test"]
    with pytest.raises(ValueError, match="n_repeats"):
        make_splits(ids, events, n_repeats=0)


def test_splits_for_cohort_groups_samples_and_repeats(tmp_path):
    samples, events = _two_samples_per_patient(n_patients=30)
    clinical = tmp_path / "survival.parquet"
    pd.DataFrame({"case_id": samples, "event": events, "status": "ok", "site": "A1"}).to_parquet(clinical)
    out = tmp_path / "splits.json"
    folds = splits_for_cohort(clinical, out, n_folds=3, seed=1, n_repeats=2)
    meta = json.loads(out.read_text())
    assert (meta["n_folds"], meta["n_repeats"], meta["n_cases"], meta["n_patients"]) == (3, 2, 60, 30)
    assert len(folds) == 6
    for fold in folds:
        assert not {patient_of(s) for s in fold["test"]} & {patient_of(s) for s in fold["train"] + fold["val"]}
