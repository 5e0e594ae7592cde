"""Discrete-time survival: bins, the censored discrete-hazard NLL, risk scores, Cox loss, c-index.

Conventions
-----------
* ``times`` in days (>= 0); ``events`` 1/True = event observed (death), 0/False = censored.
* Bins are right-open intervals ``[edges[k], edges[k+1])``, ``edges[0] = 0``, ``edges[-1] = inf``;
  the label of a sample is the bin holding its (event or censoring) time.
* The model outputs one logit per bin; hazards ``h_k = sigmoid(logit_k)`` = P(T in bin k | T >= bin k),
  survival ``S_k = prod_{j<=k} (1 - h_j)`` = P(T beyond bin k), ``S_{-1} = 1``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def fit_bins(times: np.ndarray, events: np.ndarray, n_bins: int = 4) -> np.ndarray:
    """Bin edges (n_bins + 1,) at the k / n_bins quantiles (numpy's default linear interpolation)
    of the UNCENSORED times; ``edges[0] = 0``, ``edges[-1] = inf``.

    Always returns exactly ``n_bins + 1`` strictly increasing edges (so the model's output size is
    fixed): an interior edge that would tie with its predecessor (many tied event times) is moved up
    to the next float, leaving that bin (almost) empty.  With no uncensored time at all, the
    quantiles of all times are used instead."""
    times, events = np.asarray(times, dtype=float), np.asarray(events).astype(bool)
    if times.size == 0:
        raise ValueError("fit_bins needs at least one time")
    ref = times[events] if events.any() else times
    edges = np.quantile(ref, np.linspace(0.0, 1.0, n_bins + 1))
    edges[0], edges[-1] = 0.0, np.inf
    for k in range(1, n_bins):
        edges[k] = max(edges[k], np.nextafter(edges[k - 1], np.inf))
    return edges


def discretise(times: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index (int64 in [0, n_bins)) of each time: k such that edges[k] <= t < edges[k+1].
    A time equal to an interior edge goes to the upper bin; times beyond the last edge go to the
    last bin, negative times to bin 0."""
    times, edges = np.asarray(times, dtype=float), np.asarray(edges, dtype=float)
    if np.isnan(times).any():
        raise ValueError("discretise: NaN time")
    idx = np.searchsorted(edges, times, side="right") - 1
    return np.clip(idx, 0, len(edges) - 2).astype(np.int64)


def bin_weights(labels: np.ndarray, n_bins: int) -> np.ndarray:
    """Inverse-frequency class weights (n_bins,), ``w_k = N / (K * count_k)`` with K the number of
    non-empty bins (sklearn's "balanced"): the mean over the samples of ``w[labels]`` is exactly 1
    and every non-empty bin carries the same total weight.  Empty bins get weight 0."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=n_bins).astype(float)[:n_bins]
    nonempty = counts > 0
    w = np.zeros(n_bins)
    w[nonempty] = labels.size / (nonempty.sum() * counts[nonempty])
    return w


def nll_loss(logits: Tensor, labels: Tensor, events: Tensor, *, alpha: float = 0.4,
             weights: Tensor | None = None, eps: float = 1e-7) -> Tensor:
    """Discrete-hazard negative log-likelihood with censoring (Zadeh & Schmid 2020; PORPOISE/MCAT form).

    Per sample with label y (bin index) and log-probabilities clamped below at log(eps)
    (i.e. ``log(max(S, eps))``, ``log(max(h, eps))``):
        uncensored term  u = -event * (log S_{y-1} + log h_y)      (death in bin y)
        censored term    c = -(1 - event) * log S_y                (survived past bin y)
        loss_i = (1 - alpha) * (u + c) + alpha * u
    so alpha up-weights the uncensored samples (alpha = 0 is the plain likelihood).  The batch loss
    is the mean of loss_i, or with ``weights`` (n_bins,) the weighted mean
    ``sum_i w[y_i] loss_i / sum_i w[y_i]``.  Computed in log space (logsigmoid) for stability."""
    labels = labels.long().view(-1, 1)
    events = events.to(logits.dtype).view(-1)
    floor = math.log(eps)
    log_h = F.logsigmoid(logits).clamp_min(floor)
    log_s = torch.cumsum(F.logsigmoid(-logits), dim=1)  # log S_k
    log_s_pad = torch.cat([torch.zeros_like(log_s[:, :1]), log_s], dim=1).clamp_min(floor)  # [log S_-1, ...]
    log_s_prev = log_s_pad.gather(1, labels).view(-1)          # log S_{y-1}
    log_s_here = log_s_pad.gather(1, labels + 1).view(-1)      # log S_y
    uncensored = -events * (log_s_prev + log_h.gather(1, labels).view(-1))
    censored = -(1.0 - events) * log_s_here
    loss = (1.0 - alpha) * (uncensored + censored) + alpha * uncensored
    if weights is None:
        return loss.mean()
    w = weights.to(loss).view(-1)[labels.view(-1)]
    return (w * loss).sum() / w.sum().clamp_min(eps)


def risk_from_logits(logits: Tensor) -> Tensor:
    """Risk score (b,) = -sum_k S_k (minus the expected number of bins survived); higher = worse."""
    return -torch.cumprod(1.0 - torch.sigmoid(logits), dim=1).sum(dim=1)


def survival_from_logits(logits: Tensor) -> Tensor:
    """(b, K) probability of surviving past the end of each bin, ``S_k = prod_{j<=k} (1 - h_j)``."""
    return torch.cumprod(1.0 - torch.sigmoid(logits), dim=1)


def cox_loss(risk: Tensor, times: Tensor, events: Tensor) -> Tensor:
    """Cox negative partial log-likelihood with Breslow's handling of ties, averaged over events:
        -1/n_events * sum_{i: event} [ r_i - log sum_{j: t_j >= t_i} exp(r_j) ].
    Returns 0 (keeping the graph) when the batch has no event."""
    risk, times = risk.view(-1), times.view(-1).to(risk.device)
    events = events.view(-1).to(risk.device).bool()
    at_risk = times[None, :] >= times[:, None]  # row i: risk set of i
    log_den = torch.logsumexp(risk[None, :].masked_fill(~at_risk, float("-inf")), dim=1)
    n_events = events.sum()
    if n_events == 0:
        return risk.sum() * 0.0
    return -((risk - log_den) * events).sum() / n_events


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)


def concordance(times, events, risk) -> float:
    """Harrell's c-index (scikit-survival ``concordance_index_censored``; ties in risk count 1/2).
    Accepts numpy arrays or tensors; returns NaN when no pair is comparable (e.g. no event)."""
    from sksurv.metrics import concordance_index_censored

    times, events, risk = _np(times).astype(float).ravel(), _np(events).astype(bool).ravel(), _np(risk).astype(float).ravel()
    try:
        return float(concordance_index_censored(events, times, risk)[0])
    except ValueError:  # all censored / no admissible pair
        return float("nan")


def cox_score_z(x: np.ndarray, times: np.ndarray, events: np.ndarray) -> np.ndarray:
    """Per column of ``x`` (n, p), the z statistic of the univariate Cox score test at beta = 0:
    U / sqrt(I) with U = sum over deaths of (x_i - risk-set mean) and I the summed risk-set variance
    (Breslow ties: the risk set of a death holds every case with time >= its time).  A column
    constant over every risk set scores 0.  Cheap enough to rank thousands of genes in-fold."""
    x = np.nan_to_num(np.asarray(x, dtype=float))
    times, events = np.asarray(times, dtype=float), np.asarray(events).astype(bool)
    order = np.argsort(-times, kind="stable")
    xs, ts = x[order], times[order]
    s1, s2 = np.cumsum(xs, axis=0), np.cumsum(xs ** 2, axis=0)
    end = np.searchsorted(-ts, -ts, side="right") - 1  # last case of each risk set (ties included)
    n_at_risk = (end + 1)[:, None]
    dead = events[order]
    mean = s1[end][dead] / n_at_risk[dead]
    u = (xs[dead] - mean).sum(axis=0)
    info = (s2[end][dead] / n_at_risk[dead] - mean ** 2).clip(min=0).sum(axis=0)
    return np.where(info > 1e-12, u / np.sqrt(np.maximum(info, 1e-12)), 0.0)
