"""Train one architecture (HEALNet by default) on one cross-validation fold and predict its test cases.

Everything that learns from data (omic normalisation and feature selection, the WSI channel
statistics, survival bins, bin weights) is fitted on the fold's training cases only; the
validation cases drive early stopping and the best weights are deep-copied.  Bags may be lazy
(:class:`healnet.data.LazyBag`): a batch reads its cases' patches from disk when it is built (in a
background thread, one batch ahead), so a cohort larger than memory trains.

Outputs of :func:`train_fold` (in ``out_dir``):

* ``model.pt``        weights (or the fitted Cox model), transforms, bin edges, config;
* ``predictions.tsv`` case_id, fold, risk, time, event, has_<modality>, and ``surv_0..surv_{K-1}``:
  the predicted probability of surviving past the end of bin k (times in ``metrics.json``
  ``surv_times``: the interior bin edges, then the longest training follow-up for the last bin);
* ``missing.tsv``     test-case risks under modality ablations: scenario ``full``, ``no_<m>`` (m
  removed from every test case) and ``mixed`` (each test case loses one modality drawn uniformly,
  seeded), then the missing-modality curves: scenario ``<removed>@<fraction>`` (each modality and
  each pair removed from that fraction of the test cases, :func:`curve_scenarios`); columns
  case_id, fold, scenario, removed, fraction (empty for the first three), dropped, risk, time, event;
* ``attention.npz``   HEALNet only: per test case the WSI per-patch attention (mean over heads,
  latents and layers of the WSI cross-attention) with the level-0 coordinates of the patches
  used, and per omics modality the per-feature attention with feature names when
  ``omic_tokens == "genes"``; with ``omic_tokens == "single"`` an omics profile is ONE token, so
  per-gene attention is not defined and only a note is stored (see ``notes``);
* ``metrics.json``, ``history.tsv``.
"""
from __future__ import annotations

import copy
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from preprocessing.io import atomic_path, write_text_atomic

from .data import BagView, Cohort, LazyBag, OmicTransform, wsi_standardisation
from .survival import (bin_weights, concordance, cox_loss, discretise, fit_bins, nll_loss, risk_from_logits,
                       survival_from_logits)
from .zoo import build_model, healnet_kwargs, is_healnet, model_modalities, requested_modalities, training_overrides

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    modalities: tuple[str, ...] = ("wsi", "rna")
    architecture: str = "healnet"  # see healnet.zoo: healnet, healnet-<modality>, snn, abmil, early-fusion, ...
    # defaults chosen on the four development cohorts (benchmarks/real_omics.py; README "Training protocol")
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3  # peak of the one-cycle schedule
    weight_decay: float = 0.0  # decoupled (AdamW) weight decay
    l1: float = 1e-3  # weight of the L1 penalty on weight matrices
    patience: int = 10  # with early stopping: epochs without a better validation score before stopping
    # "none": train the whole one-cycle schedule, the validation cases joining the training (default: on the
    # development cohorts both early-stopping rules chose too early an epoch); "loss": stop on the data term
    # of the training objective (bin-weighted NLL) on the validation cases; "c_index": on their c-index
    early_stopping: str = "none"
    n_bins: int = 4
    alpha: float = 0.4  # weight of the uncensored term in the survival NLL
    cox_weight: float = 1.0  # weight of the Cox partial likelihood of the risk score (ranking), added to the NLL
    max_patches: int | None = 2048  # a larger bag is subsampled (seeded, once per fold) to this many patches
    omic_top_k: int | None = None  # keep k features of each omics table (ranked by omic_select); None: all
    omic_select: str = "variance"  # rank for omic_top_k: "variance", or "cox" (univariate Cox score, in-fold)
    omic_tokens: str = "single"  # "single": one token whose channels are the genes; "genes": one token per gene
    log_omics: tuple[str, ...] = ("rna",)  # omics that get log2(x + 1) before the z-score, where no value is < 0
    fourier_wsi: bool = False  # Fourier-encode patch coordinates
    tie_layers: bool = False  # HEALNet weight_tie_layers (layers 1..depth-1 share weights)
    snn: bool = False  # self-normalising (SELU + AlphaDropout) feed-forward blocks
    model: dict = field(default_factory=dict)  # HEALNet keyword arguments (win over tie_layers / snn)
    baselines: dict = field(default_factory=dict)  # per baseline name: its builder's keyword arguments
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:1"...; bf16 autocast on cuda
    prefetch: bool = True  # build the next batch (read its bags) in a background thread
    seed: int = 0
    # test-time missing-modality curves (missing.tsv, healnet.evaluate.missing_curves): each modality, and
    # each pair, removed from these fractions of the test cases
    missing_fractions: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    # trained with missingness: {"removed": "rna" or "wsi+rna", "fraction": f} removes it from that share of the
    # training cases AND of the test cases (healnet.missing_curves.trained_curves); None: complete data
    train_missing: dict | None = None
    tune_trials: int = 0  # > 0: Optuna search of that many trials per fold on its inner validation split (healnet.tune)

    def __post_init__(self):
        if self.early_stopping not in ("loss", "c_index", "none"):
            raise ValueError(f"early_stopping must be 'loss', 'c_index' or 'none', got {self.early_stopping!r}")
        if self.omic_top_k is not None and (isinstance(self.omic_top_k, bool) or not isinstance(self.omic_top_k, int)
                                            or self.omic_top_k < 1):
            raise ValueError(f"omic_top_k must be a positive number of features or null (every feature), "
                             f"got {self.omic_top_k!r}")
        if self.omic_select not in ("variance", "cox"):
            raise ValueError(f"omic_select must be 'variance' or 'cox', got {self.omic_select!r}")
        if self.omic_tokens not in ("single", "genes"):
            raise ValueError(f"omic_tokens must be 'single' or 'genes', got {self.omic_tokens!r}")
        if any(not 0 < f <= 1 for f in self.missing_fractions):
            raise ValueError(f"missing_fractions must lie in (0, 1], got {list(self.missing_fractions)}")
        self.modalities, self.log_omics = tuple(self.modalities), tuple(self.log_omics)
        self.missing_fractions = tuple(float(f) for f in self.missing_fractions)


