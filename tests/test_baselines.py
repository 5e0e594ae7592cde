"""healnet.baselines: the neural baselines' calling convention (shapes, padding never read, absent
modalities without effect), that each learns a planted signal, and the elastic-net Cox (healnet.coxnet) against
scikit-survival's own fitted model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sksurv.linear_model import CoxnetSurvivalAnalysis
from sksurv.metrics import concordance_index_censored
from sksurv.util import Surv
from sklearn.preprocessing import StandardScaler

from healnet.baselines import BASELINES
from healnet.coxnet import fit_coxnet
from healnet.survival import discretise, fit_bins, nll_loss, risk_from_logits

MODALITIES = ["wsi", "rna"]
CHANNELS = [6, 10]  # 6-channel patches; 10 genes as one token
USES = {"snn": {1}, "abmil": {0}, "early-fusion": {0, 1}, "late-fusion": {0, 1}}


def _batch(b=5, n=7, seed=0, genes_as_tokens=False):
    g = torch.Generator().manual_seed(seed)
    wsi = torch.randn(b, n, CHANNELS[0], generator=g)
    rna = torch.randn(b, 1, CHANNELS[1], generator=g)
    if genes_as_tokens:
        rna = rna.transpose(1, 2)
    lengths = torch.tensor([n, 3, 1, 5, 2][:b])
    wsi_mask = torch.arange(n)[None, :] < lengths[:, None]
    rna_mask = torch.ones(b, rna.shape[1], dtype=torch.bool)
    return [wsi, rna], [wsi_mask, rna_mask]


def _model(name, seed=0, **kwargs):
    torch.manual_seed(seed)
    return BASELINES[name](input_channels=CHANNELS, modalities=MODALITIES, num_classes=4, unknown_option=1,
                           **kwargs).eval()


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_shapes_and_attention(name):
    tensors, masks = _batch()
    model = _model(name)
    out = model(tensors, masks=masks)
    assert out.shape == (5, 4) and torch.isfinite(out).all()
    logits, weights = model(tensors, masks=masks, return_attention=True)
    torch.testing.assert_close(logits, out)
    totals = {}
    for w in weights:
        attn = w["attn"]
        assert attn.shape[0] == 5 and attn.shape[-1] == tensors[w["modality"]].shape[1]
        # masked tokens get exactly 0
        assert (attn[~masks[w["modality"]][:, None, None, :].expand_as(attn)] == 0).all()
        totals[w["layer"]] = totals.get(w["layer"], 0) + attn.sum(-1)
    for total in totals.values():  # over all modalities read by one attention, each query's weights sum to 1
        torch.testing.assert_close(total, torch.ones_like(total))
    if name in ("abmil", "late-fusion", "early-fusion"):
        assert any(w["modality"] == 0 for w in weights)


@pytest.mark.parametrize("name", ["snn", "late-fusion"])
def test_omics_one_gene_per_token_needs_input_tokens(name):
    tensors, masks = _batch(genes_as_tokens=True)
    with pytest.raises(ValueError, match="input_tokens"):
        BASELINES[name](input_channels=[6, 1], modalities=MODALITIES, num_classes=4)
    torch.manual_seed(0)
    model = BASELINES[name](input_channels=[6, 1], modalities=MODALITIES, num_classes=4, input_tokens=[None, 10]).eval()
    assert model(tensors, masks=masks).shape == (5, 4)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_padding_is_never_read(name):
    tensors, masks = _batch()
    model = _model(name)
    reference = model(tensors, masks=masks)
    poisoned = tensors[0].clone()
    poisoned[~masks[0]] = float("nan")
    out = model([poisoned, tensors[1]], masks=masks)
    torch.testing.assert_close(out, reference)
    # each sample alone, without any padding, gives the same output as in the padded batch
    for i in range(5):
        k = int(masks[0][i].sum())
        alone = model([tensors[0][i:i + 1, :k], tensors[1][i:i + 1]])
        torch.testing.assert_close(alone, reference[i:i + 1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("absent", [0, 1])
def test_absent_modality_has_no_effect(name, absent):
    tensors, masks = _batch()
    model = _model(name)
    present = torch.ones(5, 2, dtype=torch.bool)
    present[[1, 3], absent] = False
    reference = model(tensors, masks=masks, present=present)
    changed = [t.clone() for t in tensors]
    changed[absent][[1, 3]] = float("nan")
    out = model(changed, masks=masks, present=present)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, reference)
    if absent in USES[name]:  # the modality matters when present ...
        changed[absent][[1, 3]] = 5.0
        moved = model(changed, masks=masks)
        assert not torch.allclose(moved[[1, 3]], reference[[1, 3]])
    # ... and an empty bag counts as absent
    if absent == 0:
        empty = [m.clone() for m in masks]
        empty[0][[1, 3]] = False
        torch.testing.assert_close(model(tensors, masks=empty), reference)


def test_early_fusion_imputes_an_absent_modality_at_the_training_mean():
    """missing="mean": an absent modality reads as one token of zeros (the standardised training
    mean), so its output equals that of a case whose only token is all zeros; missing="mask": it
    equals the case without the modality's tokens at all."""
    tensors, masks = _batch()
    present = torch.ones(5, 2, dtype=torch.bool)
    present[2, 1] = False
    for missing in ("mean", "mask"):
        model = _model("early-fusion", missing=missing)
        out = model(tensors, masks=masks, present=present)[2]
        if missing == "mean":
            expected = model([tensors[0][2:3], torch.zeros(1, 1, CHANNELS[1])], masks=[masks[0][2:3], None])[0]
        else:
            expected = model([tensors[0][2:3], tensors[1][2:3]], masks=[masks[0][2:3], torch.zeros(1, 1, dtype=torch.bool)])[0]
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="missing"):
        _model("early-fusion", missing="zero")


