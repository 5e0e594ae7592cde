"""Building blocks of the neural baselines (:mod:`healnet.baselines`): the self-normalising (SNN)
and gated-attention MIL (ABMIL) encoders, the prediction head, and the input handling every
baseline shares (padding and absent modalities zeroed, omics flattened and checked).
"""
from __future__ import annotations

from typing import Sequence

import torch
from einops import rearrange
from torch import nn

from .model import l1_penalty

WSI = "wsi"


def _valid(x: torch.Tensor, mask: torch.Tensor | None, present: torch.Tensor):
    """Zero the padding / absent values of one modality; returns (x, token mask, valid (b,))."""
    b, n = x.shape[:2]
    mask = torch.ones(b, n, dtype=torch.bool, device=x.device) if mask is None else mask.to(x.device).bool()
    valid = present.to(x.device).bool() & mask.any(dim=1)
    keep = mask & valid[:, None]
    return x.masked_fill(~keep[..., None], 0.0), keep, valid


def _flatten_omics(x: torch.Tensor) -> torch.Tensor:
    """(b, 1, g) or (b, g, 1) or (b, g) -> (b, g)."""
    if x.dim() == 3:
        return rearrange(x, "b n c -> b (n c)")
    return x


class SNNBlock(nn.Sequential):
    """Linear -> SELU -> AlphaDropout, LeCun-normal initialised (Klambauer et al. 2017)."""

    def __init__(self, dim_in: int, dim_out: int, *, dropout: float = 0.25):
        lin = nn.Linear(dim_in, dim_out)
        nn.init.normal_(lin.weight, std=dim_in ** -0.5)
        nn.init.zeros_(lin.bias)
        super().__init__(lin, nn.SELU(), nn.AlphaDropout(dropout))


class SNNEncoder(nn.Module):
    """Self-normalising MLP: (b, features) -> (b, dim)."""

    def __init__(self, dim_in: int, *, dim: int = 64, depth: int = 2, dropout: float = 0.25):
        super().__init__()
        dims = [dim_in] + [dim] * depth
        self.net = nn.Sequential(*[SNNBlock(a, b, dropout=dropout) for a, b in zip(dims[:-1], dims[1:])])

    def forward(self, x):
        return self.net(x)


class GatedAttentionPool(nn.Module):
    """Gated attention MIL pooling (Ilse et al. 2018): a_i = softmax_i w^T (tanh(V h_i) * sigmoid(U h_i)).

    ``forward(h, mask)`` -> (pooled (b, dim), attention (b, n)); masked tokens get weight 0, an
    all-masked bag pools to 0 with all-zero weights."""

    def __init__(self, dim: int, *, hidden: int = 64, dropout: float = 0.0):
        super().__init__()
        self.v, self.u = nn.Linear(dim, hidden), nn.Linear(dim, hidden)
        self.w = nn.Linear(hidden, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h, mask):
        score = self.w(self.dropout(torch.tanh(self.v(h)) * torch.sigmoid(self.u(h))))
        score = rearrange(score, "b n 1 -> b n").masked_fill(~mask, float("-inf"))
        any_token = mask.any(dim=1, keepdim=True)
        attn = score.masked_fill(~any_token, 0.0).softmax(dim=-1) * any_token
        return torch.einsum("bn,bnd->bd", attn, h), attn


class ABMILEncoder(nn.Module):
    """Patch embedding (Linear-ReLU-Dropout) then gated attention pooling: (b, n, c) -> (b, dim)."""

    def __init__(self, dim_in: int, *, dim: int = 64, hidden: int = 64, dropout: float = 0.25):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(dim_in, dim), nn.ReLU(), nn.Dropout(dropout))
        self.pool = GatedAttentionPool(dim, hidden=hidden, dropout=dropout)

    def forward(self, x, mask):
        return self.pool(self.embed(x), mask)


def _head(dim_in: int, num_classes: int, *, hidden: int = 64, dropout: float = 0.25) -> nn.Module:
    return nn.Sequential(nn.Linear(dim_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes))


class _Baseline(nn.Module):
    """Shared argument handling of the neural baselines."""

    def __init__(self, *, input_channels: Sequence[int], modalities: Sequence[str],
                 input_tokens: Sequence[int | None] | None = None):
        super().__init__()
        self.input_channels, self.modalities = list(input_channels), list(modalities)
        if len(self.input_channels) != len(self.modalities):
            raise ValueError(f"{len(self.input_channels)} input_channels for {len(self.modalities)} modalities")
        tokens = list(input_tokens) if input_tokens is not None else [None] * len(self.modalities)
        self.input_tokens = tokens

    def omics_width(self, m: int) -> int:
        """Number of features of omics modality ``m`` once flattened."""
        c, n = self.input_channels[m], self.input_tokens[m]
        if c == 1 and n is None:
            raise ValueError(f"modality {self.modalities[m]!r} has 1 channel: pass input_tokens (its number of "
                             f"genes) to the builder, or give omics as one token of all genes")
        return c * (n or 1)

    def _inputs(self, tensors, masks, present):
        M, b = len(self.modalities), tensors[0].shape[0]
        if len(tensors) != M:
            raise ValueError(f"expected {M} modalities ({self.modalities}), got {len(tensors)} tensors")
        dev = next(self.parameters()).device
        present = torch.ones(b, M, dtype=torch.bool, device=dev) if present is None else present.to(dev).bool()
        masks = [None] * M if masks is None else list(masks)
        out = []
        for m, x in enumerate(tensors):
            x = x.to(dev)
            if self.modalities[m] != WSI and x.dim() == 2:
                x = x[:, None, :]
            out.append(_valid(x, masks[m], present[:, m]))
        return out

    def _omics(self, m: int, x: torch.Tensor) -> torch.Tensor:
        x = _flatten_omics(x)
        if x.shape[1] != self.omics_width(m):
            raise ValueError(f"modality {self.modalities[m]!r}: expected {self.omics_width(m)} features, got {x.shape[1]}")
        return x

    def l1_penalty(self) -> torch.Tensor:
        return l1_penalty(self)  # as HEALNet's
