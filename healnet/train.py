"""Train HEALNet on one cross-validation fold and predict its test cases.

Everything that learns from data (omic normalisation and feature selection, survival bins,
bin weights) is fitted on the fold's training cases only; the validation cases drive early
stopping and the best weights are deep-copied.
"""
from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from preprocessing.io import atomic_path, write_text_atomic

from .data import Cohort, OmicTransform
from .model import HEALNet
from .survival import bin_weights, concordance, discretise, fit_bins, nll_loss, risk_from_logits

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    modalities: tuple[str, ...] = ("wsi", "rna")
    epochs: int = 20
    batch_size: int = 8
    lr: float = 5e-3  # peak of the one-cycle schedule
    l1: float = 1e-5  # weight of the L1 penalty on weight matrices
    patience: int = 10  # epochs without a better validation loss before stopping
    n_bins: int = 4
    alpha: float = 0.4  # weight of the uncensored term in the survival NLL
    max_patches: int = 2048  # a larger bag is subsampled (seeded) to this many patches
    omic_top_k: int = 64
    omic_tokens: str = "single"  # "single": one token whose channels are the genes; "genes": one token per gene
    fourier_wsi: bool = False  # Fourier-encode patch coordinates
    model: dict = field(default_factory=dict)  # HEALNet keyword arguments
    seed: int = 0


@dataclass
class FoldData:
    """Tensors of one subset (train, val or test) in modality order, unpadded."""

    case_ids: list[str]
    inputs: list[list[np.ndarray | None]]  # per modality, per case: tokens × channels, or None when absent
    positions: list[np.ndarray | None]  # WSI patch positions scaled to [-1, 1], per case
    labels: np.ndarray
    events: np.ndarray
    times: np.ndarray


def prepare_fold(cohort: Cohort, split: dict[str, list[str]], cfg: TrainConfig):
    """Fit the fold's transforms on its training cases and build the three subsets."""
    train_ids = [c for c in split["train"] if c in cohort.survival.index]
    surv = cohort.survival
    edges = fit_bins(surv.loc[train_ids, "time"].to_numpy(), surv.loc[train_ids, "event"].to_numpy(), cfg.n_bins)
    transforms = {}
    for m in cfg.modalities:
        if m != "wsi" and m in cohort.omics:
            table = cohort.omics[m]
            fitted_on = table.index.intersection(train_ids)
            transforms[m] = OmicTransform(top_k=cfg.omic_top_k).fit(table.loc[fitted_on])
    train_bags = [cohort.bags[c] for c in train_ids if c in cohort.bags]
    if "wsi" in cfg.modalities and train_bags:
        patches = np.concatenate(train_bags)
        transforms["wsi"] = (patches.mean(0), np.maximum(patches.std(0), 1e-6))
    rng = np.random.default_rng(cfg.seed)

    def build(ids: list[str]) -> FoldData:
        ids = [c for c in ids if c in surv.index]
        inputs, positions, kept = [], [], {}
        for m in cfg.modalities:
            column = []
            for c in ids:
                if m == "wsi":
                    bag = cohort.bags.get(c)
                    if bag is not None and len(bag) > cfg.max_patches:
                        kept[c] = np.sort(rng.choice(len(bag), cfg.max_patches, replace=False))
                        bag = bag[kept[c]]
                    if bag is not None and "wsi" in transforms:
                        mean, std = transforms["wsi"]
                        bag = ((bag - mean) / std).astype(np.float32)
                    column.append(bag)
                elif m in transforms and c in cohort.omics[m].index:
                    x = transforms[m].transform(cohort.omics[m].loc[[c]])[0]
                    column.append(x[None, :] if cfg.omic_tokens == "single" else x[:, None])
                else:
                    column.append(None)
            inputs.append(column)
        for c in ids:
            pos = cohort.positions.get(c)
            if pos is not None and len(pos):
                span = np.maximum(pos.max(0) - pos.min(0), 1.0)
                pos = (pos - pos.min(0)) / span * 2 - 1
            if pos is not None and c in kept:  # the positions of the subsampled patches
                pos = pos[kept[c]]
            positions.append(pos)
        times, events = np.array(surv.loc[ids, "time"], dtype=float), np.array(surv.loc[ids, "event"], dtype=np.int64)
        return FoldData(ids, inputs, positions, discretise(times, edges), events, times)

    subsets = {name: build(split[name]) for name in ("train", "val", "test")}
    return subsets, edges, transforms