def _planted(n, seed):
    """Risk 2z, with z = gene 0 = the shift of patch channel 0 of every patch: each baseline sees the
    whole signal in the modality it reads; exponential times, 25 % censoring."""
    rng = np.random.default_rng(seed)
    rna = rng.normal(size=(n, 10)).astype(np.float32)
    sizes = rng.integers(3, 9, n)
    bags = [rng.normal(size=(k, 6)).astype(np.float32) for k in sizes]
    for bag, z in zip(bags, rna[:, 0]):
        bag[:, 0] += 2 * z
    risk = 2 * rna[:, 0]
    time = rng.exponential(np.exp(-risk)) * 1000 + 1
    event = rng.random(n) < 0.75
    wsi = np.zeros((n, sizes.max(), 6), np.float32)
    mask = np.zeros((n, sizes.max()), bool)
    for i, bag in enumerate(bags):
        wsi[i, : len(bag)], mask[i, : len(bag)] = bag, True
    return [torch.from_numpy(wsi), torch.from_numpy(rna)[:, None, :]], [torch.from_numpy(mask), None], time, event


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_learns_a_planted_signal(name):
    tensors, masks, time, event = _planted(96, seed=1)
    test_tensors, test_masks, test_time, test_event = _planted(64, seed=2)
    edges = fit_bins(time, event, 4)
    labels, events = torch.from_numpy(discretise(time, edges)), torch.from_numpy(event.astype(np.int64))
    model = _model(name, dropout=0.0, attn_dropout=0.0, ff_dropout=0.0).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(200):
        loss = nll_loss(model(tensors, masks=masks), labels, events)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        risk = risk_from_logits(model.eval()(test_tensors, masks=test_masks)).numpy()
    c = concordance_index_censored(test_event, test_time, risk)[0]
    assert c > 0.7, f"{name}: held-out c-index {c:.3f}"


# ---------------------------------------------------------------------------------------------
# elastic-net Cox


def _cox_data(n=120, p=15, seed=0, event_rate=0.7):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p)) * rng.uniform(0.5, 3, p) + rng.uniform(-2, 2, p)
    lin = 1.5 * (x[:, 0] - x[:, 0].mean()) / x[:, 0].std() - (x[:, 1] - x[:, 1].mean()) / x[:, 1].std()
    time = rng.exponential(np.exp(-lin)) * 365 + 1
    event = rng.random(n) < event_rate
    return x, time, event


def test_coxnet_agrees_with_sksurv():
    x, time, event = _cox_data()
    model = fit_coxnet(x, time, event, l1_ratio=0.5, seed=0)
    assert "inner 5-fold CV" in model.reason and model.alpha in model.alphas
    # scikit-survival's own model on the same standardised data, at the chosen alpha
    xs = StandardScaler().fit_transform(x)
    ref = CoxnetSurvivalAnalysis(l1_ratio=0.5, alphas=[model.alpha], fit_baseline_model=True, max_iter=100000)
    ref.fit(xs, Surv.from_arrays(event=event, time=time))
    x_new, _, _ = _cox_data(n=30, seed=5)
    xs_new = StandardScaler().fit(x).transform(x_new)
    np.testing.assert_allclose(model.predict(x_new), ref.predict(xs_new), rtol=1e-3, atol=1e-3)
    times = np.array([0.5, 50.0, 200.0, 400.0, 1e6])
    s = model.predict_survival(x_new, times)
    assert s.shape == (30, 5)
    ref_fns = ref.predict_survival_function(xs_new)
    np.testing.assert_allclose(s[:, 1:4], np.array([f(times[1:4]) for f in ref_fns]), atol=1e-3)
    assert (s[:, 0] == 1.0).all()  # before the first training time
    np.testing.assert_allclose(s[:, 4], [f.y[-1] for f in ref_fns], atol=1e-3)
    assert (np.diff(s, axis=1) <= 1e-12).all()
    # a planted signal is recovered: the informative features carry the largest coefficients
    coef = np.abs(model.model.coef_[:, list(model.alphas).index(model.alpha)])
    assert set(np.argsort(coef)[-2:]) == {0, 1}
    x_test, t_test, e_test = _cox_data(n=200, seed=9)
    assert concordance_index_censored(e_test, t_test, model.predict(x_test))[0] > 0.7


