"""healnet.data, healnet.bags and healnet.train: per-fold transforms fitted on training cases only, batches with
missing modalities, and a training run that finds a planted signal reproducibly."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from sksurv.metrics import concordance_index_censored

from healnet.bags import case_of_slide
from healnet.data import Cohort, OmicTransform
from healnet.folds import collate, prepare_fold
from healnet.model import HEALNet
from healnet.survival import fit_bins, survival_from_logits
from healnet.train import evaluate_loss, train_fold
from healnet.train_config import TrainConfig

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


CFG = TrainConfig(epochs=30, lr=2e-3, omic_top_k=16, seed=0, early_stopping="loss")


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


def test_cox_selection_keeps_a_quiet_prognostic_gene_that_variance_drops():
    """A gene of small variance that carries the survival signal is kept by ``select="cox"`` (fitted
    on the training rows' times and events) and lost by the variance ranking; the kept columns stay
    in the table's order, and without survival the cox ranking is refused."""
    rng = np.random.default_rng(11)
    n = 120
    noise = pd.DataFrame(rng.normal(0, 3, (n, 20)), columns=[f"g{j}" for j in range(20)])
    signal = rng.standard_normal(n)
    noise.insert(7, "prognostic", 0.1 * signal)
    times = np.exp(-signal + 0.3 * rng.standard_normal(n)) * 1000
    events = np.ones(n, dtype=int)
    by_variance = OmicTransform(top_k=5, log_transform=False).fit(noise)
    by_cox = OmicTransform(top_k=5, select="cox", log_transform=False).fit(noise, times, events)
    assert "prognostic" not in by_variance.columns
    assert "prognostic" in by_cox.columns
    assert by_cox.columns == [c for c in noise.columns if c in by_cox.columns]
    with pytest.raises(ValueError, match="times and events"):
        OmicTransform(top_k=5, select="cox").fit(noise)
    with pytest.raises(ValueError, match="omic_select"):
        TrainConfig(modalities=("rna",), omic_select="t-test")


def test_a_z_scored_table_keeps_its_negative_values():
    """Asked to log a table that has negative values (published z-scored RNA), the transform skips
    the log, says why, and each value keeps its own z-score: nothing below the mean is clipped."""
    rng = np.random.default_rng(3)
    z = pd.DataFrame(rng.standard_normal((40, 12)), columns=[f"g{j}" for j in range(12)])
    tf = OmicTransform(log_transform=True, name="rna").fit(z)
    assert not tf.log_applied and "negative" in tf.log_reason
    assert tf.summary() == {"log2": False, "log_reason": tf.log_reason, "features": 12}
    expected = (z - z.mean()) / z.std()  # pandas, ddof 1, independently
    np.testing.assert_allclose(tf.transform(z), expected[tf.columns].to_numpy(), rtol=1e-5, atol=1e-5)
    below = z.to_numpy() < 0
    assert len(np.unique(tf.transform(z)[:, 0][below[:, z.columns.get_loc(tf.columns[0])]])) > 1
    # a count table is logged, and the decision is recorded
    counts = OmicTransform(log_transform=True).fit(_tables()[0])
    assert counts.log_applied and counts.summary()["log2"]


def test_omic_top_k_none_keeps_every_feature_and_bad_values_are_config_errors():
    train, _ = _tables()
    assert OmicTransform(top_k=None).fit(train).columns == list(train.columns)
    assert TrainConfig().omic_top_k is None
    for bad in (0, -3, 2.5, True, "64"):
        with pytest.raises(ValueError, match="omic_top_k"):
            TrainConfig(omic_top_k=bad)


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
    assert sorted(p.name for p in out.iterdir()) == ["attention.npz", "history.tsv", "metrics.json", "missing.tsv",
                                                     "model.pt", "predictions.tsv"]
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


def test_validation_loss_is_the_weighted_objective_and_none_trains_the_whole_schedule(trained, tmp_path):
    """history's val_loss is the bin-weighted NLL that training minimises (recomputed here from the
    saved model's logits); with early_stopping "none" the validation cases join the training and
    the last epoch is kept."""
    from healnet.survival import bin_weights

    cohort, split, out, metrics = trained
    saved = torch.load(out / "model.pt", weights_only=False)
    subsets, edges, _ = prepare_fold(cohort, split, CFG)
    model = HEALNet(input_channels=saved["input_channels"], num_classes=CFG.n_bins, **saved["model_kwargs"])
    model.load_state_dict(saved["state_dict"])
    loss, _ = evaluate_loss(model, subsets["val"], saved["input_channels"], CFG,
                            torch.tensor(bin_weights(subsets["train"].labels, CFG.n_bins), dtype=torch.float32))
    history = pd.read_csv(out / "history.tsv", sep="\t")
    assert loss == pytest.approx(history.loc[metrics["best_epoch"], "val_loss"], rel=1e-5)
    unweighted, _ = evaluate_loss(model, subsets["val"], saved["input_channels"], CFG)
    assert unweighted != pytest.approx(loss)  # the weights matter: stopping on the plain NLL would differ
    full = train_fold(cohort, split, replace(CFG, early_stopping="none", epochs=4), tmp_path)
    assert full["n_train"] == len(split["train"]) + len(split["val"]) and full["best_epoch"] == 3


def test_survival_curves_in_predictions(trained):
    """surv_k is the survival past the end of bin k: in (0, 1), decreasing, and risk = -sum_k surv_k;
    the times of the bin ends are in metrics.json."""
    _, split, out, metrics = trained
    predictions = pd.read_csv(out / "predictions.tsv", sep="\t")
    surv = predictions[[f"surv_{k}" for k in range(CFG.n_bins)]].to_numpy()
    assert ((surv > 0) & (surv < 1)).all() and (np.diff(surv, axis=1) <= 0).all()
    np.testing.assert_allclose(-surv.sum(1), predictions["risk"], rtol=1e-6)
    edges = metrics["bin_edges"]
    train_times = planted_cohort()[0].survival.loc[split["train"], "time"]
    assert metrics["surv_times"] == edges[1:-1] + [float(train_times.max())]


def test_missing_modality_scenarios(trained):
    _, split, out, _ = trained
    missing = pd.read_csv(out / "missing.tsv", sep="\t", keep_default_na=False)
    assert list(missing.columns) == ["case_id", "fold", "scenario", "removed", "fraction", "dropped", "risk",
                                     "time", "event"]
    curves = missing[missing["fraction"] != ""]
    missing = missing[missing["fraction"] == ""]
    assert sorted(missing["scenario"].unique()) == ["full", "mixed", "no_rna", "no_wsi"]
    assert set(curves["removed"]) == {"wsi", "rna", "wsi+rna"}
    assert sorted(set(curves["fraction"].astype(float))) == list(CFG.missing_fractions)
    risk = {s: g.set_index("case_id")["risk"] for s, g in missing.groupby("scenario")}
    predictions = pd.read_csv(out / "predictions.tsv", sep="\t").set_index("case_id")
    for r in risk.values():
        assert list(r.index) == split["test"]
    np.testing.assert_allclose(risk["full"], predictions["risk"], rtol=1e-6)
    # a case that lacks a modality anyway is unchanged by removing it; the others do change
    assert risk["no_wsi"][NO_WSI[1]] == pytest.approx(risk["full"][NO_WSI[1]], abs=1e-6)
    assert risk["no_rna"][NO_RNA[1]] == pytest.approx(risk["full"][NO_RNA[1]], abs=1e-6)
    assert (np.abs(risk["no_wsi"] - risk["full"]) > 1e-4).mean() > 0.9
    # mixed: each case loses exactly one modality, about half each, and gets that scenario's risk
    mixed = missing[missing["scenario"] == "mixed"].set_index("case_id")
    assert set(mixed["dropped"]) == {"wsi", "rna"} and 0.25 < (mixed["dropped"] == "wsi").mean() < 0.75
    for c, row in mixed.iterrows():
        assert row["risk"] == pytest.approx(risk[f"no_{row['dropped']}"][c], abs=1e-6)


def test_curve_scenarios_remove_nested_shares_and_never_everything():
    """round(f n) cases lose the removed modality; the cases of a smaller fraction are among those of
    a larger one; a pair takes one of its two modalities from each chosen case (none loses both);
    a model of one modality has no curve."""
    from healnet.missing import curve_scenarios

    ids, modalities = [f"c{i}" for i in range(40)], ("wsi", "rna", "cnv")
    scenarios = curve_scenarios(ids, modalities, (0.1, 0.5, 0.9), seed=3)
    assert len(scenarios) == (3 + 3) * 3  # three singles and three pairs, three fractions each
    chosen = {}
    for name, removed, f, dropped, drop in scenarios:
        assert name == f"{removed}@{f:g}" and drop.sum() == round(f * 40)
        assert (drop.sum(axis=1) <= 1).all() and ((dropped != "") == drop.any(axis=1)).all()
        parts = removed.split("+")
        assert set(dropped[dropped != ""]) == set(parts)
        assert not drop[:, [k for k, m in enumerate(modalities) if m not in parts]].any()
        chosen[removed, f] = set(np.flatnonzero(drop.any(axis=1)))
    for removed in ("wsi", "rna+cnv"):
        assert chosen[removed, 0.1] < chosen[removed, 0.5] < chosen[removed, 0.9]
    assert chosen["wsi", 0.5] != chosen["rna", 0.5]  # each removal set draws its own cases
    again = curve_scenarios(ids, modalities, (0.1, 0.5, 0.9), seed=3)
    assert all((a[4] == b[4]).all() for a, b in zip(scenarios, again))
    assert curve_scenarios(ids, ("rna",), (0.5,), seed=3) == []
    with pytest.raises(ValueError, match="missing_fractions"):
        TrainConfig(modalities=("rna",), missing_fractions=(0.0, 0.5))


def test_training_with_a_modality_missing_from_every_case_never_updates_its_weights(tmp_path):
    """train_missing removes the modality from that share of the training (and test) cases: at 100 %
    for rna (no L1, no weight decay) the rna cross-attention keeps its initial weights, the wsi one
    learns; an unknown removal set is refused."""
    cohort = planted_cohort(60)[0]
    split = _split(cohort.case_ids)
    cfg = replace(CFG, epochs=2, l1=0.0, weight_decay=0.0, early_stopping="none",
                  train_missing={"removed": "rna", "fraction": 1.0})
    train_fold(cohort, split, cfg, tmp_path, fold=0)
    state = torch.load(tmp_path / "model.pt", weights_only=False)["state_dict"]
    torch.manual_seed(cfg.seed)
    saved = torch.load(tmp_path / "model.pt", weights_only=False)
    initial = HEALNet(input_channels=saved["input_channels"], num_classes=cfg.n_bins, **saved["model_kwargs"]).state_dict()
    rna = [k for k in state if k.startswith("layers.0.cross.1.0.fn.to_kv")]
    wsi = [k for k in state if k.startswith("layers.0.cross.0.0.fn.to_kv")]
    assert rna and wsi
    assert all(torch.equal(state[k], initial[k]) for k in rna)
    assert not all(torch.equal(state[k], initial[k]) for k in wsi)
    with pytest.raises(ValueError, match="train_missing"):
        train_fold(cohort, split, replace(cfg, train_missing={"removed": "cnv", "fraction": 0.5}), None, fold=0)


def test_attention_maps(trained):
    """Per test case with a slide: one weight per patch used (they sum to 1: the mean over latents,
    heads and layers of softmax rows), with those patches' level-0 coordinates; omics profiles as
    one token ('single') have no per-gene attention, only a note."""
    cohort, split, out, _ = trained
    att = np.load(out / "attention.npz")
    assert list(att["case_ids"]) == split["test"]
    with_wsi = [c for c in split["test"] if c in cohort.bags]
    assert sorted(k.split("/", 1)[1] for k in att.files if k.startswith("wsi_attention/")) == sorted(with_wsi)
    for c in with_wsi:
        w = att[f"wsi_attention/{c}"]
        assert w.shape == (len(cohort.bags[c]),) and (w >= 0).all()
        assert w.sum() == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_array_equal(att[f"wsi_coords/{c}"], cohort.positions[c].round())
        assert att[f"wsi_coords/{c}"].dtype == np.int64
    assert not [k for k in att.files if k.startswith("rna_attention/")]
    assert "not defined" in json.loads(str(att["notes"]))["rna"]


def test_attention_maps_per_gene_and_subsampled_patches(tmp_path):
    cohort, _ = planted_cohort(n=40)
    ids = cohort.case_ids
    split = {"train": ids[:24], "val": ids[24:30], "test": ids[30:]}
    cfg = TrainConfig(epochs=2, omic_tokens="genes", omic_top_k=12, max_patches=10, fourier_wsi=True, device="cpu")
    train_fold(cohort, split, cfg, tmp_path)
    att = np.load(tmp_path / "attention.npz")
    saved = torch.load(tmp_path / "model.pt", weights_only=False)
    assert list(att["rna_features"]) == saved["transforms"]["rna"].columns
    for c in split["test"]:
        w = att[f"rna_attention/{c}"]
        assert w.shape == (12,) and w.sum() == pytest.approx(1.0, abs=1e-5)
        coords = att[f"wsi_coords/{c}"]  # the (at most) 10 patches kept, in the bag's order
        assert att[f"wsi_attention/{c}"].shape == (min(10, len(cohort.bags[c])),) == coords.shape[:1]
        rows = [int(np.flatnonzero((cohort.positions[c].round() == xy).all(1))[0]) for xy in coords]
        assert rows == sorted(rows)


@pytest.mark.parametrize("architecture", ["healnet_genes", "healnet_noself", "healnet_prior"])
def test_named_variants_train_and_their_checkpoint_rebuilds_them(tmp_path, architecture):
    """healnet_genes trains with one token per gene whatever the config says (per-gene attention in
    attention.npz, the override in the saved config); an ablation's own keywords are in the saved
    model_kwargs, so HEALNet(**model_kwargs) rebuilds it and reproduces the test predictions."""
    from healnet.train import predict

    cohort, _ = planted_cohort(n=40)
    ids = cohort.case_ids
    split = {"train": ids[:24], "val": ids[24:30], "test": ids[30:]}
    cfg = TrainConfig(architecture=architecture, epochs=2, omic_top_k=12, max_patches=10, device="cpu",
                      early_stopping="loss")  # the split as given: the rebuild below prepares the same fold
    train_fold(cohort, split, cfg, tmp_path)
    saved = torch.load(tmp_path / "model.pt", weights_only=False)
    att = np.load(tmp_path / "attention.npz")
    genes = architecture == "healnet_genes"
    assert saved["config"]["omic_tokens"] == ("genes" if genes else "single")
    assert bool([k for k in att.files if k.startswith("rna_attention/")]) == genes
    assert (saved["model_kwargs"].get("self_per_cross_attn") == 0) == (architecture == "healnet_noself")
    model = HEALNet(input_channels=saved["input_channels"], num_classes=cfg.n_bins, **saved["model_kwargs"])
    model.load_state_dict(saved["state_dict"])
    run_cfg = TrainConfig(**{**saved["config"], "modalities": tuple(saved["config"]["modalities"])})
    subsets, _, _ = prepare_fold(cohort, split, run_cfg)
    risk = -survival_from_logits(predict(model, subsets["test"], saved["input_channels"], run_cfg).double()).sum(1)
    predictions = pd.read_csv(tmp_path / "predictions.tsv", sep="\t")
    np.testing.assert_allclose(risk.numpy(), predictions["risk"], rtol=1e-5, atol=1e-6)


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


def test_open_bags_concatenates_a_cases_slides(processed, demo_truth):
    """The lazy bag loader gives, per case, its slides' rows (as float32) and positions in store order."""
    from healnet.bags import LazyBag, open_bags
    from preprocessing.feature_store import read_features

    stores = sorted(processed["features"].glob("*.zarr"))
    lazy, positions, dim = open_bags(stores)
    assert all(isinstance(bag, LazyBag) for bag in lazy.values())
    bags = {c: bag.read() for c, bag in lazy.items()}
    assert all(lazy[c].shape == bags[c].shape for c in lazy)
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


# ---------------------------------------------------------------------------------------------
# lazy bags: float16 Zarr stores read on demand, statistics streamed over training cases only


def _write_store(path, feats: np.ndarray, coords: np.ndarray, chunk: int = 5) -> None:
    """A feature store laid out like preprocessing.features writes it (float16 features)."""
    import zarr

    root = zarr.open_group(str(path), mode="w")
    root.create_array("features", data=feats.astype(np.float16), chunks=(chunk, feats.shape[1]))
    root.create_array("coords", data=coords.astype(np.int64), chunks=(chunk, 2))


def _stores(cohort: Cohort, folder) -> tuple[list, Cohort]:
    """Each case's bag written as float16 stores (cases with an even index split over two slides);
    returns the store paths and the in-memory cohort holding exactly what the stores hold."""
    paths, memory = [], {}
    for i, (c, bag) in enumerate(cohort.bags.items()):
        coords = np.round(cohort.positions[c]).astype(np.int64)
        parts = np.array_split(np.arange(len(bag)), 2 if i % 2 == 0 else 1)
        for k, rows in enumerate(parts):
            path = folder / f"{c}-01Z-00-DX{k + 1}.zarr"
            _write_store(path, bag[rows], coords[rows])
            paths.append(path)
        memory[c] = bag.astype(np.float16).astype(np.float32)
        cohort.positions[c] = coords.astype(np.float32)
    return paths, Cohort(cohort.survival, memory, cohort.positions, cohort.omics)


def test_lazy_bag_reads_rows_across_its_stores(tmp_path):
    from healnet.bags import LazyBag, iter_blocks

    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((n, 6)).astype(np.float16) for n in (7, 1, 12)]
    for k, p in enumerate(parts):
        _write_store(tmp_path / f"s{k}.zarr", p, np.zeros((len(p), 2)))
    bag = LazyBag([tmp_path / f"s{k}.zarr" for k in range(3)], [7, 1, 12], 6)
    full = np.concatenate(parts).astype(np.float32)
    assert len(bag) == 20 and bag.shape == (20, 6)
    np.testing.assert_array_equal(bag.read(), full)
    rows = np.array([0, 6, 7, 8, 19])
    got = bag.read(rows)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, full[rows])
    np.testing.assert_array_equal(bag.read_range(5, 9), full[5:9])
    np.testing.assert_array_equal(np.concatenate(list(iter_blocks(bag, 3))), full)
    with pytest.raises(ValueError, match="increasing"):
        bag.read(np.array([3, 2]))


