"""healnet.faithfulness and the modules it builds on (attribution, fold_model, fold_rebuild,
planted_truth): Integrated Gradients against analytic attributions, deletion curves on a model
whose attention is planted, and on a HEALNet trained on a cohort whose signal is planted (tumour
patches, signal genes): the rebuilt fold reproduces its predictions, removing the top-attended
patches changes the risk more than removing random ones, and the planted truth is scored."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score
from torch import nn

from healnet.data import Cohort
from healnet.attribution import deletion_auc, integrated_gradients, rank_auc, removal_counts, removal_order
from healnet.faithfulness import faithfulness_report, fold_faithfulness
from healnet.fold_model import CaseInput, FoldModel, case_attention, case_deletion, case_ig
from healnet.fold_rebuild import load_fold
from healnet.planted_truth import PlantedTruth
from healnet.train import train_fold
from healnet.train_config import TrainConfig

# ---------------------------------------------------------------------------------------------
# primitives


def test_integrated_gradients_of_a_linear_function_is_the_analytic_attribution():
    torch.manual_seed(0)
    w1, w2 = torch.randn(5, 3), torch.randn(4)
    x1, x2 = torch.randn(5, 3), torch.randn(4)
    b1, b2 = torch.randn(5, 3), torch.zeros(4)

    def f(xs):
        return (xs[0] * w1).sum(dim=(1, 2)) + (xs[1] * w2).sum(dim=1) + 3.0

    for steps in (1, 5, 16):
        a1, a2 = integrated_gradients(f, [x1, x2], [b1, b2], steps=steps, chunk=4)
        torch.testing.assert_close(a1, w1 * (x1 - b1))
        torch.testing.assert_close(a2, w2 * x2)


def test_integrated_gradients_of_a_quadratic_is_exact_and_complete():
    """f = (w . x)^2 from 0: the gradient is linear along the path, so the midpoint rule is exact:
    IG_i = w_i x_i (w . x), summing to f(x) - f(0)."""
    torch.manual_seed(1)
    w, x = torch.randn(6), torch.randn(6)

    def f(xs):
        return (xs[0] @ w) ** 2

    (a,) = integrated_gradients(f, [x], steps=3)
    torch.testing.assert_close(a, w * x * (w @ x))
    assert a.sum().item() == pytest.approx(((w @ x) ** 2).item(), rel=1e-5)
    # a saturating function: completeness holds better with more steps, not exactly
    g = lambda xs: torch.tanh(3 * xs[0] @ w)  # noqa: E731
    errors = [abs(integrated_gradients(g, [x], steps=s)[0].sum().item() - torch.tanh(3 * x @ w).item())
              for s in (2, 32)]
    assert errors[1] < errors[0] and errors[1] < 0.02


def test_removal_order_counts_and_areas():
    assert removal_order(np.array([0.1, 0.5, 0.5, 0.2])).tolist() == [1, 2, 3, 0]
    assert removal_counts(60, (0.05, 0.1, 0.5, 1.0)) == [3, 6, 30, 60]
    assert removal_counts(4, (0.05, 0.5)) == [1, 2]
    assert deletion_auc((0.5, 1.0), (1.0, 1.0)) == pytest.approx(0.75)  # (0,0) -> (0.5,1) -> (1,1)
    assert deletion_auc((0.1, 0.2), (0.2, 0.4)) == pytest.approx(0.2)
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=50).round(1), rng.random(50) < 0.3  # ties among the scores
    assert rank_auc(s, y) == pytest.approx(roc_auc_score(y, s))
    assert np.isnan(rank_auc(s, np.zeros(50, bool)))


def test_planted_truth_maps_cells_to_patches():
    tumour = np.zeros((4, 6), np.float32)
    tumour[:2, :2] = 1.0  # the top-left 2 × 2 cells of 128 px: the first 256-px patch
    tumour[2:, 4:] = 0.5
    truth = PlantedTruth(tumour={"S": tumour}, tissue={"S": np.ones((4, 6), np.float32)}, cell_px=128)
    share = truth.patch_tumour_share("S", np.array([[0, 0], [256, 0], [512, 256], [384, 0]]), 256)
    np.testing.assert_allclose(share, [1.0, 0.0, 0.5, 0.0])


# ---------------------------------------------------------------------------------------------
# a model whose attention is planted


class PlantedAttention(nn.Module):
    """One modality of patches: attention = softmax(4 x[:, 0]) over the kept patches; risk logit =
    the attention-weighted mean of x[:, 0].  So the most attended patches are those that carry the
    risk, by construction."""

    input_channels = [2]

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, tensors, masks=None, present=None, positions=None, return_attention=False):
        x = tensors[0]
        mask = masks[0] if masks is not None else torch.ones(x.shape[:2], dtype=torch.bool)
        a = torch.softmax((4 * x[..., 0]).masked_fill(~mask, float("-inf")), dim=1)
        a = torch.nan_to_num(a)  # a bag with every patch removed
        logit = (a * x[..., 0]).sum(1, keepdim=True) + self.dummy
        if return_attention:
            return logit, [{"layer": 0, "modality": 0, "attn": a[:, None, None, :]}]
        return logit


def _planted_fold(n_cases: int = 6, n_patches: int = 40) -> FoldModel:
    rng = np.random.default_rng(3)
    cases = []
    for i in range(n_cases):
        x = rng.normal(0, 1, (n_patches, 2)).astype(np.float32)
        cases.append(CaseInput(f"C{i}", [x]))
    cfg = TrainConfig(modalities=("wsi",), n_bins=1)
    return FoldModel(0, "planted", ("wsi",), cfg, PlantedAttention().eval(), {}, cases, {})


def test_deletion_of_planted_attention_beats_random():
    fm = _planted_fold()
    fractions = (0.05, 0.1, 0.2)
    for case in fm.cases:
        att = case_attention(fm, case)[0]
        x0 = case.x[0][:, 0]
        expected = np.exp(4 * x0) / np.exp(4 * x0).sum()
        np.testing.assert_allclose(att, expected, rtol=1e-5)
        rng = np.random.default_rng(0)
        orders = {"attention": [removal_order(att)], "random": [rng.permutation(len(x0)) for _ in range(5)]}
        full = float(torch.sigmoid(torch.tensor((expected * x0).sum())) - 1)  # risk of one bin: sigmoid(l) - 1
        deltas = case_deletion(fm, case, 0, orders, fractions, full)
        # removing the top 5 % by hand: the same change in risk
        keep = np.ones(len(x0), bool)
        keep[removal_order(att)[:2]] = False
        a = np.exp(4 * x0[keep]) / np.exp(4 * x0[keep]).sum()
        by_hand = abs(float(torch.sigmoid(torch.tensor((a * x0[keep]).sum())) - 1) - full)
        assert deltas["attention"][0] == pytest.approx(by_hand, rel=1e-4)
        assert (deltas["attention"] > deltas["random"]).all()
    metrics, curves = fold_faithfulness(fm, fractions=fractions, n_random=5)
    auc = metrics[metrics["metric"] == "deletion_auc"].set_index("method")["value"]
    assert auc["attention"] > 2 * auc["random"] and auc["ig"] > auc["random"]
    assert set(curves["method"]) == {"attention", "ig", "random"} and (curves["n_cases"] == len(fm.cases)).all()


def test_attribution_and_deletion_of_gene_channels():
    """A single omics token whose risk logit is w . x: IG of the risk (sigmoid(l) - 1) is
    proportional to w * x, and removing a gene sets it to 0 (its training mean)."""

    class Linear(nn.Module):
        input_channels = [6]

        def __init__(self, w):
            super().__init__()
            self.w = nn.Parameter(torch.as_tensor(w))

        def forward(self, tensors, masks=None, present=None, positions=None, return_attention=False):
            return (tensors[0][:, 0] @ self.w)[:, None]

    w = np.array([2.0, -1.0, 0.0, 0.5, 0.0, 0.1], np.float32)
    x = np.array([[1.0, 1.0, 3.0, -2.0, 1.0, 1.0]], np.float32)
    fm = FoldModel(0, "linear", ("rna",), TrainConfig(modalities=("rna",), n_bins=1), Linear(w).eval(),
                   {"rna": [f"g{j}" for j in range(6)]}, [CaseInput("A", [x])], {})
    ig = case_ig(fm, fm.cases[0], steps=64)[0]
    assert ig.shape == (6,) and ig[2] == ig[4] == 0.0
    np.testing.assert_allclose(ig / ig[0], (w * x[0]) / (w[0] * x[0, 0]), rtol=2e-3)
    full = float(torch.sigmoid(torch.tensor(float(w @ x[0]))) - 1)
    deltas = case_deletion(fm, fm.cases[0], 0, {"ig": [removal_order(np.abs(ig))]}, (1 / 6, 0.5), full)
    gone = x[0].copy()
    gone[[0]] = 0
    removed = float(torch.sigmoid(torch.tensor(float(w @ gone))) - 1)
    assert deltas["ig"][0] == pytest.approx(abs(removed - full), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# HEALNet trained on a planted cohort

N, GRID_W, GRID_H, DIM, N_GENES, SIGNAL = 64, 10, 6, 8, 24, (0, 1, 2, 3)


def planted_cohort(seed: int = 0, shift: float = 1.5):
    """Cases of one slide each: a 10 × 6 grid of 256-px patches, a share tf ~ U(0.1, 0.9) of them
    on "tumour" (channels 0-3 raised by ``shift``), and 24 genes of which 4 carry an independent
    signal b.  Risk = z(tf) + b; times follow exp(-risk).  Returns the cohort and the planted
    truth (a tumour grid of one 256-px cell per patch, and the signal genes)."""
    rng = np.random.default_rng(seed)
    ids = [f"TCGA-PL-{i:04d}" for i in range(N)]
    tf, b = rng.uniform(0.1, 0.9, N), rng.standard_normal(N)
    risk = (tf - 0.5) / 0.23 + b
    t = 1000 * np.exp(-risk + 0.2 * rng.standard_normal(N))
    event = (rng.random(N) < 0.8).astype(int)
    time = np.maximum(1, np.round(np.where(event == 1, t, t * rng.uniform(0.5, 1, N))))
    coords = np.array([(x * 256, y * 256) for y in range(GRID_H) for x in range(GRID_W)], np.float32)
    bags, positions, tumour, tissue = {}, {}, {}, {}
    for i, c in enumerate(ids):
        on = np.zeros(len(coords), bool)
        on[rng.choice(len(coords), int(round(tf[i] * len(coords))), replace=False)] = True
        x = rng.standard_normal((len(coords), DIM)).astype(np.float32)
        x[on, :4] += shift
        bags[c], positions[c] = x, coords.copy()
        slide = f"{c}-01Z-00-DX1.PLANTED"
        tumour[slide] = on.reshape(GRID_H, GRID_W).astype(np.float32)
        tissue[slide] = np.ones((GRID_H, GRID_W), np.float32)
    genes = np.exp(rng.normal(3, 0.3, (N, N_GENES)))
    genes[:, list(SIGNAL)] *= np.exp(0.8 * b)[:, None]
    names = [f"ENSG{j:011d}" for j in range(N_GENES)]
    omics = pd.DataFrame(genes, index=ids, columns=names)
    survival = pd.DataFrame({"time": time, "event": event}, index=pd.Index(ids, name="case_id"))
    truth = PlantedTruth(tumour=tumour, tissue=tissue, cell_px=256, genes={names[j] for j in SIGNAL})
    return Cohort(survival, bags, positions, {"rna": omics}), truth


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cohort, truth = planted_cohort(shift=3.0)
    ids = cohort.case_ids
    del cohort.bags[ids[50]], cohort.positions[ids[50]]  # test cases without a slide, without RNA
    cohort.omics["rna"] = cohort.omics["rna"].drop(index=[ids[51]])
    split = {"train": ids[:40], "val": ids[40:44], "test": ids[44:]}
    cfg = TrainConfig(epochs=20, lr=2e-3, omic_tokens="genes", early_stopping="none", device="cpu", seed=0,
                      missing_fractions=(0.5,))
    out = tmp_path_factory.mktemp("fold") / "fold0"
    metrics = train_fold(cohort, split, cfg, out, fold=0)
    return cohort, truth, out, metrics


def test_rebuilt_fold_reproduces_its_predictions(trained):
    cohort, _, out, metrics = trained
    assert metrics["c_index"] > 0.6  # it learned something to explain
    fm = load_fold(out, cohort)
    assert [c.case_id for c in fm.cases] == cohort.case_ids[44:]
    assert fm.rebuild_error < 1e-4
    assert fm.per_gene_tokens and len(fm.features["rna"]) == N_GENES
    saved = np.load(out / "attention.npz")
    case = fm.cases[0]
    np.testing.assert_allclose(case_attention(fm, case)[0], saved[f"wsi_attention/{case.case_id}"], atol=1e-6)
    # inputs that are not those of training are refused, not explained
    changed = Cohort(cohort.survival, {c: b + 0.5 for c, b in cohort.bags.items()}, cohort.positions, cohort.omics)
    with pytest.raises(ValueError, match="not those the fold was trained on"):
        load_fold(out, changed)


def test_top_attended_deletion_changes_risk_more_than_random(trained):
    """Over seeds 0-4 of this cohort (shift 3, 20 epochs) the ratio to random was 1.7-7.4 for
    attention and 5.1-7.7 for IG; signed IG's tumour AUC 0.84-0.89, attention's gene AUC 0.78-0.86.
    (Attention's tumour AUC was 0.18-0.49 there: it looked at stroma, which is faithful, not
    plausible; so it is reported, not asserted.)"""
    cohort, truth, out, _ = trained
    metrics, curves = fold_faithfulness(out, cohort, truth=truth, n_random=3, ig_steps=16, max_cases=20)
    value = metrics.set_index(["modality", "method", "metric"])["value"]
    assert value["wsi", "attention", "deletion_auc"] > 1.5 * value["wsi", "random", "deletion_auc"]
    assert value["wsi", "attention", "deletion_auc_ratio"] > 1.5 and value["wsi", "ig", "deletion_auc_ratio"] > 1.5
    wsi = curves[curves["modality"] == "wsi"].pivot(index="fraction", columns="method", values="delta_risk")
    assert (wsi["attention"] > wsi["random"]).all() and (wsi["ig"] > wsi["random"]).all()
    # plausibility against the planted truth
    assert value["wsi", "ig", "tumour_auc"] > 0.75  # signed IG: tumour patches raise the risk
    assert 0 <= value["wsi", "attention", "tumour_auc"] <= 1 and value["wsi", "random", "tumour_auc"] == 0.5
    assert value["rna", "attention", "planted_gene_auc"] > 0.7
    chance = value["rna", "random", "planted_gene_mean_rank"]
    assert chance == 12.5 and value["rna", "attention", "planted_gene_mean_rank"] < chance
    assert value["rna", "-", "n_planted_genes"] == len(SIGNAL)
    again, _ = fold_faithfulness(out, cohort, truth=truth, n_random=3, ig_steps=16, max_cases=20)
    pd.testing.assert_frame_equal(metrics, again)  # deterministic for a fixed seed


def test_faithfulness_report_files(trained, tmp_path):
    cohort, truth, out, _ = trained
    paths = {k: tmp_path / n for k, n in (("table", "faithfulness.tsv"), ("folds", "faithfulness_folds.tsv"),
                                          ("curves", "deletion_curves.tsv"), ("png", "faithfulness.png"))}
    summary = faithfulness_report({"healnet": [out]}, cohort, paths["table"], paths["folds"], paths["curves"],
                                  paths["png"], truth=truth, max_cases=6, ig_steps=8, fractions=(0.1, 0.3))
    table = pd.read_csv(paths["table"], sep="\t")
    assert list(table.columns) == ["model", "modality", "method", "metric", "mean", "std", "n_folds", "n_cases"]
    assert len(table) == len(summary) and (table["model"] == "healnet").all()
    assert {"deletion_auc", "deletion_auc_ratio", "tumour_auc", "planted_gene_mean_rank"} <= set(table["metric"])
    curves = pd.read_csv(paths["curves"], sep="\t")
    assert sorted(curves["fraction"].unique()) == [0.1, 0.3] and (curves["n_cases"] == 6).all()
    image = np.asarray(Image.open(paths["png"]).convert("RGB"))
    assert min(image.shape[:2]) > 200 and len(np.unique(image.reshape(-1, 3), axis=0)) > 30
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