HEALNET_DEFAULTS = {"depth": 2, "num_latents": 16, "latent_dim": 32, "cross_heads": 1, "latent_heads": 4,
                    "attn_dropout": 0.3, "ff_dropout": 0.3}


@dataclass
class FoldData:
    """Inputs of one subset (train, val or test) in modality order, unpadded."""

    case_ids: list[str]
    inputs: list[list]  # per modality, per case: tokens × channels (array or BagView), or None when absent
    positions: list[np.ndarray | None]  # WSI patch positions scaled to [-1, 1], per case (kept patches)
    labels: np.ndarray
    events: np.ndarray
    times: np.ndarray
    coords: list[np.ndarray | None] = field(default_factory=list)  # level-0 px coordinates of the kept patches


def prepare_fold(cohort: Cohort, split: dict[str, list[str]], cfg: TrainConfig):
    """Fit the fold's transforms on its training cases and build the three subsets.

    WSI bags are not read here beyond the streaming statistics pass over the training bags: each
    subset holds :class:`BagView` s (kept rows + the fold's statistics) that read on demand."""
    train_ids = [c for c in split["train"] if c in cohort.survival.index]
    if not train_ids:
        raise ValueError("prepare_fold: no training case has a survival time")
    surv = cohort.survival
    edges = fit_bins(surv.loc[train_ids, "time"].to_numpy(), surv.loc[train_ids, "event"].to_numpy(), cfg.n_bins)
    transforms = {}
    for m in cfg.modalities:
        if m != "wsi" and m in cohort.omics:
            table = cohort.omics[m]
            fitted_on = table.index.intersection(train_ids)
            if len(fitted_on):
                transforms[m] = OmicTransform(top_k=cfg.omic_top_k, select=cfg.omic_select,
                                              log_transform=m in cfg.log_omics, name=m).fit(
                    table.loc[fitted_on], surv.loc[fitted_on, "time"].to_numpy(), surv.loc[fitted_on, "event"].to_numpy())
    if "wsi" in cfg.modalities:
        stats = wsi_standardisation(cohort.bags[c] for c in train_ids if c in cohort.bags)
        if stats is not None:
            transforms["wsi"] = stats
    rng = np.random.default_rng(cfg.seed)

    def build(ids: list[str]) -> FoldData:
        ids = [c for c in ids if c in surv.index]
        inputs, positions, coords, kept = [], [], [], {}
        for m in cfg.modalities:
            column = []
            for c in ids:
                if m == "wsi":
                    bag = cohort.bags.get(c)
                    if bag is not None and cfg.max_patches and len(bag) > cfg.max_patches:
                        kept[c] = np.sort(rng.choice(len(bag), cfg.max_patches, replace=False))
                    mean, std = transforms.get("wsi", (None, None))
                    column.append(None if bag is None else BagView(bag, kept.get(c), mean, std))
                elif m in transforms and c in cohort.omics[m].index:
                    x = transforms[m].transform(cohort.omics[m].loc[[c]])[0]
                    column.append(x[None, :] if cfg.omic_tokens == "single" else x[:, None])
                else:
                    column.append(None)
            inputs.append(column)
        for c in ids:
            raw = pos = cohort.positions.get(c)
            if pos is not None and len(pos):
                span = np.maximum(pos.max(0) - pos.min(0), 1.0)
                pos = (pos - pos.min(0)) / span * 2 - 1
            if pos is not None and c in kept:  # the positions of the subsampled patches
                pos, raw = pos[kept[c]], raw[kept[c]]
            positions.append(pos)
            coords.append(raw)
        times, events = np.array(surv.loc[ids, "time"], dtype=float), np.array(surv.loc[ids, "event"], dtype=np.int64)
        return FoldData(ids, inputs, positions, discretise(times, edges), events, times, coords)

    subsets = {name: build(split[name]) for name in ("train", "val", "test")}
    return subsets, edges, transforms


