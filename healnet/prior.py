"""A linear elastic-net prior under HEALNet's hazards (``train.omic_prior: elastic_net``).

On a few hundred patients with thousands of z-scored omics features, a penalised linear Cox model
is hard to beat and the attention alone does not reach it (README "Training protocol").  With the
prior, HEALNet's logits are ``attention(x) + eta(x)``: ``eta`` is the linear predictor of an
elastic-net Cox model (:func:`healnet.coxnet.fit_coxnet`, penalty :data:`PRIOR_PENALTY`) fitted on
the fold's training cases only, added to every bin's logit and kept fixed; the head of the attention
starts at zero, so training begins from the elastic net and the attention learns what is left.
A modality a case lacks adds nothing to ``eta``, as it adds nothing to the attention.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from .folds import FoldData

log = logging.getLogger(__name__)

# The prior's penalty: scikit-survival's default path (100 alphas down to 1 % of the largest) at a
# fixed point, 0.3 of the way along it, rather than chosen by inner cross-validation. On the four
# development cohorts (15 folds each, README "Training protocol") this fixed point scored above the
# inner CV's choice on every cohort: the held-out c-index of a few dozen events picks alpha noisily.
PRIOR_PENALTY = {"l1_ratio": 0.5, "n_alphas": 100, "alpha_min_ratio": 0.01, "path_fraction": 0.3}


class LinearPrior(nn.Module):
    """``eta = bias + sum_m present_m * (x_m . w_m)`` over the modalities of width > 0, as (b, 1).

    ``widths``: features per modality (0: not part of the prior, e.g. a WSI bag).  The weights are
    parameters (saved with the model) that :func:`set_elastic_net_prior` fills and freezes; they are
    not ``nn.Linear``, so the L1 penalty on weight matrices does not count them."""

    def __init__(self, widths: Sequence[int]):
        super().__init__()
        self.widths = [int(w) for w in widths]
        self.weights = nn.ParameterList(nn.Parameter(torch.zeros(max(w, 1))) for w in self.widths)
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, tensors: Sequence[torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        eta = self.bias.expand(present.shape[0]).clone()
        for m, (x, w, width) in enumerate(zip(tensors, self.weights, self.widths)):
            if width:
                x = x.reshape(x.shape[0], -1)
                if x.shape[1] != width:
                    raise ValueError(f"modality {m}: the prior expects {width} features, got {x.shape[1]}")
                eta = eta + torch.where(present[:, m, None], x, 0.0) @ w.to(x.dtype)  # absent: never read
        return eta[:, None]


def set_elastic_net_prior(prior: LinearPrior, data: FoldData, *, names: Sequence[str] | None = None, seed: int = 0,
                          **coxnet_kwargs) -> dict:
    """Fit the elastic net on the training cases' omics (``data``: the fold's training cases, their
    features normalised; a table a case lacks is 0, the training mean) and write its coefficients, in
    the units of those features, into ``prior``, frozen.  Returns what was fitted: alpha, how it was
    chosen, and the non-zero coefficients per modality (keyed by ``names``, else by the modality's
    index)."""
    from .coxnet import fit_coxnet, omics_matrix

    used = [m for m, w in enumerate(prior.widths) if w]
    if not used:
        raise ValueError("omic_prior: no omics modality to fit the elastic net on")
    x, _ = omics_matrix(data, prior.widths)
    fitted = fit_coxnet(x, data.times, data.events, seed=seed, **{**PRIOR_PENALTY, **coxnet_kwargs})
    if fitted.model is None:
        coef = np.zeros(sum(prior.widths))
    else:
        coef = fitted.model.coef_[:, int(np.argmin(np.abs(fitted.model.alphas_ - fitted.alpha)))]
    per_feature = coef / fitted.scaler.scale_  # the elastic net saw standardised features
    with torch.no_grad():
        for m, w in zip(used, np.split(per_feature, np.cumsum([prior.widths[m] for m in used])[:-1])):
            prior.weights[m].copy_(torch.as_tensor(w, dtype=prior.weights[m].dtype))
        prior.bias.fill_(float(-(fitted.scaler.mean_ * per_feature).sum()))
    prior.requires_grad_(False)
    nonzero = {(names[m] if names else m): int(np.count_nonzero(prior.weights[m].detach().numpy())) for m in used}
    log.info("elastic-net prior: alpha %.4g (%s), non-zero coefficients per modality %s", fitted.alpha,
             fitted.reason, nonzero)
    return {"alpha": float(fitted.alpha), "reason": fitted.reason, "nonzero": nonzero}
