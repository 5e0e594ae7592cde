"""The computation of the published HEALNet code, written from its description for
``benchmarks/training.py --step``: per layer and modality, cross-attention with the context
re-normalised and re-projected on every call, a GEGLU/SEGLU feed-forward, then the layer's
self-attention after EACH modality's update. Full bags only (no masks, no missing modalities)."""
from __future__ import annotations

import torch
from einops import rearrange, repeat
from einops.layers.torch import Reduce
from torch import nn


class RefAttention(nn.Module):
    """Attention as the published code computes it: q from the latents, ``to_kv`` of the (normalised)
    context, einsum similarities, softmax at temperature 0.5, output ``Linear`` + ``LeakyReLU``."""

    def __init__(self, query_dim: int, context_dim: int | None = None, *, heads: int, dim_head: int,
                 dropout: float, temperature: float = 0.5):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale, self.temperature = heads, dim_head ** -0.5, temperature
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim or query_dim, inner * 2, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.LeakyReLU())

    def forward(self, x, context=None):
        q = self.to_q(x)
        k, v = self.to_kv(x if context is None else context).chunk(2, dim=-1)
        q, k, v = (rearrange(t, "b n (h d) -> (b h) n d", h=self.heads) for t in (q, k, v))
        sim = torch.einsum("bid,bjd->bij", q, k) * self.scale
        attn = self.dropout((sim / self.temperature).softmax(dim=-1))
        out = torch.einsum("bij,bjd->bid", attn, v)
        return self.to_out(rearrange(out, "(b h) n d -> b n (h d)", h=self.heads))


class RefFeedForward(nn.Module):
    """GEGLU (SEGLU with ``snn``) feed-forward: Linear d → 8d, one half gating the other to 4d, Linear 4d → d."""

    def __init__(self, dim: int, *, mult: int = 4, dropout: float, snn: bool):
        super().__init__()
        self.proj, self.out = nn.Linear(dim, dim * mult * 2), nn.Linear(dim * mult, dim)
        self.act, self.drop = (nn.SELU(), nn.AlphaDropout(dropout)) if snn else (nn.GELU(), nn.Dropout(dropout))

    def forward(self, x):
        x, gates = self.proj(x).chunk(2, dim=-1)
        return self.out(self.drop(x * self.act(gates)))


class RefPreNorm(nn.Module):
    """LayerNorm of the latents, and of the context on every call (so per layer and modality)."""

    def __init__(self, dim: int, fn: nn.Module, context_dim: int | None = None):
        super().__init__()
        self.fn, self.norm = fn, nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(context_dim) if context_dim else None

    def forward(self, x, context=None):
        if self.norm_context is None:
            return self.fn(self.norm(x))
        return self.fn(self.norm(x), context=self.norm_context(context))


class ReferenceStyle(nn.Module):
    """What the published HEALNet code computes, per layer and modality: cross-attention with the
    context re-normalised and re-projected (:class:`RefPreNorm`, :class:`RefAttention`), a GEGLU/SEGLU
    feed-forward, then the layer's self-attention blocks after EACH modality's update.  Written from
    that description for the benchmark (full bags: no masks, no missing modalities; untied layers)."""

    def __init__(self, *, input_channels, depth: int, num_latents: int, latent_dim: int, cross_heads: int,
                 cross_dim_head: int, latent_heads: int, latent_dim_head: int, num_classes: int = 4,
                 attn_dropout: float = 0.0, ff_dropout: float = 0.0, self_per_cross_attn: int = 1,
                 snn: bool = False, weight_tie_layers: bool = False):
        super().__init__()
        if weight_tie_layers:
            raise ValueError("ReferenceStyle is untied")
        self.latents = nn.Parameter(torch.randn(num_latents, latent_dim))

        def ff():
            return RefPreNorm(latent_dim, RefFeedForward(latent_dim, dropout=ff_dropout, snn=snn))

        def cross(c):
            return RefPreNorm(latent_dim, RefAttention(latent_dim, c, heads=cross_heads, dim_head=cross_dim_head,
                                                       dropout=attn_dropout), context_dim=c)

        def latent():
            return RefPreNorm(latent_dim, RefAttention(latent_dim, heads=latent_heads, dim_head=latent_dim_head,
                                                       dropout=attn_dropout))

        self.layers = nn.ModuleList(nn.ModuleDict({
            "cross": nn.ModuleList(nn.ModuleList([cross(c), ff()]) for c in input_channels),
            "latent": nn.ModuleList(nn.ModuleList([latent(), ff()]) for _ in range(self_per_cross_attn))})
            for _ in range(depth))
        self.to_logits = nn.Sequential(Reduce("b n d -> b d", "mean"), nn.LayerNorm(latent_dim),
                                       nn.Linear(latent_dim, num_classes))

    def forward(self, tensors):
        x = repeat(self.latents, "n d -> b n d", b=tensors[0].shape[0])
        for layer in self.layers:
            for (cross_attn, cross_ff), context in zip(layer["cross"], tensors):
                x = cross_attn(x, context=context) + x
                x = cross_ff(x) + x
                for self_attn, self_ff in layer["latent"]:  # after each modality's update
                    x = self_attn(x) + x
                    x = self_ff(x) + x
        return self.to_logits(x)
