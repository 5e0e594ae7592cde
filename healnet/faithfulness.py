"""Does a model's attention point at what drives its prediction, and at what is truly there?

Attention weights are not explanations by construction: a token may be attended and still change
nothing.  So, for the trained model of each cross-validation fold (its ``model.pt`` rebuilt on its
own test cases), this module measures:

* **Faithfulness (any cohort): deletion curves.**  Per test case and modality, remove the top
  k % of its units (WSI patches; omics genes), ranked by a score, and record the change in
  predicted risk ``|risk(removed) - risk(full)|``.  Scores: ``attention`` (the mean over layers,
  heads and latents of the modality's cross-attention, as ``attention.npz`` holds it); ``ig``,
  Integrated Gradients of the risk (a post-hoc attribution of the same model; per unit, summed
  over its channels), oriented along the case's own prediction: removing a unit moves the risk by
  about minus its attribution, so the units that moved this case's risk away from the baseline
  input come first (by |IG| alone, raising and lowering units would be removed together and cancel);
  and ``random`` orders (the floor).  The area under each curve (over the removed fraction,
  divided by the largest fraction: a mean ``|Δ risk|``) is ``deletion_auc``; ``deletion_auc_ratio``
  is it over random's.  A faithful score removes what matters first: its curve rises faster than
  random's.  Attention has no sign, which is part of what is measured.
* **Plausibility (the generated demo, whose truth is known):** ``tumour_auc``, the AUC of a
  score for the patches that lie on the planted tumour texture (tumour share of the patch's
  tissue >= 0.5; per case, averaged over cases with both kinds of patch), and
  ``planted_gene_mean_rank`` / ``planted_gene_auc``, where the planted signal genes fall in the
  ranking of genes by their mean score over the fold's test cases (rank 1 = top).  Scores:
  ``attention``, ``ig`` (signed: towards higher risk) and ``ig_abs`` (its magnitude).  The
  ``random`` rows of these metrics hold their chance values (0.5, and (n + 1) / 2).

Removing a unit: a patch, or a gene when each gene is a token (``omic_tokens: genes``), is masked
out (the model no longer sees it: it gets no attention); a gene that is a channel of the single
omics token (``omic_tokens: single``) is set to 0, its training mean after the fold's z-score.
Attention ranks genes only when they are tokens.  IG integrates from the all-zero input (every
modality at its training mean) with the midpoint rule; ``ig_steps=1`` is the input times the
gradient at half of it (gradient × input, cheaper and cruder).

The model is rebuilt from ``model.pt`` (state dict, keyword arguments, channels, fitted transforms)
and the cohort's inputs; its test cases and their patches are those of ``predictions.tsv`` and
``attention.npz`` (so a subsampled bag is the subsample the model saw), and the rebuilt risks must
match ``predictions.tsv``: a fold whose inputs changed since training is an error, not a figure.

Entry points: :func:`fold_faithfulness` (one fold directory, from Python), :func:`faithfulness_report`
(several models' folds -> ``faithfulness.tsv``, per-fold values, deletion curves and a plot), and
:func:`faithfulness_from_files` (the same from a cohort's pipeline files; the Snakemake rule).
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from preprocessing.io import atomic_path

from .attention_io import Attention, read_attention

log = logging.getLogger(__name__)

FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.5)  # shares of a case's units removed, most important first
METHODS = ("attention", "ig", "random")  # rankings of the deletion curves
TUMOUR_SHARE = 0.5  # a patch is "tumour" when this share of its tissue is planted tumour texture


# ---------------------------------------------------------------------------------------------
# attribution and deletion primitives


def integrated_gradients(forward: Callable[[list[torch.Tensor]], torch.Tensor], inputs: Sequence[torch.Tensor],
                         baselines: Sequence[torch.Tensor] | None = None, *, steps: int = 16,
                         chunk: int = 8) -> list[torch.Tensor]:
    """Integrated Gradients of a scalar output: per input, ``(x - b) * mean_k grad f(b + a_k (x - b))``
    at the midpoints ``a_k = (k + 1/2) / steps`` (exact for f linear or quadratic along the path).

    ``forward`` maps a list of batched inputs (each ``(B, *x.shape)``) to ``(B,)`` outputs; the
    steps go through it ``chunk`` at a time.  Returns attributions shaped like ``inputs``; their
    sum approximates ``f(x) - f(baseline)`` (completeness)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    inputs = [x.detach().float() for x in inputs]
    baselines = [torch.zeros_like(x) for x in inputs] if baselines is None else [b.detach().float() for b in baselines]
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    total = [torch.zeros_like(x) for x in inputs]
    for start in range(0, steps, chunk):
        a = alphas[start:start + chunk]
        path = [(b + a.view(-1, *[1] * x.dim()) * (x - b)).requires_grad_(True) for x, b in zip(inputs, baselines)]
        out = forward(path)
        if out.shape != (len(a),):
            raise ValueError(f"forward must return one value per path point, got shape {tuple(out.shape)}")
        grads = torch.autograd.grad(out.sum(), path, allow_unused=True)
        for t, g in zip(total, grads):
            if g is not None:
                t += g.sum(0)
    return [(x - b) * t / steps for x, b, t in zip(inputs, baselines, total)]