def test_coxnet_cv_choice_is_the_best_mean_score():
    """The chosen alpha maximises the inner-CV c-index recomputed here with sksurv's scorer."""
    from sklearn.model_selection import StratifiedKFold

    x, time, event = _cox_data(seed=3)
    model = fit_coxnet(x, time, event, seed=4)
    xs, y = StandardScaler().fit_transform(x), Surv.from_arrays(event=event, time=time)
    scores = np.zeros(len(model.alphas))
    for fit_idx, val_idx in StratifiedKFold(5, shuffle=True, random_state=4).split(xs, event):
        est = CoxnetSurvivalAnalysis(l1_ratio=0.5, alphas=model.alphas, max_iter=100000).fit(xs[fit_idx], y[fit_idx])
        for k, a in enumerate(model.alphas):
            scores[k] += concordance_index_censored(event[val_idx], time[val_idx], est.predict(xs[val_idx], alpha=a))[0] / 5
    np.testing.assert_allclose(model.cv_scores, scores, atol=1e-9)
    assert model.alpha == model.alphas[int(np.argmax(scores))]


def test_coxnet_path_fraction_is_that_point_of_sksurvs_path():
    """path_fraction f skips the inner CV and takes alphas_[int(len(alphas_) * f)] of the path that
    scikit-survival computes on its own from the standardised data (which may stop before n_alphas
    once the fit saturates); predictions are its own."""
    x, time, event = _cox_data(seed=6)
    model = fit_coxnet(x, time, event, n_alphas=100, alpha_min_ratio=0.01, path_fraction=0.3)
    xs, y = StandardScaler().fit_transform(x), Surv.from_arrays(event=event, time=time)
    ref = CoxnetSurvivalAnalysis(l1_ratio=0.5, n_alphas=100, alpha_min_ratio=0.01, max_iter=100000).fit(xs, y)
    assert model.cv_scores is None and "fixed rule" in model.reason
    alpha = ref.alphas_[int(len(ref.alphas_) * 0.3)]
    assert model.alpha == pytest.approx(alpha)
    x_new, _, _ = _cox_data(n=30, seed=7)
    np.testing.assert_allclose(model.predict(x_new), ref.predict(StandardScaler().fit(x).transform(x_new), alpha=alpha),
                               rtol=1e-6, atol=1e-8)


def test_coxnet_with_few_or_no_events():
    x, time, _ = _cox_data(n=40)
    event = np.zeros(40, bool)
    event[[3, 10, 22]] = True
    few = fit_coxnet(x, time, event)
    assert few.cv_scores is None and "fixed rule" in few.reason and few.alpha == few.alphas[len(few.alphas) // 2]
    # enough events but only 3 censored cases: a 3-fold inner CV
    mostly = fit_coxnet(x, time, np.arange(40) >= 3)
    assert "inner 3-fold CV" in mostly.reason and mostly.cv_scores is not None
    assert np.isfinite(few.predict(x)).all()
    none = fit_coxnet(x, time, np.zeros(40, bool))
    assert "no event" in none.reason
    assert (none.predict(x) == 0).all() and (none.predict_survival(x, [1.0, 10.0]) == 1).all()
    with pytest.raises(ValueError, match="NaN"):
        fit_coxnet(np.where(np.eye(40, 15) > 0, np.nan, x), time, event)
    with pytest.raises(ValueError, match="features"):
        few.predict(x[:, :3])



def test_kronecker_fusion_of_many_modalities_stays_bounded():
    from healnet.baselines import LateFusion

    two = LateFusion(input_channels=[8, 5], modalities=["wsi", "rna"], dim=32)
    four = LateFusion(input_channels=[8, 5, 6, 7], modalities=["wsi", "rna", "cnv", "mutations"], dim=32)
    assert two.to_logits[0].in_features == 33 ** 2  # two modalities: Porpoise's full outer product
    assert four.to_logits[0].in_features == 8 ** 4 <= 4096  # (7 + 1) ** 4
    x = [torch.randn(3, 4, 8), torch.randn(3, 1, 5), torch.randn(3, 1, 6), torch.randn(3, 1, 7)]
    assert four(x).shape == (3, 4)