def collate(data: FoldData, index: np.ndarray, channels: list[int], wsi: int | None = 0,
            drop: np.ndarray | None = None):
    """Pad each modality's bags to the longest in the batch; absent ones become a masked zero token.

    ``wsi`` is the position of the WSI modality, whose patch positions are padded alongside it.
    ``drop`` (n_cases, M) bool: treat those (case, modality) inputs as absent (they are not read).
    """
    tensors, masks, positions = [], [], None
    present = torch.zeros(len(index), len(channels), dtype=torch.bool)
    for m, column in enumerate(data.inputs):
        items = [None if drop is not None and drop[i, m] else column[i] for i in index]
        lengths = [len(x) for x in items if x is not None]
        if not lengths and m != wsi:  # omics have a fixed token count: keep it when the whole batch lacks them
            lengths = [next((len(x) for x in column if x is not None), 1)]
        n = max(lengths + [1])
        t = torch.zeros(len(index), n, channels[m])
        mask = torch.zeros(len(index), n, dtype=torch.bool)
        for b, x in enumerate(items):
            if x is not None and len(x):
                x = x.load() if isinstance(x, BagView) else np.asarray(x, np.float32)
                t[b, : len(x)] = torch.from_numpy(x)
                mask[b, : len(x)] = True
                present[b, m] = True
        tensors.append(t)
        masks.append(mask)
        if m == wsi and data.positions:
            positions = torch.zeros(len(index), n, 2)
            for b, i in enumerate(index):
                p = data.positions[i]
                if p is not None and items[b] is not None:
                    positions[b, : len(items[b])] = torch.from_numpy(np.asarray(p[: len(items[b])], np.float32))
    return tensors, masks, present, positions


def _batches(data: FoldData, batches: list[np.ndarray], channels, cfg: TrainConfig, drop=None):
    """Collated batches in order; with ``cfg.prefetch`` the next one is built in a background thread."""
    wsi = cfg.modalities.index("wsi") if "wsi" in cfg.modalities else None

    def make(index):
        return collate(data, index, channels, wsi, drop)

    if not cfg.prefetch or len(batches) < 2:
        for index in batches:
            yield index, make(index)
        return
    threads = torch.get_num_threads()  # OpenMP settings are per thread: the worker gets the caller's
    with ThreadPoolExecutor(max_workers=1, initializer=torch.set_num_threads, initargs=(threads,)) as pool:
        pending = pool.submit(make, batches[0])
        for k, index in enumerate(batches):
            batch = pending.result()
            if k + 1 < len(batches):
                pending = pool.submit(make, batches[k + 1])
            yield index, batch


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def _run(model, batch, cfg: TrainConfig, device: torch.device, **kwargs):
    tensors, masks, present, positions = batch
    pos = [positions.to(device) if cfg.fourier_wsi and m == "wsi" else None for m in cfg.modalities]
    with _autocast(device):
        out = model([t.to(device) for t in tensors], masks=[k.to(device) for k in masks], present=present.to(device),
                    positions=pos, **kwargs)
    if isinstance(out, tuple):
        return (out[0].float(), *out[1:])
    return out.float()


def _chunks(n: int, size: int) -> list[np.ndarray]:
    index = np.arange(n)
    return [index[i:i + size] for i in range(0, n, size)]