def removal_order(scores: np.ndarray) -> np.ndarray:
    """Unit indices, the highest score first (ties: the earlier unit first)."""
    return np.argsort(-np.asarray(scores, dtype=float), kind="stable")


def removal_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Units removed at each fraction: ``round(f * n)``, at least one, at most ``n``."""
    return [min(n, max(1, int(round(f * n)))) for f in fractions]


def deletion_auc(fractions: Sequence[float], deltas: Sequence[float]) -> float:
    """Area under ``|Δ risk|`` against the removed fraction, from (0, 0) to the largest fraction
    (trapezoids), divided by that fraction: the mean change in risk over the curve."""
    x = np.concatenate([[0.0], np.asarray(fractions, float)])
    y = np.concatenate([[0.0], np.asarray(deltas, float)])
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / x[-1])


def rank_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``scores`` for ``positive`` (ties count half); NaN without both classes."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(np.asarray(scores, float))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# ---------------------------------------------------------------------------------------------
# a fold's model and test cases, rebuilt


@dataclass
class CaseInput:
    """One test case as the model saw it: per modality a float32 (tokens, channels) array or None."""

    case_id: str
    x: list[np.ndarray | None]
    positions: np.ndarray | None = None  # WSI patch positions in [-1, 1] (Fourier-encoded models)
    coords: np.ndarray | None = None  # level-0 px of the WSI patches, in token order
    slides: np.ndarray | None = None  # slide id of each WSI patch
    resampled: bool = False  # its bag was subsampled anew (attention.npz did not list the fold's patches)


@dataclass
class FoldModel:
    """A trained fold rebuilt: the model (eval mode, CPU by default), its config and test cases."""

    fold: int
    architecture: str
    modalities: tuple[str, ...]
    config: object  # healnet.train.TrainConfig of the run (modalities: those of the architecture)
    model: torch.nn.Module
    features: dict[str, list[str]]  # omics modality -> feature ids, in token / channel order
    cases: list[CaseInput]
    risks: dict[str, float]  # predictions.tsv
    rebuild_error: float = float("nan")  # max |rebuilt risk - predictions.tsv risk| over the cases
    channels: list[int] | None = None  # per modality (model.pt input_channels; default: the model's own)
    notes: list[str] = field(default_factory=list)

    @property
    def per_gene_tokens(self) -> bool:
        return getattr(self.config, "omic_tokens", "single") == "genes"

    def units_are_tokens(self, m: int) -> bool:
        """Whether modality m's units (patches, genes) are its tokens (else the channels of one token)."""
        return self.modalities[m] == "wsi" or self.per_gene_tokens


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
    from .data import BagView, LazyBag

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
    from .train import TrainConfig
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