def collate(data: FoldData, index: np.ndarray, channels: list[int], wsi: int | None = 0):
    """Pad each modality's bags to the longest in the batch; absent ones become a masked zero token.

    ``wsi`` is the position of the WSI modality, whose patch positions are padded alongside it.
    """
    tensors, masks, positions = [], [], None
    present = torch.zeros(len(index), len(channels), dtype=torch.bool)
    for m, column in enumerate(data.inputs):
        items = [column[i] for i in index]
        n = max([len(x) for x in items if x is not None] + [1])
        t = torch.zeros(len(index), n, channels[m])
        mask = torch.zeros(len(index), n, dtype=torch.bool)
        for b, x in enumerate(items):
            if x is not None and len(x):
                t[b, : len(x)] = torch.from_numpy(np.asarray(x, np.float32))
                mask[b, : len(x)] = True
                present[b, m] = True
        tensors.append(t)
        masks.append(mask)
        if m == wsi and data.positions:
            positions = torch.zeros(len(index), n, 2)
            for b, i in enumerate(index):
                p = data.positions[i]
                if p is not None and column[i] is not None:
                    positions[b, : len(column[i])] = torch.from_numpy(p[: len(column[i])])
    return tensors, masks, present, positions


def _forward(model, data: FoldData, index, channels, cfg: TrainConfig, **kwargs):
    wsi = cfg.modalities.index("wsi") if "wsi" in cfg.modalities else None
    tensors, masks, present, positions = collate(data, index, channels, wsi)
    pos = [positions if cfg.fourier_wsi and m == "wsi" else None for m in cfg.modalities]
    return model(tensors, masks=masks, present=present, positions=pos, **kwargs)


def evaluate_loss(model, data: FoldData, channels, cfg: TrainConfig) -> tuple[float, np.ndarray]:
    model.eval()
    with torch.no_grad():
        index = np.arange(len(data.case_ids))
        logits = torch.cat([_forward(model, data, index[i:i + 32], channels, cfg) for i in range(0, len(index), 32)])
        loss = nll_loss(logits, torch.from_numpy(data.labels), torch.from_numpy(data.events), alpha=cfg.alpha)
        return float(loss), risk_from_logits(logits).numpy()


