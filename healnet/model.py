"""HEALNet: hybrid early-fusion attention over a shared latent array.

Written from the ideas of Hemker et al., "HEALNet: Multimodal Fusion for Heterogeneous
Biomedical Data" (NeurIPS 2024), in the style of lucidrains' perceiver-pytorch.

Each modality ``m`` is a set of tokens ``(b, n_m, c_m)``: a WSI is a bag of patch
embeddings, an omics profile is e.g. one token per gene (1 channel) or per gene group.
A learned latent array is refined layer by layer; in every layer each modality in turn
writes into it through its own cross-attention + feed-forward, then self-attention
blocks (shared across modalities within the layer) mix the latents.

Ablations (constructor options; the defaults are the model above): no self-attention
(``self_per_cross_attn=0``); self-attention after every modality's update, the published code's
placement (``self_attn_after="modality"``); one set of weights for every layer
(``tie_all_layers``); no learned latent array, but one latent per modality: its mean-pooled
tokens, projected (``latent_array="mean_pool"``).

Missing data is explicit and per sample:
  * ``masks[m]`` (b, n_m) bool, True = real token, False = padding (gets attention 0);
  * ``present`` (b, M) bool, False = sample lacks modality m: its latents are left
    unchanged at that modality's steps, and no gradient reaches that modality's weights
    from it.  A sample whose bag is empty (all tokens masked) is treated as absent.
Values of padding tokens and of absent modalities are never read (they may be NaN).

Speed: a context (say 20 000 patches × 1024 channels) dwarfs the latents, so it is read as few
times as possible: Fourier features are concatenated once per forward, and healnet/context.py
(:func:`~healnet.context.context_keys_values`) normalises and projects it ONCE for every
cross-attention weight set of the modality, which layers that share weights (``weight_tie_layers``)
share; nothing per layer touches the raw context.  ``forward(..., reuse_context=False)`` is the
textbook per-layer LayerNorm + projection, kept as the reference the tests compare against.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from einops.layers.torch import Reduce
from torch import nn

from .context import context_keys_values
from .prior import LinearPrior


def fourier_encode(pos: torch.Tensor, max_freq: float, num_bands: int) -> torch.Tensor:
    """(b, n, axes) coordinates in [-1, 1] -> (b, n, axes * (2 * num_bands + 1)):
    per axis [sin(pi f x), cos(pi f x) for f in linspace(1, max_freq / 2, num_bands), x]."""
    freqs = torch.linspace(1.0, max_freq / 2, num_bands, device=pos.device, dtype=pos.dtype)
    scaled = pos[..., None] * freqs * math.pi
    enc = torch.cat([scaled.sin(), scaled.cos(), pos[..., None]], dim=-1)
    return rearrange(enc, "b n a f -> b n (a f)")


def l1_penalty(module: nn.Module) -> torch.Tensor:
    """Sum of |w| over the weight matrices of all Linear layers of ``module`` (biases, norms and
    latents excluded; a module shared by tied layers counted once)."""
    return sum(m.weight.abs().sum() for m in module.modules() if isinstance(m, nn.Linear))


class PreNorm(nn.Module):
    """LayerNorm on the input (and on the context, for cross-attention) before ``fn``."""

    def __init__(self, dim: int, fn: nn.Module, *, context_dim: int | None = None):
        super().__init__()
        self.fn, self.norm = fn, nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(context_dim) if context_dim is not None else None

    def forward(self, x, **kwargs):
        if self.norm_context is not None and kwargs.get("context") is not None:
            kwargs["context"] = self.norm_context(kwargs["context"])
        return self.fn(self.norm(x), **kwargs)


class FeedForward(nn.Module):
    """Linear-GELU-Dropout-Linear, or self-normalising Linear-SELU-AlphaDropout-Linear."""

    def __init__(self, dim: int, *, mult: int = 4, dropout: float = 0.0, snn: bool = False):
        super().__init__()
        act, drop = (nn.SELU(), nn.AlphaDropout(dropout)) if snn else (nn.GELU(), nn.Dropout(dropout))
        self.net = nn.Sequential(nn.Linear(dim, dim * mult), act, drop, nn.Linear(dim * mult, dim))
        if snn:  # LeCun-normal initialisation keeps SELU activations self-normalising
            for lin in (self.net[0], self.net[3]):
                nn.init.normal_(lin.weight, std=lin.in_features ** -0.5)
                nn.init.zeros_(lin.bias)

    def forward(self, x):
        return self.net(x)


class Attention(nn.Module):
    """Multi-head attention; ``forward`` returns (output, weights or None).

    ``mask`` (b, n_keys) bool, True = key may be attended.  ``kv``: precomputed (keys, values),
    each (b, heads, n_keys, dim_head), used instead of projecting ``context``.  Fast path: PyTorch
    SDPA; with ``return_attn`` the softmax is explicit and its weights (b, heads, n_q, n_keys),
    taken before attention dropout, are returned (masked keys get exactly 0).  Training on the CPU
    takes the explicit path too: SDPA's CPU kernel has no dropout, and its fallback computes the
    same with more ops (~15 % of a training step), drawing the same dropout mask."""

    def __init__(self, query_dim: int, context_dim: int | None = None, *,
                 heads: int = 8, dim_head: int = 64, dropout: float = 0.0):
        super().__init__()
        inner, context_dim = heads * dim_head, context_dim or query_dim
        self.heads, self.scale, self.dropout = heads, dim_head ** -0.5, dropout
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, query_dim)

    def forward(self, x, context=None, *, kv=None, mask=None, return_attn: bool = False):
        q = rearrange(self.to_q(x), "b n (h d) -> b h n d", h=self.heads)
        if kv is None:
            kv = self.to_kv(x if context is None else context).chunk(2, dim=-1)
            kv = tuple(rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in kv)
        k, v = kv
        mask = None if mask is None else rearrange(mask, "b j -> b 1 1 j")
        p = self.dropout if self.training else 0.0
        attn = None
        if return_attn or (p > 0 and q.device.type == "cpu"):
            sim = torch.einsum("bhid,bhjd->bhij", q * self.scale, k)
            if mask is not None:
                sim = sim.masked_fill(~mask, float("-inf"))
            attn = sim.softmax(dim=-1)
            out = torch.einsum("bhij,bhjd->bhid", F.dropout(attn, p, self.training), v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)")), attn if return_attn else None


class HEALNet(nn.Module):
    """Hybrid early-fusion attention network; outputs (b, num_classes) logits of discrete hazards.

    The size defaults are the pipeline's (config ``train.model``, chosen on the development cohorts).

    ``weight_tie_layers``: layers 1..depth-1 share one set of weights (layer 0 keeps its own, as in
    perceiver-pytorch), so for depth <= 2 it changes nothing.  Each raw context is Fourier-encoded
    once per forward and read once for the keys and values of all its cross-attention weight sets
    (:func:`context_keys_values`), which the tied layers reuse; ``reuse_context=False`` re-normalises
    and re-projects the context in every layer, the textbook way (same result up to rounding).

    ``num_tokens``: per modality, the number of tokens when they are fixed features (one token per
    gene) rather than a set (patches; None).  Such tokens get a learned identity of ``token_dim``
    channels appended: a gene token of one channel alone would tell the model its value but not
    which gene it is, and LayerNorm over a single channel would erase even the value.

    Ablations (defaults: the model above; no self-attention is ``self_per_cross_attn=0``).
    ``self_attn_after``: "layer" mixes the latents once per layer, after every modality wrote into
    them; "modality" mixes them after each modality's update (the published code's placement), as
    part of that modality's step, so a sample lacking the modality skips it too.  ``tie_all_layers``:
    all layers, the first included, are one module (``weight_tie_layers`` keeps layer 0 apart: a no-op
    at depth 2).  ``latent_array="mean_pool"``: no latent parameters; the latents are one row per
    modality, the mean of its real tokens through a Linear (zeros where the sample lacks it), which
    measures what the learned shared array adds.

    ``prior_widths``: features per modality (0 for none) of a fixed linear term added to every logit,
    the elastic-net prior of :mod:`healnet.prior` (``train.omic_prior``); the head then starts at zero."""

    def __init__(self, *, input_channels: Sequence[int], input_axes: Sequence[int] | None = None,
                 depth: int = 2, num_latents: int = 16, latent_dim: int = 32,
                 cross_heads: int = 1, cross_dim_head: int = 64, latent_heads: int = 4,
                 latent_dim_head: int = 64, num_classes: int = 4, attn_dropout: float = 0.3,
                 ff_dropout: float = 0.3, num_freq_bands: int = 2, max_freq: float = 10.0,
                 fourier_encode: bool = False, self_per_cross_attn: int = 1,
                 weight_tie_layers: bool = False, snn: bool = False,
                 num_tokens: Sequence[int | None] | None = None, token_dim: int = 8,
                 self_attn_after: str = "layer", tie_all_layers: bool = False, latent_array: str = "learned",
                 prior_widths: Sequence[int] | None = None):
        super().__init__()
        if self_attn_after not in ("layer", "modality"):
            raise ValueError(f"self_attn_after must be 'layer' or 'modality', got {self_attn_after!r}")
        if latent_array not in ("learned", "mean_pool"):
            raise ValueError(f"latent_array must be 'learned' or 'mean_pool', got {latent_array!r}")
        self.self_attn_after = self_attn_after
        self.input_channels = list(input_channels)
        self.num_modalities = M = len(self.input_channels)
        if M == 0:
            raise ValueError("HEALNet needs at least one modality")
        axes = list(input_axes) if input_axes is not None else [0] * M
        if len(axes) != M:
            raise ValueError(f"input_axes needs one entry per modality ({M}), got {len(axes)}")
        self.input_axes = [a if fourier_encode else 0 for a in axes]
        self.num_freq_bands, self.max_freq = num_freq_bands, max_freq
        num_tokens = list(num_tokens) if num_tokens is not None else [None] * M
        if len(num_tokens) != M:
            raise ValueError(f"num_tokens needs one entry per modality ({M}), got {len(num_tokens)}")
        self.token_ids = nn.ModuleList(nn.Embedding(n, token_dim) if n else nn.Identity() for n in num_tokens)
        self.context_dims = [c + a * (2 * num_freq_bands + 1) + (token_dim if n else 0)
                             for c, a, n in zip(self.input_channels, self.input_axes, num_tokens)]
        if latent_array == "learned":
            self.latents, self.to_latent = nn.Parameter(torch.randn(num_latents, latent_dim)), None
        else:  # no latent parameter: per modality, its mean token -> one latent
            self.latents, self.to_latent = None, nn.ModuleList(nn.Linear(c, latent_dim) for c in self.context_dims)

        def ff():
            return PreNorm(latent_dim, FeedForward(latent_dim, dropout=ff_dropout, snn=snn))

        def layer():
            cross = nn.ModuleList(nn.ModuleList([
                PreNorm(latent_dim, Attention(latent_dim, ctx, heads=cross_heads, dim_head=cross_dim_head,
                                              dropout=attn_dropout), context_dim=ctx), ff()])
                for ctx in self.context_dims)
            latent = nn.ModuleList(nn.ModuleList([  # one self-attention stack per layer, shared by the modalities
                PreNorm(latent_dim, Attention(latent_dim, heads=latent_heads, dim_head=latent_dim_head,
                                              dropout=attn_dropout)), ff()])
                for _ in range(self_per_cross_attn))
            return nn.ModuleDict({"cross": cross, "latent": latent})

        tied = layer() if (weight_tie_layers or tie_all_layers) and depth > 1 else None  # shared by layers 1..depth-1
        first = tied if tie_all_layers and tied is not None else layer()  # ... and by layer 0 with tie_all_layers
        self.layers = nn.ModuleList([first] + [tied if tied is not None else layer() for _ in range(depth - 1)])
        self.to_logits = nn.Sequential(Reduce("b n d -> b d", "mean"), nn.LayerNorm(latent_dim),
                                       nn.Linear(latent_dim, num_classes))
        self.prior = LinearPrior(prior_widths) if prior_widths and any(prior_widths) else None
        if self.prior is not None:  # training starts from the prior alone
            nn.init.zeros_(self.to_logits[-1].weight)
            nn.init.zeros_(self.to_logits[-1].bias)

    def l1_penalty(self) -> torch.Tensor:
        return l1_penalty(self)

    def _cross_weight_sets(self, m: int) -> list[PreNorm]:
        """Modality m's distinct cross-attention blocks over the layers (tied layers share one)."""
        return list({id(layer["cross"][m][0]): layer["cross"][m][0] for layer in self.layers}.values())

    def _initial_latents(self, data, b: int) -> torch.Tensor:
        """(b, n, latent_dim): the learned array, or (mean-pool ablation) per modality the mean of the
        sample's real tokens projected to one latent, zeros where the sample lacks the modality."""
        if self.latents is not None:
            return repeat(self.latents, "n d -> b n d", b=b)
        rows = []
        for proj, (context, mask, valid) in zip(self.to_latent, data):
            count = context.shape[1] if mask is None else (mask & valid[:, None]).sum(1, keepdim=True).clamp(min=1)
            mean = context.sum(dim=1) / count  # padding and absent values were zeroed by _prepare
            rows.append(torch.where(valid[:, None], proj(mean), 0.0))
        return torch.stack(rows, dim=1)

    @staticmethod
    def _self_attend(layer: nn.ModuleDict, x: torch.Tensor) -> torch.Tensor:
        """The layer's latent self-attention + feed-forward blocks (none with ``self_per_cross_attn=0``)."""
        for self_attn, self_ff in layer["latent"]:
            x = x + self_attn(x)[0]
            x = x + self_ff(x)
        return x

    def _prepare(self, m, x, mask, present, pos):
        """Fourier-encode, sanitise and mask one modality; returns (context, key mask, valid (b,)).  The
        key mask is None when every key may be attended (no padding, every sample has the modality)."""
        if x.dim() == 2 and self.input_channels[m] == 1:  # (b, n) tabular -> (b, n, 1)
            x = x[..., None]
        if x.dim() != 3 or x.shape[-1] != self.input_channels[m]:
            raise ValueError(f"modality {m}: expected (batch, tokens, {self.input_channels[m]}), "
                             f"got {tuple(x.shape)}")
        b, n, _ = x.shape
        mask = torch.ones(b, n, dtype=torch.bool, device=x.device) if mask is None else mask.to(x.device).bool()
        valid = present & mask.any(dim=1)  # an empty bag counts as absent
        if self.input_axes[m]:
            if pos is None:
                raise ValueError(f"modality {m} is Fourier-encoded: positions[{m}] is required")
            x = torch.cat([x, fourier_encode(pos.to(x), self.max_freq, self.num_freq_bands)], dim=-1)
        ids = self.token_ids[m]
        if isinstance(ids, nn.Embedding):
            if n != ids.num_embeddings:
                raise ValueError(f"modality {m}: expected its {ids.num_embeddings} feature tokens, got {n}")
            x = torch.cat([x, repeat(ids.weight.to(x.dtype), "n d -> b n d", b=b)], dim=-1)
        keep = mask & valid[:, None]
        if keep.all():  # attention without a mask: fewer ops, and SDPA's fused kernel where it has one
            return x, None, valid
        x = x.masked_fill(~keep[..., None], 0.0)  # never read padding / absent values
        return x, mask | ~valid[:, None], valid  # absent rows attend to zeros; result discarded below

    def forward(self, tensors: Sequence[torch.Tensor], masks: Sequence[torch.Tensor | None] | None = None,
                present: torch.Tensor | None = None, positions: Sequence[torch.Tensor | None] | None = None,
                return_attention: bool = False, *, reuse_context: bool = True):
        M, b = self.num_modalities, tensors[0].shape[0]
        if len(tensors) != M:
            raise ValueError(f"expected {M} modalities, got {len(tensors)}")
        dev = self.to_logits[-1].weight.device
        present = torch.ones(b, M, dtype=torch.bool, device=dev) if present is None else present.to(dev).bool()
        masks = [None] * M if masks is None else list(masks)
        positions = [None] * M if positions is None else list(positions)
        data = [self._prepare(m, tensors[m].to(dev), masks[m], present[:, m], positions[m]) for m in range(M)]
        some = [bool(valid.any()) for _, _, valid in data]  # else nobody in the batch has it: its steps are skipped
        every = [bool(valid.all()) for _, _, valid in data]
        kv = {}  # per cross-attention weight set: keys and values of its context, computed once per forward
        if reuse_context:
            for m, (context, _, valid) in enumerate(data):
                if some[m]:
                    blocks = self._cross_weight_sets(m)
                    kv.update(zip(map(id, blocks), context_keys_values(context, blocks)))

        x, weights = self._initial_latents(data, b), []
        for i, layer in enumerate(self.layers):
            for m, ((cross_attn, cross_ff), (context, mask, valid)) in enumerate(zip(layer["cross"], data)):
                attn = None
                if some[m]:
                    if reuse_context:
                        update, attn = cross_attn(x, kv=kv[id(cross_attn)], mask=mask, return_attn=return_attention)
                    else:
                        update, attn = cross_attn(x, context=context, mask=mask, return_attn=return_attention)
                    y = x + update
                    y = y + cross_ff(y)
                    if self.self_attn_after == "modality":  # the published placement: part of the modality's step
                        y = self._self_attend(layer, y)
                    x = y if every[m] else torch.where(valid[:, None, None], y, x)  # absent samples keep theirs
                if return_attention:
                    if attn is None:
                        attn = x.new_zeros(b, cross_attn.fn.heads, x.shape[1], context.shape[1])
                    weights.append({"layer": i, "modality": m, "attn": attn * valid[:, None, None, None]})
            if self.self_attn_after == "layer":  # once per layer, shared across modalities
                x = self._self_attend(layer, x)

        logits = self.to_logits(x)
        if self.prior is not None:
            logits = logits + self.prior([t.to(dev) for t in tensors], present)
        return (logits, weights) if return_attention else logits
