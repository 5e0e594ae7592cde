"""One cross-validation fold's inputs: the transforms fitted on its training cases and the three subsets.

Everything that learns from data (omic normalisation and feature selection, the WSI channel
statistics, survival bins) is fitted on the fold's training cases only.  Bags may be lazy
(:class:`healnet.bags.LazyBag`): a subset holds :class:`healnet.bags.BagView` s that read their
patches when a batch is collated (:func:`collate`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .bags import BagView, wsi_standardisation
from .data import Cohort, OmicTransform
from .survival import discretise, fit_bins


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


def prepare_fold(cohort: Cohort, split: dict[str, list[str]], cfg):
    """Fit the fold's transforms on its training cases and build the three subsets.

    ``cfg``: a :class:`healnet.train_config.TrainConfig` (modalities, n_bins, omic_top_k, omic_select,
    log_omics, omic_tokens, max_patches, seed).  WSI bags are not read here beyond the streaming
    statistics pass over the training bags: each subset holds :class:`BagView` s (kept rows + the
    fold's statistics) that read on demand."""
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