def test_streamed_statistics_match_numpy_and_ignore_test_cases(tmp_path, monkeypatch):
    """(c) The per-fold WSI channel mean/std, streamed store by store in blocks (float64), equal the
    two-pass numpy figures over the training patches; an extreme value planted in a test case's
    store moves nothing that is fitted (nor the bins), one planted in a training case does."""
    import healnet.bags
    from healnet.bags import open_bags

    monkeypatch.setattr(healnet.bags, "BLOCK_ROWS", 7)  # many blocks, some spanning two stores
    cohort, _ = planted_cohort(n=30)
    paths, memory = _stores(cohort, tmp_path)
    ids = cohort.case_ids
    split = {"train": ids[:18], "val": ids[18:22], "test": ids[22:]}
    bags, positions, dim = open_bags(paths)
    assert dim == DIM and set(bags) == set(ids)
    lazy = Cohort(cohort.survival, bags, positions, cohort.omics)
    cfg = replace(CFG, omic_top_k=8)
    _, edges, transforms = prepare_fold(lazy, split, cfg)
    patches = np.concatenate([memory.bags[c] for c in split["train"]]).astype(np.float64)
    np.testing.assert_allclose(transforms["wsi"][0], patches.mean(0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(transforms["wsi"][1], patches.std(0), rtol=1e-10)

    def planted(case: str):
        folder = tmp_path / f"planted-{case}"
        folder.mkdir()
        out = []
        for p in paths:
            q = folder / p.name
            import shutil

            shutil.copytree(p, q)
            if p.name.startswith(case):
                import zarr

                arr = zarr.open_group(str(q), mode="r+")["features"]
                arr[0, :] = 6e4  # near float16's largest value
            out.append(q)
        survival = cohort.survival.copy()
        survival.loc[case, "time"] = 1e7
        return Cohort(survival, open_bags(out)[0], positions, cohort.omics)

    _, edges2, transforms2 = prepare_fold(planted(split["test"][0]), split, cfg)
    np.testing.assert_array_equal(transforms2["wsi"][0], transforms["wsi"][0])
    np.testing.assert_array_equal(transforms2["wsi"][1], transforms["wsi"][1])
    np.testing.assert_array_equal(edges2, edges)
    _, _, transforms3 = prepare_fold(planted(split["train"][0]), split, cfg)
    assert not np.allclose(transforms3["wsi"][0], transforms["wsi"][0])


def test_lazy_and_in_memory_bags_train_identically(tmp_path):
    from healnet.bags import LazyBag, open_bags

    cohort, _ = planted_cohort(n=60)
    paths, memory = _stores(cohort, tmp_path)
    ids = cohort.case_ids
    split = {"train": ids[:36], "val": ids[36:46], "test": ids[46:]}
    cfg = replace(CFG, epochs=4, max_patches=12, fourier_wsi=True, omic_top_k=8)
    results = []
    for kind in ("memory", "lazy", "lazy-no-prefetch"):
        bags = memory.bags if kind == "memory" else open_bags(paths)[0]
        assert all(isinstance(b, LazyBag) for b in bags.values()) == (kind != "memory")
        out = tmp_path / kind
        metrics = train_fold(Cohort(cohort.survival, bags, cohort.positions, cohort.omics), split,
                             replace(cfg, prefetch=kind != "lazy-no-prefetch"), out)
        results.append((metrics, (out / "predictions.tsv").read_bytes(), (out / "missing.tsv").read_bytes()))
    assert results[0] == results[1] == results[2]


def test_train_fold_from_files_reads_bags_lazily(tmp_path, monkeypatch):
    """The rule's entry point: lazy bags, the architecture from the `model` wildcard, config keys checked."""
    import healnet.bags
    from healnet.splits import write_splits
    from healnet.train import train_fold_from_files
    from healnet.train_config import config_from_dict

    cohort, _ = planted_cohort(n=40)
    paths, _ = _stores(cohort, tmp_path)
    clinical = tmp_path / "clinical.parquet"
    cohort.survival.reset_index().assign(status="ok").to_parquet(clinical)
    rna = tmp_path / "rna.parquet"
    cohort.omics["rna"].to_parquet(rna)
    ids = cohort.case_ids
    write_splits(tmp_path / "splits.json", [{"train": ids[:24], "val": ids[24:30], "test": ids[30:]}])
    reads = []
    original = healnet.bags.LazyBag.read
    monkeypatch.setattr(healnet.bags.LazyBag, "read", lambda self, rows=None: reads.append(1) or original(self, rows))
    config = {"models": ["healnet"], "modalities": ["wsi", "rna"], "epochs": 2, "omic_top_k": 8, "device": "cpu"}
    metrics = train_fold_from_files(clinical, paths, {"rna": rna}, tmp_path / "splits.json", 0, tmp_path / "out",
                                    config, seed=0, architecture="healnet-wsi")
    assert metrics["architecture"] == "healnet-wsi" and metrics["modalities"] == ["wsi"]
    assert reads  # bags were read through LazyBag
    predictions = pd.read_csv(tmp_path / "out" / "predictions.tsv", sep="\t")
    assert "has_rna" not in predictions and predictions["has_wsi"].all()
    att = np.load(tmp_path / "out" / "attention.npz")
    for c in ids[30:]:  # with lazy bags, each patch's slide: cases of even index have two
        slides = att[f"slide/{c}"]
        assert len(slides) == len(att[f"wsi_attention/{c}"]) and list(slides) == sorted(slides)
        assert set(slides) == {p.name[:-5] for p in paths if p.name.startswith(c)}
    with pytest.raises(ValueError, match="epochz"):
        config_from_dict({**config, "epochz": 3})


# ---------------------------------------------------------------------------------------------
# several omics modalities; architectures


def test_several_omics_modalities(tmp_path):
    """cnv (log ratios, negative values: not log-transformed) next to rna, each its own modality."""
    cohort, _ = planted_cohort(n=40)
    rng = np.random.default_rng(5)
    cnv = pd.DataFrame(rng.normal(0, 1, (40, 12)), index=cohort.case_ids, columns=[f"C{j}" for j in range(12)])
    cohort.omics["cnv"] = cnv.drop(index=cohort.case_ids[30:33])
    ids = cohort.case_ids
    split = {"train": ids[:24], "val": ids[24:30], "test": ids[30:]}
    cfg = TrainConfig(modalities=("wsi", "rna", "cnv"), epochs=2, omic_top_k=6, device="cpu")
    subsets, _, transforms = prepare_fold(cohort, split, cfg)
    assert transforms["cnv"].log_transform is False and transforms["rna"].log_transform is True
    train = cnv.loc[split["train"]]
    top = train.var().sort_values(ascending=False, kind="stable").index[:6]
    c = split["test"][5]
    np.testing.assert_allclose(subsets["test"].inputs[2][5][0],
                               (cnv.loc[c, top] - train[top].mean()) / train[top].std(), rtol=1e-5)
    train_fold(cohort, split, cfg, tmp_path)
    predictions = pd.read_csv(tmp_path / "predictions.tsv", sep="\t").set_index("case_id")
    assert predictions.loc[ids[30:33], "has_cnv"].tolist() == [False] * 3 and predictions.loc[ids[33:], "has_cnv"].all()
    missing = pd.read_csv(tmp_path / "missing.tsv", sep="\t", keep_default_na=False)
    curves = missing[missing["fraction"] != ""]  # three modalities: three singles and three pairs per fraction
    assert set(curves["removed"]) == {"wsi", "rna", "cnv", "wsi+rna", "wsi+cnv", "rna+cnv"}
    missing = missing[missing["fraction"] == ""]
    assert sorted(missing["scenario"].unique()) == ["full", "mixed", "no_cnv", "no_rna", "no_wsi"]


def test_zoo_healnet_variants():
    from healnet.zoo import build_model, model_modalities

    assert model_modalities("healnet", ("wsi", "rna", "cnv")) == ("wsi", "rna", "cnv")
    assert model_modalities("healnet-cnv", ("wsi", "rna", "cnv")) == ("cnv",)
    assert model_modalities("snn", ("wsi", "rna", "cnv")) == ("rna", "cnv")
    assert model_modalities("abmil", ("wsi", "rna")) == ("wsi",)
    with pytest.raises(ValueError, match="not among"):
        model_modalities("healnet-cnv", ("wsi", "rna"))
    with pytest.raises(ValueError, match="unknown architecture"):
        model_modalities("perceiverio", ("wsi",))
    model = build_model("healnet-wsi", input_channels=[16], modalities=["wsi"], num_classes=4, depth=1)
    assert isinstance(model, HEALNet) and model.num_modalities == 1
    assert model([torch.randn(2, 5, 16)]).shape == (2, 4)


def _baselines_present() -> bool:
    import importlib.util

    return importlib.util.find_spec("healnet.baselines") is not None


@pytest.mark.parametrize("name", ["snn", "abmil", "early-fusion", "late-fusion", "coxnet"])
def test_baselines_learn_the_planted_signal_on_held_out_cases(name, tmp_path):
    """Each baseline, trained with the default protocol on the planted cohort, ranks the held-out
    test cases far above chance: at least half of the way from 0.5 to the c-index of the part of
    the true risk that its modalities carry (the oracle, computed with scikit-survival)."""
    cohort, _ = planted_cohort(n=200, seed=2)
    split = {"train": cohort.case_ids[:110], "val": cohort.case_ids[110:140], "test": cohort.case_ids[140:]}
    cfg = TrainConfig(architecture=name, device="cpu")
    metrics = train_fold(cohort, split, cfg, tmp_path)
    assert metrics["architecture"] == name and metrics["n_test"] == len(split["test"])
    predictions = pd.read_csv(tmp_path / "predictions.tsv", sep="\t").set_index("case_id").loc[split["test"]]
    assert np.isfinite(predictions["risk"]).all() and {f"surv_{k}" for k in range(4)} <= set(predictions.columns)
    assert (tmp_path / "missing.tsv").exists() and (tmp_path / "attention.npz").exists()
    # the planted risk parts, recomputed from the data: a = mean shift of patch channels 0-3, b = log gene scale
    wsi_part = np.array([cohort.bags[c][:, :4].mean() for c in split["test"]])
    rna_part = np.log(cohort.omics["rna"].loc[split["test"]].iloc[:, :N_SIGNAL_GENES]).mean(axis=1).to_numpy()
    seen = {"snn": rna_part, "coxnet": rna_part, "abmil": wsi_part}.get(name, wsi_part + rna_part)
    event, time = predictions["event"].astype(bool), predictions["time"]
    oracle = concordance_index_censored(event, time, seen)[0]
    c = concordance_index_censored(event, time, predictions["risk"])[0]
    assert c == pytest.approx(metrics["c_index"])
    assert oracle > 0.7 and c - 0.5 >= 0.5 * (oracle - 0.5), (c, oracle)


def test_baselines_run_with_gene_tokens_and_missing_modalities(tmp_path):
    cohort = _with_missing(planted_cohort()[0])
    split = _split(cohort.case_ids)
    for name in ("snn", "early-fusion", "late-fusion"):
        metrics = train_fold(cohort, split, TrainConfig(architecture=name, epochs=2, omic_top_k=8,
                                                         omic_tokens="genes", device="cpu"), tmp_path)
        assert metrics["n_test"] == len(split["test"])
        assert np.isfinite(pd.read_csv(tmp_path / "predictions.tsv", sep="\t")["risk"]).all()


def test_device_and_mixed_precision_choice():
    """bf16 autocast only on CUDA; "auto" falls back to the CPU (float32, deterministic)."""
    from healnet.train import _autocast, _device

    assert _device(TrainConfig(device="cpu")).type == "cpu"
    assert _device(TrainConfig(device="auto")).type == ("cuda" if torch.cuda.is_available() else "cpu")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available" on CPU-only machines
        amp = _autocast(torch.device("cuda"))
    assert isinstance(amp, torch.autocast) and amp.fast_dtype == torch.bfloat16
    assert not isinstance(_autocast(torch.device("cpu")), torch.autocast)
    with pytest.raises(ValueError, match="omic_tokens"):
        TrainConfig(omic_tokens="pathways")


def test_missing_omic_values_become_the_training_mean():
    import pandas as pd

    from healnet.data import OmicTransform

    train = pd.DataFrame({"a": [1.0, 3.0, np.nan, 5.0], "b": [2.0, 2.5, 3.0, 10.0]})
    t = OmicTransform(top_k=2, log_transform=False).fit(train)
    assert np.allclose(t.mean[[t.columns.index("a"), t.columns.index("b")]], [3.0, 4.375])  # NaN left out
    out = t.transform(pd.DataFrame({"a": [np.nan, 5.0], "b": [4.375, np.nan]}))
    assert np.isfinite(out).all()
    order = t.columns.index("a"), t.columns.index("b")
    assert out[0, order[0]] == 0 and out[1, order[1]] == 0
    assert np.isclose(out[1, order[0]], (5.0 - 3.0) / np.std([1.0, 3.0, 5.0], ddof=1))


@pytest.mark.skipif(not _baselines_present(), reason="healnet/baselines.py is not there yet")
def test_coxnet_when_the_validation_split_lacks_a_modality(tmp_path):
    """A small cohort's validation cases may all lack one omics modality: coxnet's design matrix
    still has that modality's columns (filled with its training mean) for every subset."""
    cohort, _ = planted_cohort(n=40)
    ids = cohort.case_ids
    split = {"train": ids[:24], "val": ids[24:30], "test": ids[30:]}
    rng = np.random.default_rng(5)
    cnv = pd.DataFrame(rng.normal(0, 1, (40, 12)), index=ids, columns=[f"C{j}" for j in range(12)])
    cohort.omics["cnv"] = cnv.drop(index=split["val"])
    cfg = TrainConfig(architecture="coxnet", modalities=("wsi", "rna", "cnv"), omic_top_k=6, device="cpu")
    metrics = train_fold(cohort, split, cfg, tmp_path)
    assert metrics["n_train"] == 30  # training and validation cases, all with RNA
    predictions = pd.read_csv(tmp_path / "predictions.tsv", sep="\t")
    assert len(predictions) == 10 and np.isfinite(predictions["risk"]).all()
