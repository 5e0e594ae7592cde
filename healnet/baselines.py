"""Baselines run on the same folds as HEALNet.

Neural baselines share HEALNet's calling convention (``healnet.model.HEALNet.forward``)::

    model(tensors, masks=None, present=None, positions=None, return_attention=False)

* ``tensors``: per modality ``(b, n_m, c_m)``; the WSI is a bag of patch embeddings, an omics
  profile is one token of ``genes`` channels ``(b, 1, genes)`` or one token per gene
  ``(b, genes, 1)`` (then pass ``input_tokens`` to the builder, see below);
* ``masks``: per modality ``(b, n_m)`` bool, True = real token (padding values are never read);
* ``present``: ``(b, M)`` bool; an absent modality's values are never read and do not change the
  output; a sample whose bag is all padding counts as absent;
* returns ``(b, num_classes)`` logits of discrete hazards, and ``(logits, weights)`` with
  ``return_attention``: a list of ``{"layer", "modality", "attn"}`` with ``attn`` of shape
  ``(b, heads, queries, n_m)`` like HEALNet's (ABMIL: heads = queries = 1).

The modality named ``"wsi"`` is the bag; every other modality is tabular omics.

:data:`BASELINES` maps a name to a builder
``builder(*, input_channels, modalities, num_classes, **kwargs)``; unknown keyword arguments are
ignored, so one ``train.model`` block can serve several models.  ``input_tokens`` (list, per
modality, of the token count; only needed for omics given one gene per token) fixes the width of
the omics encoders.

The elastic-net Cox model (``coxnet``) is in :mod:`healnet.coxnet`; the encoders and the input
handling the neural baselines share, in :mod:`healnet.baseline_blocks`.
"""
from __future__ import annotations

import inspect
import logging
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from .baseline_blocks import WSI, ABMILEncoder, SNNEncoder, _Baseline, _head
from .model import Attention, FeedForward, PreNorm

log = logging.getLogger(__name__)


class SNN(_Baseline):
    """Self-normalising network on the concatenated omics modalities (the WSI is ignored).
    An absent omics modality enters as zeros (its training mean after z-scoring)."""

    def __init__(self, *, input_channels, modalities, num_classes: int = 4, dim: int = 64, depth: int = 2,
                 dropout: float = 0.25, input_tokens=None):
        super().__init__(input_channels=input_channels, modalities=modalities, input_tokens=input_tokens)
        self.omics = [m for m, name in enumerate(self.modalities) if name != WSI]
        if not self.omics:
            raise ValueError("snn needs at least one omics modality")
        self.encoder = SNNEncoder(sum(self.omics_width(m) for m in self.omics), dim=dim, depth=depth, dropout=dropout)
        self.to_logits = nn.Linear(dim, num_classes)

    def forward(self, tensors, masks=None, present=None, positions=None, return_attention=False):
        data = self._inputs(tensors, masks, present)
        x = torch.cat([self._omics(m, data[m][0]) for m in self.omics], dim=-1)
        logits = self.to_logits(self.encoder(x))
        return (logits, []) if return_attention else logits


class ABMIL(_Baseline):
    """Gated-attention MIL on the WSI bag (omics are ignored)."""

    def __init__(self, *, input_channels, modalities, num_classes: int = 4, dim: int = 64, hidden: int = 64,
                 dropout: float = 0.25, input_tokens=None):
        super().__init__(input_channels=input_channels, modalities=modalities, input_tokens=input_tokens)
        if WSI not in self.modalities:
            raise ValueError("abmil needs the 'wsi' modality")
        self.wsi = self.modalities.index(WSI)
        self.encoder = ABMILEncoder(self.input_channels[self.wsi], dim=dim, hidden=hidden, dropout=dropout)
        self.to_logits = _head(dim, num_classes, hidden=hidden, dropout=dropout)

    def forward(self, tensors, masks=None, present=None, positions=None, return_attention=False):
        x, mask, _ = self._inputs(tensors, masks, present)[self.wsi]
        pooled, attn = self.encoder(x, mask)
        logits = self.to_logits(pooled)
        if not return_attention:
            return logits
        return logits, [{"layer": 0, "modality": self.wsi, "attn": rearrange(attn, "b n -> b 1 1 n")}]