# ---------------------------------------------------------------------------------------------
# one case: risks of variants, attention, IG, deletion


def _batch(fm: FoldModel, case: CaseInput, variants: list[list[np.ndarray | torch.Tensor | None]],
           keep: list[list[np.ndarray | None]] | None = None):
    """Model inputs for variants of one case: per variant the modality arrays (None = absent) and
    optionally per modality a keep mask over its tokens."""
    tensors, masks = [], []
    present = torch.zeros(len(variants), len(fm.modalities), dtype=torch.bool)
    channels = fm.channels or getattr(fm.model, "input_channels", None)
    for m, name in enumerate(fm.modalities):
        items = [v[m] for v in variants]
        fixed = len(fm.features.get(name, [])) if name != "wsi" and fm.per_gene_tokens else 1  # absent: as many
        n = max([len(x) for x in items if x is not None] + [fixed])  # tokens as the model takes, all masked
        c = next((x.shape[1] for x in items if x is not None), channels[m] if channels else 1)
        t = torch.zeros(len(variants), n, c)
        mask = torch.zeros(len(variants), n, dtype=torch.bool)
        for b, x in enumerate(items):
            if x is None:
                continue
            t[b, : len(x)] = torch.as_tensor(x, dtype=torch.float32)
            mask[b, : len(x)] = True if keep is None or keep[b][m] is None else torch.as_tensor(keep[b][m])
            present[b, m] = bool(mask[b].any())
        tensors.append(t)
        masks.append(mask)
    positions = [None] * len(fm.modalities)
    if fm.config.fourier_wsi and "wsi" in fm.modalities and case.positions is not None:
        k = fm.modalities.index("wsi")
        p = torch.as_tensor(case.positions, dtype=torch.float32)
        positions[k] = torch.zeros(len(variants), tensors[k].shape[1], 2)
        positions[k][:, : len(p)] = p
    return tensors, masks, present, positions


def case_risks(fm: FoldModel, case: CaseInput, variants: list[list], keep: list[list] | None = None,
               chunk: int = 16) -> np.ndarray:
    """Predicted risk of each input variant of ``case`` (eval mode, no gradient)."""
    from .survival import risk_from_logits

    device = next(fm.model.parameters()).device
    out = []
    with torch.no_grad():
        for s in range(0, len(variants), chunk):
            tensors, masks, present, positions = _batch(fm, case, variants[s:s + chunk],
                                                        None if keep is None else keep[s:s + chunk])
            logits = fm.model([t.to(device) for t in tensors], masks=[k.to(device) for k in masks],
                              present=present.to(device),
                              positions=[None if p is None else p.to(device) for p in positions])
            out.append(risk_from_logits(logits.float()).cpu().numpy())
    return np.concatenate(out)


def case_attention(fm: FoldModel, case: CaseInput) -> dict[int, np.ndarray]:
    """Per modality with tokens as units: attention per token, the mean over layers, heads and
    latents of the modality's cross-attention (what ``attention.npz`` holds).  Empty when the
    model returns no attention (baselines)."""
    device = next(fm.model.parameters()).device
    tensors, masks, present, positions = _batch(fm, case, [case.x])
    with torch.no_grad():
        out = fm.model([t.to(device) for t in tensors], masks=[k.to(device) for k in masks],
                       present=present.to(device), positions=[None if p is None else p.to(device) for p in positions],
                       return_attention=True)
    if not isinstance(out, tuple) or not isinstance(out[1], list):
        return {}
    scores = {}
    for m, x in enumerate(case.x):
        per_layer = [w["attn"].float().mean(dim=(1, 2))[0] for w in out[1] if w["modality"] == m]
        if x is not None and per_layer and fm.units_are_tokens(m):
            scores[m] = torch.stack(per_layer).mean(0)[: len(x)].cpu().numpy()
    return scores