def predict(model, data: FoldData, channels, cfg: TrainConfig, drop: np.ndarray | None = None,
            batch_size: int = 32) -> torch.Tensor:
    """Logits (n, K) of every case of ``data`` (eval mode, no gradient), on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for _, batch in _batches(data, _chunks(len(data.case_ids), batch_size), channels, cfg, drop):
            out.append(_run(model, batch, cfg, device).cpu())
    return torch.cat(out) if out else torch.zeros(0, cfg.n_bins)


def evaluate_loss(model, data: FoldData, channels, cfg: TrainConfig,
                  weights: torch.Tensor | None = None) -> tuple[float, np.ndarray]:
    """The data term of the training objective on ``data`` (the bin-weighted NLL) and the risks.  The
    L1 term is left out: it does not depend on the data and only shrinks, so it would always favour
    the last epoch."""
    logits = predict(model, data, channels, cfg)
    loss = nll_loss(logits, torch.from_numpy(data.labels), torch.from_numpy(data.events), alpha=cfg.alpha,
                    weights=None if weights is None else weights.cpu())
    return float(loss), risk_from_logits(logits).numpy()


def missing_scenarios(n_cases: int, modalities: tuple[str, ...], seed: int) -> list[tuple[str, str, np.ndarray]]:
    """(scenario, dropped modality per case, drop mask (n, M)): ``full``, ``no_<m>`` and ``mixed``
    (each case loses one modality drawn uniformly, seeded)."""
    M = len(modalities)
    out = [("full", np.array([""] * n_cases, dtype=object), np.zeros((n_cases, M), bool))]
    for m, name in enumerate(modalities):
        drop = np.zeros((n_cases, M), bool)
        drop[:, m] = True
        out.append((f"no_{name}", np.array([name] * n_cases, dtype=object), drop))
    pick = np.random.default_rng(seed).integers(0, M, size=n_cases)
    drop = np.zeros((n_cases, M), bool)
    drop[np.arange(n_cases), pick] = True
    out.append(("mixed", np.array([modalities[k] for k in pick], dtype=object), drop))
    return out


def removal_sets(modalities: tuple[str, ...]) -> list[tuple[str, ...]]:
    """What a missing-modality curve removes: each modality alone, and each pair of them (with two or
    more modalities; a model of one modality has no curve: without it nothing is left)."""
    if len(modalities) < 2:
        return []
    singles = [(m,) for m in modalities]
    pairs = [(a, b) for i, a in enumerate(modalities) for b in modalities[i + 1:]]
    return singles + pairs


def curve_scenarios(case_ids: list[str], modalities: tuple[str, ...], fractions: Sequence[float],
                    seed: int) -> list[tuple[str, str, float, np.ndarray, np.ndarray]]:
    """Per removal set and fraction f: (scenario ``"<set>@<f>"``, set name, f, dropped modality per
    case, drop mask (n, M)).  ``round(f * n)`` cases lose the set's modality; for a pair each of them
    loses one of the two (alternating), so no case is left with nothing.  The cases are the first of
    one seeded permutation per set, so they are nested: those missing at 30 % include those at 10 %."""
    n, out = len(case_ids), []
    for removed in removal_sets(modalities):
        name = "+".join(removed)
        order = np.random.default_rng([seed, *map(ord, name)]).permutation(n)
        for f in fractions:
            chosen = order[: int(round(f * n))]
            which = np.array([modalities.index(removed[k % len(removed)]) for k in range(len(chosen))], dtype=int)
            drop = np.zeros((n, len(modalities)), bool)
            drop[chosen, which] = True
            dropped = np.array([""] * n, dtype=object)
            dropped[chosen] = [modalities[k] for k in which]
            out.append((f"{name}@{f:g}", name, float(f), dropped, drop))
    return out


def _trained_missing(case_ids: list[str], modalities: tuple[str, ...], setting: dict | None,
                     seed: int) -> np.ndarray | None:
    """The drop mask of ``cfg.train_missing`` for these cases (None when unset)."""
    if not setting:
        return None
    removed, fraction = setting["removed"], float(setting["fraction"])
    if any(m not in modalities for m in removed.split("+")):
        raise ValueError(f"train_missing removes {removed!r}, not among the model's modalities {list(modalities)}")
    for name, _, f, _, drop in curve_scenarios(case_ids, modalities, (fraction,), seed):
        if name == f"{removed}@{fraction:g}":
            return drop
    raise ValueError(f"train_missing: {removed!r} is not a removal set of {list(modalities)} "
                     f"(one modality, or two joined by '+', in the configured order)")


def _missing_risks(risk_of, test: FoldData, modalities: tuple[str, ...], cfg: TrainConfig, fold: int):
    """(scenario, removed, fraction, dropped, risk) for :func:`missing_scenarios` and the curves;
    ``risk_of(drop)`` predicts the test cases with those inputs treated as absent."""
    seed, n = cfg.seed + fold, len(test.case_ids)
    rows = [(name, "", np.nan, dropped, risk_of(drop)) for name, dropped, drop in missing_scenarios(n, modalities, seed)]
    return rows + [(name, removed, f, dropped, risk_of(drop)) for name, removed, f, dropped, drop
                   in curve_scenarios(test.case_ids, modalities, cfg.missing_fractions, seed)]


def attention_maps(model, data: FoldData, channels, cfg: TrainConfig, transforms: dict,
                   batch_size: int = 8) -> dict[str, np.ndarray]:
    """Arrays for ``attention.npz``: per test case, per-patch WSI attention and per-feature omics
    attention, each the mean over heads, latents and layers of that modality's cross-attention."""
    model.eval()
    device = next(model.parameters()).device
    arrays: dict[str, np.ndarray] = {"case_ids": np.array(data.case_ids, dtype=str)}
    notes = {"attention": "mean over heads, latents and layers of the modality's cross-attention weights"}
    for m in cfg.modalities:
        if m != "wsi" and cfg.omic_tokens == "single":
            notes[m] = ("omic_tokens='single': the profile is one token, so per-gene attention is not defined "
                        "(use omic_tokens='genes')")
        elif m != "wsi" and m in transforms:
            arrays[f"{m}_features"] = np.array(transforms[m].columns, dtype=str)
    with torch.no_grad():
        for index, batch in _batches(data, _chunks(len(data.case_ids), batch_size), channels, cfg):
            _, weights = _run(model, batch, cfg, device, return_attention=True)
            for k, m in enumerate(cfg.modalities):
                if m != "wsi" and cfg.omic_tokens == "single":
                    continue
                per_layer = [w["attn"].float().mean(dim=(1, 2)) for w in weights if w["modality"] == k]
                mean = torch.stack(per_layer).mean(0).cpu().numpy()  # (b, tokens)
                for b, i in enumerate(index):
                    x = data.inputs[k][i]
                    if x is None or not batch[2][b, k]:
                        continue
                    c = data.case_ids[i]
                    arrays[f"{m}_attention/{c}"] = mean[b, : len(x)].astype(np.float32)
                    if m == "wsi" and data.coords and data.coords[i] is not None:
                        arrays[f"wsi_coords/{c}"] = np.round(data.coords[i][: len(x)]).astype(np.int64)
                    if m == "wsi" and isinstance(x, BagView) and isinstance(x.bag, LazyBag):
                        arrays[f"slide/{c}"] = x.bag.slide_ids(x.rows).astype(str)
    arrays["notes"] = np.array(json.dumps(notes))
    return arrays


