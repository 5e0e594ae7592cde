"""The elastic-net prior under HEALNet's logits (healnet.prior, model healnet_prior)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from healnet.folds import prepare_fold
from healnet.model import HEALNet
from healnet.prior import set_elastic_net_prior
from healnet.train import train_fold
from healnet.train_config import TrainConfig
from test_train import planted_cohort


def _two_omics_fold(missing_rna: str):
    """The planted cohort with its genes split into two omics tables, one test case without rna."""
    cohort, _ = planted_cohort(n=90)
    genes = cohort.omics["rna"]
    cohort.omics = {"rna": genes.iloc[:, :25].drop(index=[missing_rna]), "cnv": genes.iloc[:, 25:] - 20.0}
    ids = cohort.case_ids
    split = {"train": ids[:70], "val": [], "test": ids[70:]}
    cfg = TrainConfig(modalities=("rna", "cnv"), log_omics=(), early_stopping="none")
    subsets, _, _ = prepare_fold(cohort, split, cfg)
    return subsets["train"], subsets["test"]


def _matrix(data, widths):
    """Cases x concatenated features, 0 (the training mean after the z-score) where a case lacks a table."""
    return np.stack([np.concatenate([np.zeros(w) if x is None else np.asarray(x, float).ravel()
                                     for x, w in zip(case, widths)]) for case in zip(*data.inputs)])


def test_the_model_starts_as_the_elastic_net_and_a_missing_table_adds_nothing():
    """Before training, every hazard logit of HEALNet with the prior is the elastic net's linear
    predictor, as scikit-survival fits it on its own (its default path of 100 alphas down to 1 % of
    the largest, l1_ratio 0.5, the alpha 0.3 of the way along it, on the z-scored training matrix with a
    case's missing table at its training mean) and predicts it on the test cases; so the
    coefficients reach the model in the units of its inputs, and a case lacking a table gets no term
    from it."""
    from sklearn.preprocessing import StandardScaler
    from sksurv.linear_model import CoxnetSurvivalAnalysis
    from sksurv.util import Surv

    cohort_missing = "TCGA-AA-0075"
    train, test = _two_omics_fold(cohort_missing)
    widths = [25, 15]
    model = HEALNet(input_channels=widths, prior_widths=widths, num_classes=4)
    fitted = set_elastic_net_prior(model.prior, train, seed=0)
    assert fitted["nonzero"][0] + fitted["nonzero"][1] > 0

    scaler = StandardScaler().fit(_matrix(train, widths))
    reference = CoxnetSurvivalAnalysis(l1_ratio=0.5, n_alphas=100, alpha_min_ratio=0.01, max_iter=100000).fit(
        scaler.transform(_matrix(train, widths)), Surv.from_arrays(event=train.events.astype(bool), time=train.times))
    alpha = reference.alphas_[int(len(reference.alphas_) * 0.3)]
    assert alpha == pytest.approx(fitted["alpha"])
    assert "fixed rule, 0.3 of the way" in fitted["reason"]
    expected = reference.predict(scaler.transform(_matrix(test, widths)), alpha=alpha)

    present = torch.tensor([[x is not None for x in case] for case in zip(*test.inputs)])
    assert not present[:, 0].all()  # the case without rna is among the test cases
    tensors = [torch.stack([torch.as_tensor(np.full((1, w), np.nan) if x is None else x, dtype=torch.float32)
                            for x in col]) for col, w in zip(test.inputs, widths)]
    model.eval()
    with torch.no_grad():
        logits = model(tensors, present=present)
    assert torch.isfinite(logits).all()  # the absent table's NaN values are never read
    np.testing.assert_allclose(logits.numpy(), np.repeat(expected[:, None], 4, axis=1), rtol=1e-4, atol=1e-4)


def test_healnet_prior_trains_the_attention_and_leaves_the_prior_as_fitted(tmp_path):
    """The prior's weights after training are those the elastic net gave on the fold's training cases
    (frozen), the attention's head has moved from zero, and metrics.json records the fit."""
    cohort, _ = planted_cohort(n=60)
    ids = cohort.case_ids
    split = {"train": ids[:40], "val": ids[40:48], "test": ids[48:]}
    cfg = TrainConfig(architecture="healnet_prior", modalities=("wsi", "rna"), epochs=3, max_patches=10,
                      device="cpu")
    train_fold(cohort, split, cfg, tmp_path)
    saved = torch.load(tmp_path / "model.pt", weights_only=False)
    assert saved["config"]["lr"] == 1e-4 and saved["config"]["omic_prior"] == "elastic_net"
    assert saved["model_kwargs"]["prior_widths"] == [0, 40]

    fold_train = sorted({*split["train"], *split["val"]})  # no early stopping: validation joins training
    subsets, _, _ = prepare_fold(cohort, {**split, "train": fold_train, "val": []},
                                 TrainConfig(modalities=("wsi", "rna"), max_patches=10))
    again = HEALNet(input_channels=[16, 40], prior_widths=[0, 40]).prior
    set_elastic_net_prior(again, subsets["train"], seed=0)
    np.testing.assert_allclose(saved["state_dict"]["prior.weights.1"].numpy(), again.weights[1].detach().numpy(),
                               rtol=1e-6, atol=1e-8)
    assert float(saved["state_dict"]["prior.bias"]) == pytest.approx(float(again.bias))
    assert saved["state_dict"]["to_logits.2.weight"].abs().sum() > 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["prior"]["nonzero"]["rna"] == int(np.count_nonzero(again.weights[1].detach().numpy()))


def test_omic_prior_must_be_known():
    with pytest.raises(ValueError, match="omic_prior"):
        TrainConfig(omic_prior="ridge")