def case_ig(fm: FoldModel, case: CaseInput, steps: int = 16) -> dict[int, np.ndarray]:
    """Per present modality: signed Integrated Gradients of the risk per unit (a patch or gene
    token: summed over its channels; a gene channel of a single token: as is), from all-zero inputs."""
    from .survival import risk_from_logits

    device = next(fm.model.parameters()).device
    tensors, masks, present, positions = _batch(fm, case, [case.x])
    on = [m for m, x in enumerate(case.x) if x is not None]

    def forward(path: list[torch.Tensor]) -> torch.Tensor:
        b = path[0].shape[0]
        full = [t.expand(b, *t.shape[1:]).to(device) for t in tensors]
        for m, p in zip(on, path):
            full[m] = p.to(device)
        logits = fm.model(full, masks=[k.expand(b, -1).to(device) for k in masks],
                          present=present.expand(b, -1).to(device),
                          positions=[None if p is None else p.expand(b, -1, -1).to(device) for p in positions])
        return risk_from_logits(logits.float())

    attributions = integrated_gradients(forward, [tensors[m][0] for m in on], steps=steps)
    out = {}
    for m, a in zip(on, attributions):
        a = a[: len(case.x[m])].cpu().numpy()
        out[m] = a.sum(axis=1) if fm.units_are_tokens(m) else a[0]
    return out


def case_deletion(fm: FoldModel, case: CaseInput, m: int, orders: Mapping[str, Sequence[np.ndarray]],
                  fractions: Sequence[float], full_risk: float) -> dict[str, np.ndarray]:
    """``|risk(top units removed) - full risk|`` per ranking and fraction, the mean over a ranking's
    orders (random has several): {method: (len(fractions),)}."""
    x = case.x[m]
    tokens = fm.units_are_tokens(m)
    n = len(x) if tokens else x.shape[1]
    counts = removal_counts(n, fractions)
    variants, keep, labels = [], [], []
    for method, method_orders in orders.items():
        for order in method_orders:
            for j, k in enumerate(counts):
                removed = np.asarray(order[:k])
                v = list(case.x)
                kp: list[np.ndarray | None] = [None] * len(case.x)
                if tokens:
                    mask = np.ones(n, bool)
                    mask[removed] = False
                    kp[m] = mask
                else:
                    y = x.copy()
                    y[:, removed] = 0.0
                    v[m] = y
                variants.append(v)
                keep.append(kp)
                labels.append((method, j))
    risks = case_risks(fm, case, variants, keep)
    out = {method: np.zeros(len(fractions)) for method in orders}
    for (method, j), r in zip(labels, risks):
        out[method][j] += abs(r - full_risk) / len(orders[method])
    return out


# ---------------------------------------------------------------------------------------------
# ground truth of the demo


@dataclass
class PlantedTruth:
    """Where the demo planted its signal (``generators.demo``: truth_tumour.npz, truth_genes.tsv)."""

    tumour: dict[str, np.ndarray] = field(default_factory=dict)  # slide id -> tumour share per cell
    tissue: dict[str, np.ndarray] = field(default_factory=dict)  # slide id -> tissue share per cell
    cell_px: int = 16
    genes: set[str] = field(default_factory=set)  # planted gene ids, without Ensembl version

    @classmethod
    def read(cls, tumour: str | os.PathLike | None = None, genes: str | os.PathLike | None = None) -> "PlantedTruth":
        from preprocessing.truth import read_truth_tumour

        truth = cls()
        if tumour and os.path.exists(tumour):
            truth.tumour, truth.tissue, truth.cell_px = read_truth_tumour(tumour)
        if genes and os.path.exists(genes):
            table = pd.read_csv(genes, sep="\t")
            truth.genes = {str(g).split(".")[0] for g in table["gene_id"]}
        return truth

    def patch_tumour_share(self, slide: str, coords: np.ndarray, size0: int) -> np.ndarray:
        """Tumour share of each patch's tissue (cells whose centre lies in the patch; 0 without tissue)."""
        tumour, tissue, cell = self.tumour[slide], self.tissue[slide], self.cell_px
        out = np.zeros(len(coords))
        for i, (x, y) in enumerate(np.asarray(coords)):
            j0, i0 = int(np.ceil(x / cell - 0.5)), int(np.ceil(y / cell - 0.5))
            j1, i1 = int(np.ceil((x + size0) / cell - 0.5)), int(np.ceil((y + size0) / cell - 0.5))
            t, s = tumour[max(i0, 0):i1, max(j0, 0):j1].sum(), tissue[max(i0, 0):i1, max(j0, 0):j1].sum()
            out[i] = t / s if s > 0 else 0.0
        return out