def _write_outputs(out_dir, *, checkpoint: dict, history: list[dict], predictions: pd.DataFrame,
                   missing: pd.DataFrame, attention: dict[str, np.ndarray], metrics: dict) -> None:
    out = Path(out_dir)
    with atomic_path(out / "model.pt") as tmp:
        torch.save(checkpoint, tmp)
    with atomic_path(out / "history.tsv") as tmp:
        pd.DataFrame(history, columns=["epoch", "train_loss", "val_loss", "val_c_index"]).to_csv(
            tmp, sep="\t", index=False)
    with atomic_path(out / "predictions.tsv") as tmp:
        predictions.to_csv(tmp, sep="\t", index=False)
    with atomic_path(out / "missing.tsv") as tmp:
        missing.to_csv(tmp, sep="\t", index=False)
    with atomic_path(out / "attention.npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **attention)
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=1))


def _fold_tables(test: FoldData, fold: int, modalities, risk: np.ndarray, surv: np.ndarray,
                 missing_risks: list[tuple[str, str, float, np.ndarray, np.ndarray]]):
    has = {f"has_{m}": [x is not None for x in col] for m, col in zip(modalities, test.inputs)}
    predictions = pd.DataFrame({"case_id": test.case_ids, "fold": fold, "risk": risk, "time": test.times,
                                "event": test.events, **has,
                                **{f"surv_{k}": surv[:, k] for k in range(surv.shape[1])}})
    missing = pd.concat([pd.DataFrame({"case_id": test.case_ids, "fold": fold, "scenario": name, "removed": removed,
                                       "fraction": f, "dropped": dropped, "risk": r, "time": test.times,
                                       "event": test.events})
                         for name, removed, f, dropped, r in missing_risks], ignore_index=True)
    return predictions, missing