def train_fold(cohort: Cohort, split: dict[str, list[str]], cfg: TrainConfig, out_dir: str | os.PathLike | None = None,
               fold: int = 0) -> dict:
    """Train on ``split['train']``, stop early on ``split['val']``, predict ``split['test']``.

    Writes ``model.pt``, ``predictions.tsv`` (case_id, risk, time, event) and ``metrics.json`` to
    ``out_dir`` when given; returns the metrics.
    """
    torch.manual_seed(cfg.seed)
    subsets, edges, transforms = prepare_fold(cohort, split, cfg)
    train, val, test = subsets["train"], subsets["val"], subsets["test"]
    channels = []
    for m, column in zip(cfg.modalities, train.inputs):
        widths = [x.shape[1] for sub in subsets.values() for x in sub.inputs[cfg.modalities.index(m)] if x is not None]
        if not widths:
            raise ValueError(f"fold {fold}: modality {m!r} has no data in any case")
        channels.append(widths[0])
    model_kwargs = {"depth": 2, "num_latents": 16, "latent_dim": 64, "cross_heads": 1, "latent_heads": 4,
                    "attn_dropout": 0.1, "ff_dropout": 0.1, **cfg.model}
    model = HEALNet(input_channels=channels, input_axes=[2 if (cfg.fourier_wsi and m == "wsi") else 0 for m in cfg.modalities],
                    num_classes=cfg.n_bins, fourier_encode=cfg.fourier_wsi, **model_kwargs)
    weights = torch.as_tensor(bin_weights(train.labels, cfg.n_bins), dtype=torch.float32)
    steps = max(1, int(np.ceil(len(train.case_ids) / cfg.batch_size)))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    best = (np.inf, -1, copy.deepcopy(model.state_dict()))
    history = []
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(train.case_ids), generator=gen).numpy()
        total = 0.0
        for i in range(0, len(order), cfg.batch_size):
            index = order[i:i + cfg.batch_size]
            logits = _forward(model, train, index, channels, cfg)
            loss = nll_loss(logits, torch.from_numpy(train.labels[index]), torch.from_numpy(train.events[index]),
                            alpha=cfg.alpha, weights=weights) + cfg.l1 * model.l1_penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(index)
        val_loss, val_risk = evaluate_loss(model, val, channels, cfg)
        val_c = concordance(val.times, val.events, val_risk) if val.events.sum() else float("nan")
        history.append({"epoch": epoch, "train_loss": total / len(order), "val_loss": val_loss, "val_c_index": val_c})
        if val_loss < best[0] - 1e-4:
            best = (val_loss, epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= cfg.patience:
            break
    model.load_state_dict(best[2])
    _, test_risk = evaluate_loss(model, test, channels, cfg)
    c_index = concordance(test.times, test.events, test_risk) if test.events.sum() else float("nan")
    present = pd.DataFrame({m: [x is not None for x in col] for m, col in zip(cfg.modalities, test.inputs)})
    predictions = pd.DataFrame({"case_id": test.case_ids, "fold": fold, "risk": test_risk, "time": test.times,
                                "event": test.events, **{f"has_{m}": present[m] for m in cfg.modalities}})
    metrics = {"fold": fold, "c_index": c_index, "n_train": len(train.case_ids), "n_val": len(val.case_ids),
               "n_test": len(test.case_ids), "n_test_events": int(test.events.sum()), "best_epoch": best[1],
               "epochs_run": len(history), "bin_edges": [float(e) for e in edges]}
    log.info("fold %d: c-index %.3f on %d test cases (best epoch %d)", fold, c_index, len(test.case_ids), best[1])
    if out_dir is not None:
        out = Path(out_dir)
        with atomic_path(out / "model.pt") as tmp:
            torch.save({"state_dict": model.state_dict(), "input_channels": channels, "model_kwargs": model_kwargs,
                        "config": asdict(cfg), "bin_edges": edges,
                        "transforms": transforms}, tmp)
        with atomic_path(out / "history.tsv") as tmp:
            pd.DataFrame(history).to_csv(tmp, sep="\t", index=False)
        with atomic_path(out / "predictions.tsv") as tmp:
            predictions.to_csv(tmp, sep="\t", index=False)
        write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=1))
    return metrics


def train_fold_from_files(clinical: str, feature_stores: list[str], omics: dict[str, str], splits: str, fold: int,
                          out_dir: str | os.PathLike, config: dict, seed: int = 0) -> dict:
    """:func:`train_fold` on a cohort's pipeline outputs (the Snakemake rule calls this)."""
    from .evaluate import load_cohort
    from .splits import read_splits

    settings = {k: v for k, v in config.items() if k != "models"}
    cfg = TrainConfig(**{**settings, "modalities": tuple(settings.get("modalities", TrainConfig.modalities)),
                         "seed": seed})
    cohort = load_cohort(clinical, feature_stores, {m: p for m, p in omics.items() if m in cfg.modalities})
    return train_fold(cohort, read_splits(splits)[fold], cfg, out_dir, fold=fold)