def _patch_size(coords: np.ndarray) -> int:
    """A patch's side in level-0 px when no patch file tells: the grid step of the coordinates."""
    steps = [np.diff(np.unique(coords[:, a])) for a in (0, 1)]
    steps = np.concatenate([s[s > 0] for s in steps])
    return int(np.gcd.reduce(steps.astype(np.int64))) if steps.size else 256


def case_tumour_labels(case: CaseInput, truth: PlantedTruth, patch_sizes: Mapping[str, int] | None = None
                       ) -> np.ndarray | None:
    """Per WSI patch of ``case``: on planted tumour (True) or not; None when its slides have no truth."""
    from .data import case_of_slide

    if case.coords is None or not truth.tumour:
        return None
    slides = case.slides
    if slides is None:  # an in-memory bag: the case's only slide with a truth, if it has one
        mine = [s for s in truth.tumour if case_of_slide(s) == case.case_id]
        if len(mine) != 1:
            return None
        slides = np.full(len(case.coords), mine[0])
    if any(s not in truth.tumour for s in set(slides.tolist())):
        return None
    share = np.zeros(len(case.coords))
    for s in set(slides.tolist()):
        on = slides == s
        size = (patch_sizes or {}).get(s) or _patch_size(case.coords[on])
        share[on] = truth.patch_tumour_share(s, case.coords[on], int(size))
    return share >= TUMOUR_SHARE


# ---------------------------------------------------------------------------------------------
# one fold