def train_fold(cohort: Cohort, split: dict[str, list[str]], cfg: TrainConfig, out_dir: str | os.PathLike | None = None,
               fold: int = 0) -> dict:
    """Train ``cfg.architecture`` on ``split['train']``, stop early on ``split['val']``, predict ``split['test']``.

    Writes the outputs listed in the module docstring to ``out_dir`` when given; returns the metrics.
    """
    tuned = None
    if cfg.tune_trials and cfg.architecture != "coxnet":  # in-fold search on split["val"] only (healnet.tune)
        from .tune import tuned_config
        cfg, tuned = tuned_config(cohort, split, cfg, fold)
    cfg = replace(cfg, **training_overrides(cfg.architecture))  # e.g. healnet_genes: one token per gene
    torch.manual_seed(cfg.seed)
    run_cfg = replace(cfg, modalities=model_modalities(cfg.architecture, cfg.modalities))
    if cfg.architecture == "coxnet":
        return _train_coxnet(cohort, split, run_cfg, out_dir, fold)
    if cfg.early_stopping == "none":  # nothing to choose on the validation cases: they join the training
        split = {**split, "train": sorted({*split["train"], *split["val"]})}
    subsets, edges, transforms = prepare_fold(cohort, split, run_cfg)
    train, val, test = subsets["train"], subsets["val"], subsets["test"]
    modalities = run_cfg.modalities
    channels = []
    for k, m in enumerate(modalities):
        widths = [x.shape[1] for sub in subsets.values() for x in sub.inputs[k] if x is not None]
        if not widths:
            raise ValueError(f"fold {fold}: modality {m!r} has no data in any case")
        channels.append(widths[0])
    healnet = is_healnet(cfg.architecture)
    tokens = [None if m == "wsi" else next(len(x) for sub in subsets.values() for x in sub.inputs[k] if x is not None)
              for k, m in enumerate(modalities)]  # omics: features per case (1 token, or one per gene)
    if healnet:
        model_kwargs = {**HEALNET_DEFAULTS, "weight_tie_layers": cfg.tie_layers, "snn": cfg.snn, **cfg.model}
        if cfg.omic_tokens == "genes":  # one token per gene: each gets a learned identity
            model_kwargs.setdefault("num_tokens", tokens)
    else:  # baseline builders ignore keywords they do not take; omics widths come from input_tokens
        model_kwargs = {**cfg.model, "input_tokens": tokens, **cfg.baselines.get(cfg.architecture, {})}
    axes = [2 if (cfg.fourier_wsi and m == "wsi") else 0 for m in modalities]
    device = _device(cfg)
    model = build_model(cfg.architecture, input_channels=channels, modalities=list(modalities), num_classes=cfg.n_bins,
                        input_axes=axes, fourier_encode=cfg.fourier_wsi, **model_kwargs).to(device)
    train_drop, test_drop = (_trained_missing(sub.case_ids, modalities, cfg.train_missing, cfg.seed + fold)
                             for sub in (train, test))
    weights = torch.as_tensor(bin_weights(train.labels, cfg.n_bins), dtype=torch.float32, device=device)
    steps = max(1, int(np.ceil(len(train.case_ids) / cfg.batch_size)))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    best = (-np.inf, -1, copy.deepcopy(model.state_dict()))  # (score: higher is better, epoch, weights)
    history = []
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(train.case_ids), generator=gen).numpy()
        total = 0.0
        batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        for index, batch in _batches(train, batches, channels, run_cfg, train_drop):
            logits = _run(model, batch, run_cfg, device)
            loss = nll_loss(logits, torch.from_numpy(train.labels[index]).to(device),
                            torch.from_numpy(train.events[index]).to(device),
                            alpha=cfg.alpha, weights=weights) + cfg.l1 * model.l1_penalty()
            if cfg.cox_weight:
                loss = loss + cfg.cox_weight * cox_loss(risk_from_logits(logits), torch.from_numpy(train.times[index]),
                                                        torch.from_numpy(train.events[index]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(index)
        if cfg.early_stopping == "none":  # the validation cases are training cases now: nothing to score
            history.append({"epoch": epoch, "train_loss": total / len(order), "val_loss": np.nan, "val_c_index": np.nan})
            continue
        val_loss, val_risk = evaluate_loss(model, val, channels, run_cfg, weights)
        val_c = concordance(val.times, val.events, val_risk) if val.events.sum() else float("nan")
        history.append({"epoch": epoch, "train_loss": total / len(order), "val_loss": val_loss, "val_c_index": val_c})
        log.debug("%s fold %d epoch %d: train loss %.4f, validation loss %.4f, c-index %.3f", cfg.architecture,
                  fold, epoch, total / len(order), val_loss, val_c)
        score = val_c if cfg.early_stopping == "c_index" and not np.isnan(val_c) else -val_loss
        if score > best[0] + 1e-4:
            best = (score, epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= cfg.patience:
            break
    if cfg.early_stopping == "none":
        best = (np.nan, len(history) - 1, None)  # the weights of the last epoch, as they are
    else:
        model.load_state_dict(best[2])
    logits = predict(model, test, channels, run_cfg, test_drop)
    test_risk = risk_from_logits(logits).numpy()
    c_index = concordance(test.times, test.events, test_risk) if test.events.sum() else float("nan")
    scenarios = _missing_risks(lambda drop: risk_from_logits(predict(model, test, channels, run_cfg, drop)).numpy(),
                               test, modalities, cfg, fold)
    surv = survival_from_logits(logits.double()).numpy()
    predictions, missing = _fold_tables(test, fold, modalities, test_risk, surv, scenarios)
    surv_times = _surv_times(edges, train.times)
    metrics = {"fold": fold, "architecture": cfg.architecture, "modalities": list(modalities), "c_index": c_index,
               "n_train": len(train.case_ids), "n_val": len(val.case_ids),
               "n_test": len(test.case_ids), "n_test_events": int(test.events.sum()), "best_epoch": best[1],
               "epochs_run": len(history), "bin_edges": [float(e) for e in edges], "surv_times": surv_times,
               "device": device.type, "omics": _omics_summary(transforms)}
    if tuned is not None:
        metrics["tuned"] = tuned
    log.info("fold %d (%s): c-index %.3f on %d test cases (best epoch %d)", fold, cfg.architecture, c_index,
             len(test.case_ids), best[1])
    if out_dir is not None:
        attention = (attention_maps(model, test, channels, run_cfg, transforms) if healnet else
                     {"notes": np.array(json.dumps({"attention": f"not recorded for {cfg.architecture}"}))})
        state = {k: v.cpu() for k, v in model.state_dict().items()}
        _write_outputs(out_dir, checkpoint={"state_dict": state, "architecture": cfg.architecture,
                                            "modalities": list(modalities), "input_channels": channels,
                                            "model_kwargs": healnet_kwargs(cfg.architecture, model_kwargs)
                                            if healnet else model_kwargs, "config": asdict(cfg),
                                            "bin_edges": edges, "transforms": transforms},
                       history=history, predictions=predictions, missing=missing, attention=attention,
                       metrics=metrics)
    return metrics


def _omics_summary(transforms: dict) -> dict:
    """Per omics modality: whether log2(x + 1) was applied (and why) and the features kept."""
    return {m: t.summary() for m, t in transforms.items() if isinstance(t, OmicTransform)}


def _surv_times(edges: np.ndarray, train_times: np.ndarray) -> list[float]:
    """End of each bin: the interior edges, then the longest training follow-up (the last bin is open)."""
    return [float(e) for e in edges[1:-1]] + [float(np.max(train_times))]


def _omic_widths(*subsets: FoldData) -> list[int]:
    """Features per modality, from whichever subset has a case with it (a small validation split
    may have no case with some modality)."""
    return [max((np.asarray(x).size for sub in subsets for x in sub.inputs[m] if x is not None), default=0)
            for m in range(len(subsets[0].inputs))]


def _omics_matrix(data: FoldData, widths: list[int], drop: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated standardised omics (n, sum of ``widths``) and whether a case has any; an absent
    (or dropped) modality is filled with 0, its training mean."""
    x = np.zeros((len(data.case_ids), sum(widths)), np.float64)
    has = np.zeros(len(data.case_ids), bool)
    start = 0
    for m, (col, w) in enumerate(zip(data.inputs, widths)):
        for i, v in enumerate(col):
            if v is not None and not (drop is not None and drop[i, m]):
                x[i, start:start + w] = np.asarray(v, np.float64).ravel()
                has[i] = True
        start += w
    return x, has


def _train_coxnet(cohort: Cohort, split: dict[str, list[str]], cfg: TrainConfig, out_dir, fold: int) -> dict:
    """Elastic-net Cox on the fold's normalised, selected, concatenated omics.  The transforms and
    bins are those of the fold (fitted on its training cases); with no early stopping to drive
    (fit_coxnet picks its penalty by inner cross-validation) the validation cases join the fit."""
    from .baselines import fit_coxnet  # lazy: the baselines are optional

    subsets, edges, transforms = prepare_fold(cohort, split, replace(cfg, omic_top_k=None))  # its penalty selects
    train, val, test = subsets["train"], subsets["val"], subsets["test"]
    widths = _omic_widths(train, val, test)
    x_fit, has = (np.concatenate(a) for a in zip(_omics_matrix(train, widths), _omics_matrix(val, widths)))
    times, events = np.concatenate([train.times, val.times]), np.concatenate([train.events, val.events])
    if not has.any() or x_fit.shape[1] == 0:
        raise ValueError(f"fold {fold}: coxnet needs omics ({list(cfg.modalities)}) for some training case")
    kwargs = dict(cfg.baselines.get("coxnet", {}))
    fitted = fit_coxnet(x_fit[has], times[has], events[has], seed=cfg.seed, **kwargs)
    surv_times = _surv_times(edges, train.times)
    x_test, _ = _omics_matrix(test, widths)
    risk = np.asarray(fitted.predict(x_test), float)
    surv = np.asarray(fitted.predict_survival(x_test, np.array(surv_times)), float)
    c_index = concordance(test.times, test.events, risk) if test.events.sum() else float("nan")
    scenarios = _missing_risks(lambda drop: np.asarray(fitted.predict(_omics_matrix(test, widths, drop)[0]), float),
                               test, cfg.modalities, cfg, fold)
    predictions, missing = _fold_tables(test, fold, cfg.modalities, risk, surv, scenarios)
    metrics = {"fold": fold, "architecture": "coxnet", "modalities": list(cfg.modalities), "c_index": c_index,
               "n_train": int(has.sum()), "n_val": 0, "n_test": len(test.case_ids),
               "n_test_events": int(test.events.sum()), "best_epoch": -1, "epochs_run": 0,
               "bin_edges": [float(e) for e in edges], "surv_times": surv_times, "device": "cpu",
               "omics": _omics_summary(transforms)}
    if out_dir is not None:
        _write_outputs(out_dir, checkpoint={"coxnet": fitted, "architecture": "coxnet",
                                            "modalities": list(cfg.modalities), "config": asdict(cfg),
                                            "bin_edges": edges, "transforms": transforms},
                       history=[], predictions=predictions, missing=missing,
                       attention={"notes": np.array(json.dumps({"attention": "not defined for coxnet"}))},
                       metrics=metrics)
    return metrics


def config_from_dict(config: dict, **overrides) -> TrainConfig:
    """A :class:`TrainConfig` from the ``train`` block of the pipeline config (its ``models`` list,
    which names the architectures to run, is not a training setting); unknown keys are an error."""
    settings = {k: v for k, v in {**config, **overrides}.items() if k != "models"}
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown train setting(s) {unknown}; known: {sorted(known)}")
    return TrainConfig(**settings)


def train_fold_from_files(clinical: str, feature_stores: list[str], omics: dict[str, str], splits: str, fold: int,
                          out_dir: str | os.PathLike, config: dict, seed: int = 0,
                          architecture: str | None = None) -> dict:
    """:func:`train_fold` on a cohort's pipeline outputs (the Snakemake rule calls this).

    Bags stay on disk (:func:`healnet.data.open_cohort`); only the modalities the architecture
    reads are opened."""
    from .data import bounded_heap, open_cohort
    from .splits import read_splits

    bounded_heap()  # RSS flat while bags stream through (see its docstring)

    cfg = config_from_dict(config, seed=seed, **({"architecture": architecture} if architecture else {}))
    cfg = replace(cfg, modalities=requested_modalities(cfg.architecture, cfg.modalities))
    used = model_modalities(cfg.architecture, cfg.modalities)
    cohort = open_cohort(clinical, feature_stores if "wsi" in used else [],
                         {m: p for m, p in omics.items() if m in used})
    return train_fold(cohort, read_splits(splits)[fold], cfg, out_dir, fold=fold)