class EarlyFusion(_Baseline):
    """One Perceiver over all modalities' tokens: each modality is projected to ``dim`` channels
    (plus a learned modality embedding), the tokens are concatenated, and a latent array reads
    them with one cross-attention per layer followed by self-attention.  Padding tokens are masked
    out of every cross-attention.  An absent modality (``missing``): ``"mean"`` (default, the usual
    early-fusion remedy) imputes it as one token at the training mean, which is 0 because every
    input is standardised on the training cases; ``"mask"`` masks its tokens out, as HEALNet skips.
    The blocks are HEALNet's (:class:`healnet.model.PreNorm` around :class:`~healnet.model.Attention`
    and :class:`~healnet.model.FeedForward`), so ``attn_dropout`` drops attention weights."""

    def __init__(self, *, input_channels, modalities, num_classes: int = 4, dim: int = 64, depth: int = 2,
                 num_latents: int = 16, heads: int = 4, dim_head: int = 32, attn_dropout: float = 0.1,
                 ff_dropout: float = 0.1, input_tokens=None, missing: str = "mean"):
        super().__init__(input_channels=input_channels, modalities=modalities, input_tokens=input_tokens)
        if missing not in ("mean", "mask"):
            raise ValueError(f"early-fusion: missing must be 'mean' or 'mask', not {missing!r}")
        self.missing = missing
        self.project = nn.ModuleList(nn.Linear(c, dim) for c in self.input_channels)
        self.modality_embedding = nn.Parameter(torch.randn(len(self.modalities), dim) * 0.02)
        self.latents = nn.Parameter(torch.randn(num_latents, dim))
        self.layers = nn.ModuleList(nn.ModuleList([  # HEALNet's blocks (healnet.model), pre-norm
            PreNorm(dim, Attention(dim, heads=1, dim_head=dim_head, dropout=attn_dropout), context_dim=dim),
            PreNorm(dim, FeedForward(dim, mult=2, dropout=ff_dropout)),
            PreNorm(dim, Attention(dim, heads=heads, dim_head=dim_head, dropout=attn_dropout)),
            PreNorm(dim, FeedForward(dim, mult=2, dropout=ff_dropout))]) for _ in range(depth))
        self.to_logits = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def forward(self, tensors, masks=None, present=None, positions=None, return_attention=False):
        data = self._inputs(tensors, masks, present)
        if self.missing == "mean":  # an absent modality's first token (zeroed by _valid) stands in for it
            data = [(x, keep | ((torch.arange(x.shape[1], device=x.device) == 0)[None, :] & ~valid[:, None]), valid)
                    for x, keep, valid in data]
        tokens = torch.cat([self.project[m](x) + self.modality_embedding[m] for m, (x, _, _) in enumerate(data)], dim=1)
        mask = torch.cat([keep for _, keep, _ in data], dim=1)
        has_any = mask.any(dim=1)
        mask = mask | ~has_any[:, None]  # nothing present: attend to (zeroed, projected) tokens, see below
        tokens = tokens.masked_fill(~has_any[:, None, None], 0.0)
        x, weights = repeat(self.latents, "n d -> b n d", b=tokens.shape[0]), []
        sizes = [t.shape[1] for t, _, _ in data]
        for i, (cross, cross_ff, self_attn, self_ff) in enumerate(self.layers):
            update, attn = cross(x, context=tokens, mask=mask, return_attn=return_attention)
            x = x + update
            x = x + cross_ff(x)
            x = x + self_attn(x)[0]
            x = x + self_ff(x)
            if return_attention:
                attn = attn * has_any[:, None, None, None]
                for m, part in enumerate(attn.split(sizes, dim=-1)):
                    weights.append({"layer": i, "modality": m, "attn": part})
        logits = self.to_logits(x.mean(dim=1))
        return (logits, weights) if return_attention else logits