def fold_faithfulness(fold: FoldModel | str | os.PathLike, cohort=None, *, truth: PlantedTruth | None = None,
                      patch_sizes: Mapping[str, int] | None = None, fractions: Sequence[float] = FRACTIONS,
                      ig_steps: int = 16, n_random: int = 3, max_cases: int | None = 16,
                      seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Deletion curves, IG and (with ``truth``) plausibility for one fold (a :class:`FoldModel`, or
    a fold directory rebuilt on ``cohort`` with :func:`load_fold`).

    Returns (metrics, curves).  metrics: fold, architecture, modality, method, metric, value,
    n_cases (metrics: ``deletion_auc``, ``deletion_auc_ratio``, ``tumour_auc``,
    ``planted_gene_mean_rank``, ``planted_gene_auc``, ``n_genes``, ``n_planted_genes``,
    ``rebuild_error``; see the module docstring).  curves:
    fold, architecture, modality, method, fraction, delta_risk (mean over the cases), n_cases.
    Deterministic for a fixed ``seed``."""
    fm = fold if isinstance(fold, FoldModel) else load_fold(fold, cohort, max_cases=max_cases)
    fractions = tuple(float(f) for f in fractions)
    if not fractions or any(not 0 < f <= 1 for f in fractions) or list(fractions) != sorted(fractions):
        raise ValueError(f"fractions must increase within (0, 1], got {list(fractions)}")
    cases = fm.cases[: max_cases if max_cases is not None else None]
    names = fm.modalities
    deltas: dict[tuple[int, str], list[np.ndarray]] = {}
    tumour_aucs: dict[str, list[float]] = {}
    gene_scores: dict[tuple[int, str], list[np.ndarray]] = {}
    for i, case in enumerate(cases):
        full = float(case_risks(fm, case, [case.x])[0])
        att = case_attention(fm, case)
        ig = case_ig(fm, case, ig_steps)
        for m, x in enumerate(case.x):
            if x is None or m not in ig:
                continue
            n = len(x) if fm.units_are_tokens(m) else x.shape[1]
            direction = 1.0 if ig[m].sum() >= 0 else -1.0  # where the modality moved the risk from the baseline
            scores = {"ig": direction * ig[m]}
            if m in att:
                scores = {"attention": att[m], **scores}
            rng = np.random.default_rng([seed, fm.fold, i, m])
            if n >= 2:
                orders = {k: [removal_order(v)] for k, v in scores.items()}
                orders["random"] = [rng.permutation(n) for _ in range(n_random)]
                for method, d in case_deletion(fm, case, m, orders, fractions, full).items():
                    deltas.setdefault((m, method), []).append(d)
            ranked = {"ig": ig[m], "ig_abs": np.abs(ig[m])}
            if m in att:
                ranked = {"attention": att[m], **ranked}
            if names[m] == "wsi" and truth is not None:
                labels = case_tumour_labels(case, truth, patch_sizes)
                if labels is not None:
                    for method, s in ranked.items():
                        tumour_aucs.setdefault(method, []).append(rank_auc(s, labels))
            elif names[m] != "wsi":
                for method, s in ranked.items():
                    gene_scores.setdefault((m, method), []).append(np.asarray(s, float))
    rows, curves = [], []

    def row(modality, method, metric, value, n):
        rows.append({"fold": fm.fold, "architecture": fm.architecture, "modality": modality, "method": method,
                     "metric": metric, "value": float(value), "n_cases": int(n)})

    for m, name in enumerate(names):
        aucs = {}
        for method in METHODS:
            per_case = deltas.get((m, method))
            if not per_case:
                continue
            curve = np.mean(per_case, axis=0)
            for f, d in zip(fractions, curve):
                curves.append({"fold": fm.fold, "architecture": fm.architecture, "modality": name, "method": method,
                               "fraction": f, "delta_risk": float(d), "n_cases": len(per_case)})
            aucs[method] = deletion_auc(fractions, curve)
            row(name, method, "deletion_auc", aucs[method], len(per_case))
        for method, auc in aucs.items():
            if "random" in aucs and aucs["random"] > 0:
                row(name, method, "deletion_auc_ratio", auc / aucs["random"], len(deltas[(m, method)]))
        if name == "wsi":
            scored = 0  # cases with tumour and other patches
            for method, values in tumour_aucs.items():
                ok = [v for v in values if np.isfinite(v)]
                if ok:
                    row(name, method, "tumour_auc", np.mean(ok), len(ok))
                    scored = max(scored, len(ok))
            if scored:
                row(name, "random", "tumour_auc", 0.5, scored)
        elif truth is not None and truth.genes and name in fm.features:
            genes = np.array([g.split(".")[0] for g in fm.features[name]])
            planted = np.isin(genes, list(truth.genes))
            if planted.any():
                from scipy.stats import rankdata

                n_cases = 0
                for method in ("attention", "ig", "ig_abs"):
                    per_case = gene_scores.get((m, method))
                    if not per_case:
                        continue
                    mean = np.mean(per_case, axis=0)
                    rank = rankdata(-mean)  # 1 = the highest mean score
                    n_cases = len(per_case)
                    row(name, method, "planted_gene_mean_rank", rank[planted].mean(), n_cases)
                    row(name, method, "planted_gene_auc", rank_auc(mean, planted), n_cases)
                if n_cases:
                    row(name, "random", "planted_gene_mean_rank", (len(genes) + 1) / 2, n_cases)
                    row(name, "random", "planted_gene_auc", 0.5, n_cases)
                    row(name, "-", "n_genes", len(genes), n_cases)
                    row(name, "-", "n_planted_genes", int(planted.sum()), n_cases)
    row("-", "-", "rebuild_error", fm.rebuild_error, len(cases))
    return pd.DataFrame(rows), pd.DataFrame(curves)


# ---------------------------------------------------------------------------------------------
# all folds of several models -> tables and plot


def summarise(per_fold: pd.DataFrame) -> pd.DataFrame:
    """Mean and SD over folds per (model, modality, method, metric); n_cases summed over folds."""
    columns = ["model", "modality", "method", "metric", "mean", "std", "n_folds", "n_cases"]
    if per_fold.empty:
        return pd.DataFrame(columns=columns)
    out = (per_fold.groupby(["model", "modality", "method", "metric"], sort=False)
           .agg(mean=("value", "mean"), std=("value", "std"), n_folds=("fold", "nunique"), n_cases=("n_cases", "sum"))
           .reset_index())
    return out[columns]


def plot_faithfulness(curves: pd.DataFrame, summary: pd.DataFrame, out_png: str | os.PathLike) -> None:
    """One row per model: a deletion-curve panel per modality (mean over folds, band = min-max over
    folds, AUC in the legend), then the plausibility against the planted truth where there is one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"attention": "tab:red", "ig": "tab:blue", "random": "grey", "ig_abs": "tab:purple"}
    models = list(dict.fromkeys(curves["model"])) if len(curves) else []
    plaus = summary[summary["metric"].isin(["tumour_auc", "planted_gene_auc"])] if len(summary) else summary
    ncols = max([curves.loc[curves["model"] == m, "modality"].nunique() for m in models] + [1]) + 1
    fig, axes = plt.subplots(max(len(models), 1), ncols, figsize=(4.2 * ncols, 3.4 * max(len(models), 1)),
                             squeeze=False)
    if not models:
        axes[0, 0].text(0.5, 0.5, "no deletion curves (no torch model with test cases)", ha="center")
    for r, model in enumerate(models):
        mine = curves[curves["model"] == model]
        for c, modality in enumerate(dict.fromkeys(mine["modality"])):
            ax = axes[r, c]
            for method in METHODS:
                d = mine[(mine["modality"] == modality) & (mine["method"] == method)]
                if d.empty:
                    continue
                g = d.groupby("fraction")["delta_risk"]
                x = np.concatenate([[0.0], g.mean().index.to_numpy()])
                mean, lo, hi = (np.concatenate([[0.0], s.to_numpy()]) for s in (g.mean(), g.min(), g.max()))
                auc = summary[(summary["model"] == model) & (summary["modality"] == modality)
                              & (summary["method"] == method) & (summary["metric"] == "deletion_auc")]["mean"]
                label = {"ig": "IG (post-hoc)"}.get(method, method)
                label += f" (AUC {auc.iloc[0]:.3g})" if len(auc) else ""
                ax.plot(x * 100, mean, "o-", ms=3, color=colours[method], label=label)
                ax.fill_between(x * 100, lo, hi, color=colours[method], alpha=0.15, lw=0)
            unit = "patches" if modality == "wsi" else "genes"
            ax.set_title(f"{model}: {modality}", fontsize=9)
            ax.set_xlabel(f"top {unit} removed (%)")
            ax.set_ylabel("mean |Δ risk|")
            ax.legend(fontsize=7)
        ax = axes[r, ncols - 1]
        p = plaus[plaus["model"] == model] if len(plaus) else plaus
        if len(p):
            labels = [f"{row.modality} {row.method}\n{'tumour' if row.metric == 'tumour_auc' else 'genes'}"
                      for row in p.itertuples()]
            ax.barh(range(len(p)), p["mean"], xerr=p["std"].fillna(0), color=[colours.get(mm, "grey")
                                                                                for mm in p["method"]])
            ax.set_yticks(range(len(p)), labels, fontsize=6)
            ax.axvline(0.5, color="k", lw=0.8, ls="--")
            ax.set_xlim(0, 1)
            ax.set_xlabel("AUC for the planted truth")
            ax.set_title(f"{model}: plausibility", fontsize=9)
        else:
            ax.axis("off")
            ax.text(0.5, 0.5, "no planted truth\n(the generated demo has one)", ha="center", va="center", fontsize=8)
        for c in range(mine["modality"].nunique(), ncols - 1):
            axes[r, c].axis("off")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def faithfulness_report(fold_dirs: Mapping[str, Sequence[str | os.PathLike]], cohort, out_table, out_folds,
                        out_curves, out_png, *, truth: PlantedTruth | None = None,
                        patch_sizes: Mapping[str, int] | None = None, fractions: Sequence[float] = FRACTIONS,
                        ig_steps: int = 16, n_random: int = 3, max_cases: int | None = 16,
                        seed: int = 0) -> pd.DataFrame:
    """:func:`fold_faithfulness` of every fold of every model (``{model: [fold dirs]}``) into
    ``out_table`` (:func:`summarise`), ``out_folds`` (per fold), ``out_curves`` and ``out_png``
    (:func:`plot_faithfulness`); every file written atomically.  Returns the summary.  A model that
    is not a torch model (coxnet) is skipped with a log line."""
    per_fold, curves = [], []
    for model, dirs in fold_dirs.items():
        for d in dirs:
            try:
                fm = load_fold(d, cohort, max_cases=max_cases)
            except ValueError as e:
                if "not a torch model" not in str(e):
                    raise
                log.info("%s: %s", model, e)
                continue
            metrics, curve = fold_faithfulness(fm, truth=truth, patch_sizes=patch_sizes, fractions=fractions,
                                               ig_steps=ig_steps, n_random=n_random, max_cases=max_cases, seed=seed)
            per_fold.append(metrics.assign(model=model))
            curves.append(curve.assign(model=model))
    per_fold = pd.concat(per_fold, ignore_index=True) if per_fold else pd.DataFrame(
        columns=["fold", "architecture", "modality", "method", "metric", "value", "n_cases", "model"])
    curves = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(
        columns=["fold", "architecture", "modality", "method", "fraction", "delta_risk", "n_cases", "model"])
    summary = summarise(per_fold)
    lead = ["model", "fold"]
    def led(t: pd.DataFrame) -> pd.DataFrame:
        return t[lead + [c for c in t.columns if c not in lead]]

    for table, path in ((summary, out_table), (led(per_fold), out_folds), (led(curves), out_curves)):
        with atomic_path(path) as tmp:
            table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    plot_faithfulness(curves, summary, out_png)
    log.info("faithfulness: %d models, %d folds", len(fold_dirs), per_fold["fold"].nunique() if len(per_fold) else 0)
    return summary


