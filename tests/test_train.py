"""healnet.data and healnet.train: per-fold transforms fitted on training cases only, batches with
missing modalities, and a training run that finds a planted signal reproducibly."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sksurv.metrics import concordance_index_censored

from healnet.data import Cohort, OmicTransform, case_of_slide, load_bags
from healnet.model import HEALNet
from healnet.survival import fit_bins
from healnet.train import TrainConfig, collate, evaluate_loss, prepare_fold, train_fold

N_CASES, DIM, N_GENES, N_SIGNAL_GENES = 120, 16, 40, 8


def planted_cohort(n: int = N_CASES, seed: int = 0) -> tuple[Cohort, np.ndarray]:
    """Cases whose risk is a (shifts 4 of the patch channels) + b (scales 8 genes); survival
    times follow exp(-risk) with a little noise, a quarter of the cases censored early."""
    rng = np.random.default_rng(seed)
    ids = [f"TCGA-AA-{i:04d}" for i in range(n)]
    a, b = rng.standard_normal(n), rng.standard_normal(n)
    risk = a + b
    t = 1000 * np.exp(-risk + 0.25 * rng.standard_normal(n))
    event = (rng.random(n) < 0.75).astype(int)
    time = np.maximum(1, np.round(np.where(event == 1, t, t * rng.uniform(0.5, 1, n))))
    bags, positions = {}, {}
    for i, c in enumerate(ids):
        k = int(rng.integers(8, 24))
        x = rng.standard_normal((k, DIM)).astype(np.float32)
        x[:, :4] += a[i]
        bags[c], positions[c] = x, rng.uniform(0, 5000, (k, 2)).astype(np.float32)
    genes = np.exp(rng.normal(3, 0.3, (n, N_GENES)))
    genes[:, :N_SIGNAL_GENES] *= np.exp(b)[:, None]
    omics = pd.DataFrame(genes, index=ids, columns=[f"G{j}" for j in range(N_GENES)])
    survival = pd.DataFrame({"time": time, "event": event}, index=pd.Index(ids, name="case_id"))
    return Cohort(survival, bags, positions, {"rna": omics}), risk


def _split(ids: list[str]) -> dict[str, list[str]]:
    """60 training, 24 validation and 36 test cases: with fewer, early stopping on a handful of
    validation cases often keeps an untrained model (c-index over 12 seeds: min 0.78, mean 0.83)."""
    return {"train": ids[:60], "val": ids[60:84], "test": ids[84:]}


NO_WSI, NO_RNA = ["TCGA-AA-0000", "TCGA-AA-0084"], ["TCGA-AA-0001", "TCGA-AA-0085"]  # one train, one test case each


def _with_missing(cohort: Cohort) -> Cohort:
    for c in NO_WSI:
        del cohort.bags[c], cohort.positions[c]
    cohort.omics["rna"] = cohort.omics["rna"].drop(index=NO_RNA)
    return cohort


CFG = TrainConfig(epochs=30, lr=2e-3, omic_top_k=16, seed=0)


# ---------------------------------------------------------------------------------------------
# OmicTransform


def _tables(seed=0):
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.normal(0, 1.5, 30))  # genes of very different variance
    train = pd.DataFrame(rng.lognormal(2, 1, (25, 30)) * scale, columns=[f"g{j}" for j in range(30)])
    test = pd.DataFrame(rng.lognormal(2, 1, (6, 30)) * scale, columns=train.columns)
    return train, test


def test_omic_transform_uses_training_statistics_only():
    train, test = _tables()
    tf = OmicTransform(top_k=10).fit(train)
    logged = np.log2(train.to_numpy() + 1)
    variance = logged.var(axis=0, ddof=1)
    top = np.argsort(-variance, kind="stable")[:10]
    assert tf.columns == [train.columns[j] for j in top]
    mean, std = logged[:, top].mean(0), logged[:, top].std(0, ddof=1)
    np.testing.assert_allclose(tf.mean, mean)
    np.testing.assert_allclose(tf.std, std)
    expected = (np.log2(test.to_numpy()[:, top] + 1) - mean) / std
    np.testing.assert_allclose(tf.transform(test), expected, rtol=1e-5, atol=1e-5)
    assert tf.transform(test).dtype == np.float32
    # training cases come out standardised
    out = tf.transform(train)
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(0, ddof=1), 1, atol=1e-5)


def test_omic_transform_without_log_and_with_odd_values():
    train, test = _tables(1)
    train["const"] = 5.0
    test["const"] = 5.0
    tf = OmicTransform(top_k=40, log_transform=False).fit(train)
    assert tf.columns[-1] == "const"  # zero variance ranks last
    out = tf.transform(test)
    assert np.isfinite(out).all()
    j = tf.columns.index("g3")
    np.testing.assert_allclose(out[:, j], (test["g3"] - train["g3"].mean()) / train["g3"].std(), rtol=1e-5)
    # negative values (never valid expression) are clipped to 0 before the log
    logged = OmicTransform(top_k=5).fit(train)
    negative = test.copy()
    negative.iloc[0] = -3.0
    zero = test.copy()
    zero.iloc[0] = 0.0
    np.testing.assert_array_equal(logged.transform(negative), logged.transform(zero))


# ---------------------------------------------------------------------------------------------
# prepare_fold: nothing is learned from validation or test cases


def test_fold_transforms_never_see_test_cases():
    cohort, _ = planted_cohort(seed=1)
    split = _split(cohort.case_ids)
    subsets, edges, transforms = prepare_fold(cohort, split, CFG)

    # fitted on exactly the training cases (numpy, independently)
    train = split["train"]
    expected = OmicTransform(top_k=CFG.omic_top_k).fit(cohort.omics["rna"].loc[train])
    assert transforms["rna"].columns == expected.columns
    np.testing.assert_array_equal(transforms["rna"].mean, expected.mean)
    patches = np.concatenate([cohort.bags[c] for c in train])
    np.testing.assert_allclose(transforms["wsi"][0], patches.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(transforms["wsi"][1], patches.std(0), rtol=1e-5, atol=1e-6)
    surv = cohort.survival.loc[train]
    np.testing.assert_array_equal(edges, fit_bins(surv["time"].to_numpy(), surv["event"].to_numpy(), CFG.n_bins))

    # test inputs are transformed with the training statistics
    i = 3
    c = split["test"][i]
    rna = subsets["test"].inputs[CFG.modalities.index("rna")][i]
    logged = np.log2(cohort.omics["rna"].loc[c, expected.columns].to_numpy(float) + 1)
    np.testing.assert_allclose(rna[0], (logged - expected.mean) / expected.std, rtol=1e-5, atol=1e-5)
    wsi = subsets["test"].inputs[CFG.modalities.index("wsi")][i]
    np.testing.assert_allclose(wsi, (cohort.bags[c] - patches.mean(0)) / patches.std(0), rtol=1e-4, atol=1e-4)

    # extreme values in validation and test cases change nothing that was fitted
    poisoned, _ = planted_cohort(seed=1)
    for c in split["test"][:3] + split["val"][:2]:
        poisoned.omics["rna"].loc[c] = 1e12
        poisoned.bags[c] = poisoned.bags[c] * 1e6
        poisoned.survival.loc[c, "time"] = 1e7
    subsets2, edges2, transforms2 = prepare_fold(poisoned, split, CFG)
    assert transforms2["rna"].columns == transforms["rna"].columns
    np.testing.assert_array_equal(transforms2["rna"].mean, transforms["rna"].mean)
    np.testing.assert_array_equal(transforms2["rna"].std, transforms["rna"].std)
    np.testing.assert_array_equal(transforms2["wsi"][0], transforms["wsi"][0])
    np.testing.assert_array_equal(edges2, edges)
    for a, b in zip(subsets2["train"].inputs, subsets["train"].inputs):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)

    # ... whereas the same change in a training case does (the check above can fail)
    control, _ = planted_cohort(seed=1)
    control.omics["rna"].loc[train[0]] = 1e12
    control.bags[train[0]] = control.bags[train[0]] * 1e6
    _, _, transforms3 = prepare_fold(control, split, CFG)
    assert not np.allclose(transforms3["rna"].mean, transforms["rna"].mean)
    assert not np.allclose(transforms3["wsi"][0], transforms["wsi"][0])


def test_missing_modalities_are_absent_not_zero():
    cohort = _with_missing(planted_cohort()[0])
    subsets, _, _ = prepare_fold(cohort, _split(cohort.case_ids), CFG)
    test = subsets["test"]
    wsi, rna = CFG.modalities.index("wsi"), CFG.modalities.index("rna")
    i_no_wsi, i_no_rna = test.case_ids.index(NO_WSI[1]), test.case_ids.index(NO_RNA[1])
    assert test.inputs[wsi][i_no_wsi] is None and test.inputs[rna][i_no_rna] is None
    index = np.array([i_no_wsi, i_no_rna, 5])
    channels = [DIM, CFG.omic_top_k]
    tensors, masks, present, _ = collate(test, index, channels)
    assert present.tolist() == [[False, True], [True, False], [True, True]]
    longest = max(len(test.inputs[wsi][i]) for i in index[1:])
    assert tensors[wsi].shape == (3, longest, DIM) and tensors[rna].shape == (3, 1, CFG.omic_top_k)
    assert not masks[wsi][0].any() and not tensors[wsi][0].any()  # absent: masked zeros
    n1 = len(test.inputs[wsi][i_no_rna])
    assert masks[wsi][1].tolist() == [True] * n1 + [False] * (longest - n1)  # padding is masked
    np.testing.assert_array_equal(tensors[wsi][1, :n1].numpy(), test.inputs[wsi][i_no_rna])


def test_subsampled_bags_keep_their_own_positions():
    """With more patches than max_patches, the positions follow the patches that were kept."""
    cohort, _ = planted_cohort(n=30)
    for c, bag in cohort.bags.items():
        bag[:, 5] = cohort.positions[c][:, 0]  # channel 5 records each patch's x
    cfg = TrainConfig(max_patches=6, fourier_wsi=True, omic_top_k=8)
    ids = cohort.case_ids
    subsets, _, _ = prepare_fold(cohort, {"train": ids[:20], "val": ids[20:25], "test": ids[25:]}, cfg)
    for sub in subsets.values():
        for bag, pos in zip(sub.inputs[0], sub.positions):
            assert len(bag) == len(pos) == 6
            # both are increasing affine maps of the same x: the same order and a perfect correlation
            assert np.corrcoef(bag[:, 5], pos[:, 0])[0, 1] > 0.9999


def test_fourier_positions_with_wsi_as_second_modality():
    cohort, _ = planted_cohort(n=30)
    ids = cohort.case_ids
    split = {"train": ids[:20], "val": ids[20:25], "test": ids[25:]}
    for modalities in (("wsi", "rna"), ("rna", "wsi")):
        cfg = TrainConfig(modalities=modalities, fourier_wsi=True, epochs=1, omic_top_k=8)
        metrics = train_fold(cohort, split, cfg)
        assert metrics["n_test"] == 5 and metrics["epochs_run"] == 1


def test_a_modality_without_data_is_an_error():
    cohort, _ = planted_cohort(n=30)
    cohort.omics["rna"] = cohort.omics["rna"].iloc[:0]
    ids = cohort.case_ids
    with pytest.raises(ValueError, match="rna"):
        train_fold(cohort, {"train": ids[:20], "val": ids[20:25], "test": ids[25:]}, TrainConfig(epochs=1))


# ---------------------------------------------------------------------------------------------
# train_fold


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cohort = _with_missing(planted_cohort()[0])
    split = _split(cohort.case_ids)
    out = tmp_path_factory.mktemp("fold0")
    metrics = train_fold(cohort, split, CFG, out, fold=0)
    return cohort, split, out, metrics


def test_training_finds_the_planted_signal(trained):
    _, split, out, metrics = trained
    assert metrics["c_index"] > 0.65
    predictions = pd.read_csv(out / "predictions.tsv", sep="\t")
    c = concordance_index_censored(predictions["event"].astype(bool), predictions["time"], predictions["risk"])[0]
    assert c == pytest.approx(metrics["c_index"])


def test_training_outputs(trained):
    cohort, split, out, metrics = trained
    assert sorted(p.name for p in out.iterdir()) == ["history.tsv", "metrics.json", "model.pt", "predictions.tsv"]
    assert json.loads((out / "metrics.json").read_text()) == metrics
    predictions = pd.read_csv(out / "predictions.tsv", sep="\t").set_index("case_id")
    assert list(predictions.index) == split["test"]
    surv = cohort.survival.loc[split["test"]]
    np.testing.assert_array_equal(predictions["time"], surv["time"])
    np.testing.assert_array_equal(predictions["event"], surv["event"])
    assert np.isfinite(predictions["risk"]).all() and (predictions["fold"] == 0).all()
    assert predictions.loc[NO_WSI[1], ["has_wsi", "has_rna"]].tolist() == [False, True]
    assert predictions.loc[NO_RNA[1], ["has_wsi", "has_rna"]].tolist() == [True, False]
    assert predictions.drop(index=[NO_WSI[1], NO_RNA[1]])[["has_wsi", "has_rna"]].all().all()
    assert metrics["n_test"] == len(split["test"]) and metrics["n_train"] == len(split["train"])
    assert metrics["n_test_events"] == int(surv["event"].sum())
    history = pd.read_csv(out / "history.tsv", sep="\t")
    assert len(history) == metrics["epochs_run"] <= CFG.epochs
    best = history.loc[metrics["best_epoch"], "val_loss"]
    assert best <= history["val_loss"].min() + 1e-4  # the kept weights are those of the best validation loss
    assert (history.loc[: metrics["best_epoch"] - 1, "val_loss"] >= best - 1e-4).all()
    assert np.isfinite(history["train_loss"]).all()


def test_saved_model_reproduces_the_predictions(trained):
    cohort, split, out, _ = trained
    saved = torch.load(out / "model.pt", map_location="cpu", weights_only=False)
    model = HEALNet(input_channels=saved["input_channels"], input_axes=[0, 0], num_classes=CFG.n_bins,
                    **saved["model_kwargs"])
    model.load_state_dict(saved["state_dict"])
    cfg = TrainConfig(**{**saved["config"], "modalities": tuple(saved["config"]["modalities"])})
    subsets, edges, transforms = prepare_fold(cohort, split, cfg)
    np.testing.assert_array_equal(saved["bin_edges"], edges)
    assert saved["transforms"]["rna"].columns == transforms["rna"].columns
    _, risk = evaluate_loss(model, subsets["test"], saved["input_channels"], cfg)
    predictions = pd.read_csv(out / "predictions.tsv", sep="\t")
    np.testing.assert_allclose(risk, predictions["risk"], rtol=1e-5, atol=1e-6)


def test_training_is_deterministic(trained, tmp_path):
    _, split, out, metrics = trained
    again = train_fold(_with_missing(planted_cohort()[0]), split, CFG, tmp_path, fold=0)
    assert again == metrics
    assert (tmp_path / "predictions.tsv").read_bytes() == (out / "predictions.tsv").read_bytes()


# ---------------------------------------------------------------------------------------------
# bags from feature stores


def test_case_of_slide():
    assert case_of_slide("TCGA-A2-VD3L-01Z-00-DX1.03E0A813-BDC2-4E99-A3D2-E49085EF3430.zarr") == "TCGA-A2-VD3L"


def test_load_bags_concatenates_a_cases_slides(processed, demo_truth):
    from preprocessing.features import read_features

    stores = sorted(processed["features"].glob("*.zarr"))
    bags, positions, dim = load_bags(stores)
    assert dim == 512
    expected: dict[str, list] = {}
    for s in stores:
        feats, coords, _ = read_features(s)
        if len(feats):
            expected.setdefault(s.name[:12], []).append((feats, coords))
    assert set(bags) == set(expected) == set(positions)
    truth = demo_truth.set_index("case_submitter_id")
    with_tissue = truth[(truth["n_slides"] > 0) & (truth["n_blank_slides"] == 0)].index
    assert set(bags) == set(with_tissue)
    for c, parts in expected.items():
        np.testing.assert_array_equal(bags[c], np.concatenate([f for f, _ in parts]).astype(np.float32))
        np.testing.assert_array_equal(positions[c], np.concatenate([p for _, p in parts]))
        assert bags[c].dtype == np.float32
    assert any(len(parts) == 2 for parts in expected.values())  # the two-slide case