class LateFusion(_Baseline):
    """Porpoise-style late fusion: ABMIL encodes the bag, an SNN each omics modality; the
    embeddings of absent modalities are set to 0 and the embeddings are fused, then a head.

    ``fusion="kronecker"`` (Porpoise): the outer product of ``[h_m, 1]`` over modalities, so a
    zeroed (absent) modality drops out and only the present ones' terms remain; its size is
    ``(dim + 1) ** M``, so with three or more modalities each embedding shrinks until that is at
    most ``max_fused`` (4 modalities: 7 + 1 channels each, 4 096 fused).  ``fusion="mean"``: the
    mean of the present modalities' embeddings."""

    def __init__(self, *, input_channels, modalities, num_classes: int = 4, dim: int = 32, hidden: int = 64,
                 dropout: float = 0.25, fusion: str = "kronecker", max_fused: int = 4096, input_tokens=None):
        super().__init__(input_channels=input_channels, modalities=modalities, input_tokens=input_tokens)
        if fusion not in ("kronecker", "mean"):
            raise ValueError(f"late-fusion: fusion must be 'kronecker' or 'mean', not {fusion!r}")
        self.fusion = fusion
        if fusion == "kronecker":
            while dim > 1 and (dim + 1) ** len(self.modalities) > max_fused:
                dim -= 1
        self.encoders = nn.ModuleList(
            ABMILEncoder(c, dim=dim, hidden=hidden, dropout=dropout) if name == WSI
            else SNNEncoder(self.omics_width(m), dim=dim, depth=2, dropout=dropout)
            for m, (name, c) in enumerate(zip(self.modalities, self.input_channels)))
        fused = (dim + 1) ** len(self.modalities) if fusion == "kronecker" else dim
        self.to_logits = _head(fused, num_classes, hidden=hidden, dropout=dropout)

    def forward(self, tensors, masks=None, present=None, positions=None, return_attention=False):
        embeddings, valids, weights = [], [], []
        for m, (x, keep, valid) in enumerate(self._inputs(tensors, masks, present)):
            if self.modalities[m] == WSI:
                h, attn = self.encoders[m](x, keep)
                weights.append({"layer": 0, "modality": m, "attn": rearrange(attn, "b n -> b 1 1 n")})
            else:
                h = self.encoders[m](self._omics(m, x))
            embeddings.append(torch.where(valid[:, None], h, torch.zeros_like(h)))
            valids.append(valid)
        if self.fusion == "mean":
            n = torch.stack(valids, dim=1).sum(dim=1, keepdim=True).clamp_min(1)
            fused = torch.stack(embeddings, dim=1).sum(dim=1) / n
        else:
            fused = None
            for h in embeddings:
                h = F.pad(h, (0, 1), value=1.0)  # [h, 1]
                fused = h if fused is None else rearrange(torch.einsum("bi,bj->bij", fused, h), "b i j -> b (i j)")
        logits = self.to_logits(fused)
        return (logits, weights) if return_attention else logits


def _builder(cls) -> Callable[..., nn.Module]:
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}

    def build(*, input_channels: list[int], modalities: list[str], num_classes: int, **kwargs) -> nn.Module:
        unused = sorted(set(kwargs) - accepted)
        if unused:
            log.debug("%s ignores %s", cls.__name__, ", ".join(unused))
        return cls(input_channels=input_channels, modalities=modalities, num_classes=num_classes,
                   **{k: v for k, v in kwargs.items() if k in accepted})

    build.__doc__ = cls.__doc__
    return build


BASELINES: dict[str, Callable[..., nn.Module]] = {
    "snn": _builder(SNN),
    "abmil": _builder(ABMIL),
    "early-fusion": _builder(EarlyFusion),
    "late-fusion": _builder(LateFusion),
}
