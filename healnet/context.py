"""Reading a long context once: the CPU fast path behind HEALNet's cross-attention.

A context (e.g. 20 000 patches x 1024 channels) dwarfs the latents, and every cross-attention
weight set of a modality would otherwise LayerNorm and project it again.  Here it is normalised
and projected once per forward for all of them (:func:`context_keys_values`): per-token LayerNorm
statistics in one pass (:func:`token_stats`), each LayerNorm's affine folded into the bias-free
projection, and one projection onto every weight set at once (:func:`project`, through oneDNN on the
CPU where PyTorch has it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange

if TYPE_CHECKING:
    from .model import PreNorm


def token_stats(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token (last dim) mean and 1 / sqrt(var + eps), as LayerNorm takes them.

    ``torch.var_mean`` over the channels is ~15× slower on the CPU than a mean and a 2-norm (one
    vectorised pass each), so the variance is E[x²] - mean²; that cancels where the mean dwarfs the
    spread, and those tokens (none in z-scored features) are recomputed with ``var_mean``."""
    mu = x.mean(dim=-1, keepdim=True)
    var = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square() / x.shape[-1] - mu.square()
    off = mu.square() > 4 * var  # relative error of the one-pass variance grows with mean² / var
    if off.any():
        var_off, mu_off = torch.var_mean(x[off[..., 0]], dim=-1, unbiased=False, keepdim=True)
        var, mu = var.masked_scatter(off, var_off), mu.masked_scatter(off, mu_off)
    return mu, torch.rsqrt(var + eps)


def _onednn_linear():
    try:  # an internal op of PyTorch's CPU build (Inductor's): absent elsewhere, then F.linear
        return torch.ops.mkldnn._linear_pointwise if torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):
        return None


_ONEDNN_LINEAR = _onednn_linear()


class _ContextProjection(torch.autograd.Function):
    """``F.linear(x, w)`` (no bias) through oneDNN: for a tall context and a narrow ``w`` ~1.7× faster
    on the CPU than the GEMM behind F.linear (same result up to summation order)."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return _ONEDNN_LINEAR(x, w, None, "none", [], "")

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        grad_x = grad @ w if ctx.needs_input_grad[0] else None
        grad_w = grad.flatten(0, -2).t() @ x.flatten(0, -2) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w


def project(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, w)``; float32 on the CPU through oneDNN where PyTorch has it."""
    if _ONEDNN_LINEAR is not None and x.device.type == "cpu" and x.dtype == w.dtype == torch.float32:
        return _ContextProjection.apply(x, w)
    return F.linear(x, w)


def context_keys_values(context: torch.Tensor, blocks: Sequence["PreNorm"]):
    """Keys and values of ``context`` for several cross-attention blocks (PreNorm(Attention)) at once.

    Per block, ``to_kv(LayerNorm(context))`` with the LayerNorm's affine and its centring folded into
    the bias-free projection: with ``W' = W g`` and ``Wc = W' - mean_c(W')`` (each row centred over the
    channels), ``W (g * (x - mu) * rstd + b) = rstd * (x Wc^T) + W b``.  So the raw context is read once
    for the statistics and once for ONE projection onto every block's weights (and once more in
    backward): no normalised copy is made or kept for backward.  Returns per block (keys, values),
    each (b, heads, n, dim_head)."""
    weights = torch.cat([blk.fn.to_kv.weight * blk.norm_context.weight for blk in blocks])
    biases = torch.cat([blk.fn.to_kv.weight @ blk.norm_context.bias for blk in blocks])
    _, rstd = token_stats(context, blocks[0].norm_context.eps)
    kv = torch.addcmul(biases, project(context, weights - weights.mean(dim=-1, keepdim=True)), rstd)
    out = []
    for blk, chunk in zip(blocks, kv.split([blk.fn.to_kv.out_features for blk in blocks], dim=-1)):
        out.append(tuple(rearrange(t, "b n (h d) -> b h n d", h=blk.fn.heads) for t in chunk.chunk(2, dim=-1)))
    return out

