"""A trained fold rebuilt in memory, and what its model says about one test case.

:class:`FoldModel` holds the model (eval mode), its training config and its test cases
(:class:`CaseInput`: per modality the (tokens, channels) array the model saw);
:func:`healnet.fold_rebuild.load_fold` builds one from a fold directory.  The functions here
run that model on variants of one case: its risks (:func:`case_risks`), its attention per unit
(:func:`case_attention`), Integrated Gradients of its risk per unit (:func:`case_ig`), and the
change in risk as its top-ranked units are removed (:func:`case_deletion`).

Removing a unit: a patch, or a gene when each gene is a token (``omic_tokens: genes``), is masked
out (the model no longer sees it: it gets no attention); a gene that is a channel of the single
omics token (``omic_tokens: single``) is set to 0, its training mean after the fold's z-score.
Attention scores units only when they are tokens.  IG integrates from the all-zero input (every
modality at its training mean) with the midpoint rule; ``steps=1`` is the input times the
gradient at half of it (gradient × input, cheaper and cruder).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from .attribution import integrated_gradients, removal_counts


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
    config: object  # healnet.train_config.TrainConfig of the run (modalities: those of the architecture)
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