def faithfulness_from_files(fold_dirs: Mapping[str, Sequence[str]], clinical: str, feature_stores: Sequence[str],
                            omics: Mapping[str, str], outputs: Mapping[str, str], *,
                            patch_files: Mapping[str, str] | None = None, truth_tumour: str | None = None,
                            truth_genes: str | None = None, **kwargs) -> pd.DataFrame:
    """:func:`faithfulness_report` on a cohort's pipeline files (the Snakemake rule calls this).
    ``outputs``: table, folds, curves, png.  ``patch_files`` (slide id -> patches h5) give the
    patch sizes for the planted truth; ``truth_*`` are the demo's truth files (absent: no
    plausibility)."""
    from .data import open_cohort
    from preprocessing.tiling import read_coords

    cohort = open_cohort(clinical, list(feature_stores), dict(omics))
    sizes = {}
    for sid, path in (patch_files or {}).items():
        sizes[sid] = int(read_coords(path)[1]["patch_size_level0"])
    truth = PlantedTruth.read(truth_tumour, truth_genes) if (truth_tumour or truth_genes) else None
    return faithfulness_report(fold_dirs, cohort, outputs["table"], outputs["folds"], outputs["curves"],
                               outputs["png"], truth=truth, patch_sizes=sizes, **kwargs)
