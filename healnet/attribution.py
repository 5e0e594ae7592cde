"""Attribution and deletion primitives, free of any model or file: Integrated Gradients of a
scalar function, the order and number of units a deletion curve removes, the area under that
curve, and a rank AUC.  They exist apart so that the faithfulness measurements
(:mod:`healnet.faithfulness`) and the per-case scoring (:mod:`healnet.fold_model`) share one
tested definition of each, checkable against analytic answers.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch


def integrated_gradients(forward: Callable[[list[torch.Tensor]], torch.Tensor], inputs: Sequence[torch.Tensor],
                         baselines: Sequence[torch.Tensor] | None = None, *, steps: int = 16,
                         chunk: int = 8) -> list[torch.Tensor]:
    """Integrated Gradients of a scalar output: per input, ``(x - b) * mean_k grad f(b + a_k (x - b))``
    at the midpoints ``a_k = (k + 1/2) / steps`` (exact for f linear or quadratic along the path).

    ``forward`` maps a list of batched inputs (each ``(B, *x.shape)``) to ``(B,)`` outputs; the
    steps go through it ``chunk`` at a time.  Returns attributions shaped like ``inputs``; their
    sum approximates ``f(x) - f(baseline)`` (completeness)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    inputs = [x.detach().float() for x in inputs]
    baselines = [torch.zeros_like(x) for x in inputs] if baselines is None else [b.detach().float() for b in baselines]
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    total = [torch.zeros_like(x) for x in inputs]
    for start in range(0, steps, chunk):
        a = alphas[start:start + chunk]
        path = [(b + a.view(-1, *[1] * x.dim()) * (x - b)).requires_grad_(True) for x, b in zip(inputs, baselines)]
        out = forward(path)
        if out.shape != (len(a),):
            raise ValueError(f"forward must return one value per path point, got shape {tuple(out.shape)}")
        grads = torch.autograd.grad(out.sum(), path, allow_unused=True)
        for t, g in zip(total, grads):
            if g is not None:
                t += g.sum(0)
    return [(x - b) * t / steps for x, b, t in zip(inputs, baselines, total)]


def removal_order(scores: np.ndarray) -> np.ndarray:
    """Unit indices, the highest score first (ties: the earlier unit first)."""
    return np.argsort(-np.asarray(scores, dtype=float), kind="stable")


def removal_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Units removed at each fraction: ``round(f * n)``, at least one, at most ``n``."""
    return [min(n, max(1, int(round(f * n)))) for f in fractions]


def deletion_auc(fractions: Sequence[float], deltas: Sequence[float]) -> float:
    """Area under ``|Δ risk|`` against the removed fraction, from (0, 0) to the largest fraction
    (trapezoids), divided by that fraction: the mean change in risk over the curve."""
    x = np.concatenate([[0.0], np.asarray(fractions, float)])
    y = np.concatenate([[0.0], np.asarray(deltas, float)])
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / x[-1])


def rank_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``scores`` for ``positive`` (ties count half); NaN without both classes."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(np.asarray(scores, float))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
