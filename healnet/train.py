"""Train one architecture (HEALNet by default) on one cross-validation fold and predict its test cases.

The fold's inputs come from :func:`healnet.folds.prepare_fold`: everything that learns from data
(omic normalisation and feature selection, the WSI channel statistics, survival bins) is fitted on
the fold's training cases only, and so are the bin weights here; the validation cases drive early
stopping and the best weights are deep-copied.  Bags may be lazy (:class:`healnet.bags.LazyBag`): a
batch reads its cases' patches from disk when it is built (in a background thread, one batch ahead),
so a cohort larger than memory trains.  The ``coxnet`` architecture is fitted by
:func:`healnet.coxnet.train_coxnet`.

Outputs of :func:`train_fold` (in ``out_dir``, written by :func:`healnet.outputs.fold_outputs`):

* ``model.pt``        weights (or the fitted Cox model), transforms, bin edges, config;
* ``predictions.tsv`` case_id, fold, risk, time, event, has_<modality>, and ``surv_0..surv_{K-1}``:
  the predicted probability of surviving past the end of bin k (times in ``metrics.json``
  ``surv_times``: the interior bin edges, then the longest training follow-up for the last bin);
* ``missing.tsv``     test-case risks under modality ablations (:mod:`healnet.missing`): scenario
  ``full``, ``no_<m>`` (m removed from every test case) and ``mixed`` (each test case loses one
  modality drawn uniformly, seeded), then the missing-modality curves: scenario
  ``<removed>@<fraction>`` (each modality and each pair removed from that fraction of the test
  cases, :func:`healnet.missing.curve_scenarios`); columns case_id, fold, scenario, removed,
  fraction (empty for the first three), dropped, risk, time, event;
* ``attention.npz``   (:mod:`healnet.attention_io`) HEALNet only: per test case the WSI per-patch
  attention (mean over heads, latents and layers of the WSI cross-attention) with the level-0
  coordinates of the patches used, and per omics modality the per-feature attention with feature
  names when ``omic_tokens == "genes"``; with ``omic_tokens == "single"`` an omics profile is ONE
  token, so per-gene attention is not defined and only a note is stored (see ``notes``);
* ``metrics.json``, ``history.tsv``.
"""
from __future__ import annotations

import copy
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, replace

import numpy as np
import torch

from .coxnet import train_coxnet
from .bags import BagView, LazyBag
from .data import Cohort
from .folds import FoldData, collate, prepare_fold
from .missing import missing_risks, trained_missing
from .outputs import fold_outputs
from .prior import set_elastic_net_prior
from .survival import bin_weights, concordance, cox_loss, nll_loss, risk_from_logits, survival_from_logits
from .train_config import HEALNET_DEFAULTS, TrainConfig, config_from_dict
from .names import requested_modalities
from .zoo import build_model, healnet_kwargs, is_healnet, model_modalities, training_overrides

log = logging.getLogger(__name__)


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


def attention_record(model, data: FoldData, channels, cfg: TrainConfig, transforms: dict,
                     batch_size: int = 8) -> dict:
    """The content of ``attention.npz`` (keyword arguments of :func:`healnet.attention_io.write_attention`):
    per test case, per-patch WSI attention and per-feature omics attention, each the mean over
    heads, latents and layers of that modality's cross-attention."""
    model.eval()
    device = next(model.parameters()).device
    wsi, coords, slides, genes, omics = {}, {}, {}, {}, {}
    notes = {"attention": "mean over heads, latents and layers of the modality's cross-attention weights"}
    for m in cfg.modalities:
        if m != "wsi" and cfg.omic_tokens == "single":
            notes[m] = ("omic_tokens='single': the profile is one token, so per-gene attention is not defined "
                        "(use omic_tokens='genes')")
        elif m != "wsi" and m in transforms:
            genes[m] = transforms[m].columns
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
                    c, values = data.case_ids[i], mean[b, : len(x)]
                    if m != "wsi":
                        omics.setdefault(m, {})[c] = values
                        continue
                    wsi[c] = values
                    if data.coords and data.coords[i] is not None:
                        coords[c] = np.round(data.coords[i][: len(x)])
                    if isinstance(x, BagView) and isinstance(x.bag, LazyBag):
                        slides[c] = x.bag.slide_ids(x.rows)
    return {"case_ids": data.case_ids, "wsi": wsi, "coords": coords, "slides": slides, "genes": genes,
            "omics": omics, "notes": notes}


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
        return train_coxnet(cohort, split, run_cfg, out_dir, fold)
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
        if cfg.omic_prior == "elastic_net":  # a fixed in-fold elastic net under the logits (healnet.prior)
            model_kwargs["prior_widths"] = [0 if m == "wsi" else channels[k] * tokens[k]
                                            for k, m in enumerate(modalities)]
    else:  # baseline builders ignore keywords they do not take; omics widths come from input_tokens
        model_kwargs = {**cfg.model, "input_tokens": tokens, **cfg.baselines.get(cfg.architecture, {})}
    axes = [2 if (cfg.fourier_wsi and m == "wsi") else 0 for m in modalities]
    device = _device(cfg)
    model = build_model(cfg.architecture, input_channels=channels, modalities=list(modalities), num_classes=cfg.n_bins,
                        input_axes=axes, fourier_encode=cfg.fourier_wsi, **model_kwargs).to(device)
    prior = None
    if getattr(model, "prior", None) is not None:
        prior = set_elastic_net_prior(model.prior, train, names=modalities, seed=cfg.seed)
    train_drop, test_drop = (trained_missing(sub.case_ids, modalities, cfg.train_missing, cfg.seed + fold)
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
    scenarios = missing_risks(lambda drop: risk_from_logits(predict(model, test, channels, run_cfg, drop)).numpy(),
                              test.case_ids, modalities, cfg.missing_fractions, cfg.seed + fold)
    return fold_outputs(
        out_dir, fold=fold, architecture=cfg.architecture, modalities=modalities, test=test,
        risk=risk_from_logits(logits).numpy(), surv=survival_from_logits(logits.double()).numpy(),
        scenarios=scenarios, edges=edges, train_times=train.times, transforms=transforms,
        n_train=len(train.case_ids), n_val=len(val.case_ids), best_epoch=best[1], epochs_run=len(history),
        device=device.type, history=history, tuned=tuned, prior=prior,
        checkpoint=lambda: {"state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                            "architecture": cfg.architecture, "modalities": list(modalities),
                            "input_channels": channels,
                            "model_kwargs": healnet_kwargs(cfg.architecture, model_kwargs) if healnet else model_kwargs,
                            "config": asdict(cfg), "bin_edges": edges, "transforms": transforms},
        attention=lambda: (attention_record(model, test, channels, run_cfg, transforms) if healnet else
                           {"notes": {"attention": f"not recorded for {cfg.architecture}"}}))


def train_fold_from_files(clinical: str, feature_stores: list[str], omics: dict[str, str], splits: str, fold: int,
                          out_dir: str | os.PathLike, config: dict, seed: int = 0,
                          architecture: str | None = None) -> dict:
    """:func:`train_fold` on a cohort's pipeline outputs (the Snakemake rule calls this).

    Bags stay on disk (:func:`healnet.data.open_cohort`); only the modalities the architecture
    reads are opened."""
    from .bags import bounded_heap
    from .data import open_cohort
    from .splits import read_splits

    bounded_heap()  # RSS flat while bags stream through (see its docstring)

    cfg = config_from_dict(config, seed=seed, **({"architecture": architecture} if architecture else {}))
    cfg = replace(cfg, modalities=requested_modalities(cfg.architecture, cfg.modalities))
    used = model_modalities(cfg.architecture, cfg.modalities)
    cohort = open_cohort(clinical, feature_stores if "wsi" in used else [],
                         {m: p for m, p in omics.items() if m in used})
    return train_fold(cohort, read_splits(splits)[fold], cfg, out_dir, fold=fold)
