"""The ``coxnet`` architecture on one fold: elastic-net Cox (:func:`fit_coxnet`) on
the fold's normalised, selected, concatenated omics, with the outputs every architecture writes
(:func:`healnet.outputs.fold_outputs`)."""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, replace

import numpy as np

from .data import Cohort
from .folds import FoldData, prepare_fold
from .missing import missing_risks
from .outputs import fold_outputs, surv_times

log = logging.getLogger(__name__)


class CoxnetModel:
    """An elastic-net Cox model fitted by :func:`fit_coxnet` (standardisation included)."""

    def __init__(self, *, scaler, model, alpha: float, alphas: np.ndarray, cv_scores: np.ndarray | None,
                 reason: str, n_features: int):
        self.scaler, self.model, self.alpha, self.alphas = scaler, model, alpha, alphas
        self.cv_scores, self.reason, self.n_features = cv_scores, reason, n_features

    def _x(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"coxnet: expected (n, {self.n_features}) features, got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("coxnet: features have NaN or infinite values")
        return self.scaler.transform(x)

    def predict(self, x) -> np.ndarray:
        """Risk score (linear predictor; higher = worse)."""
        if self.model is None:
            return np.zeros(len(np.asarray(x)))
        return self.model.predict(self._x(x), alpha=self.alpha)

    def predict_survival(self, x, times) -> np.ndarray:
        """Predicted survival (n, len(times)) from the Breslow baseline; constant beyond the
        baseline's time range (1 before its first time, its last value after)."""
        times = np.asarray(times, dtype=float)
        if self.model is None:
            return np.ones((len(np.asarray(x)), len(times)))
        out = []
        for fn in self.model.predict_survival_function(self._x(x), alpha=self.alpha):
            idx = np.searchsorted(fn.x, times, side="right") - 1
            out.append(np.where(idx < 0, 1.0, fn.y[np.clip(idx, 0, len(fn.y) - 1)]))
        return np.asarray(out)


def fit_coxnet(x_train, time, event, *, l1_ratio: float = 0.5, seed: int = 0, n_alphas: int = 30,
               alpha_min_ratio: float = 0.05, n_splits: int = 5, min_events: int = 10,
               path_fraction: float | None = None) -> CoxnetModel:
    """Elastic-net Cox (scikit-survival ``CoxnetSurvivalAnalysis``) on standardised features.

    The alpha path (``n_alphas`` values down to ``alpha_min_ratio`` × the largest) is computed on
    all training cases; alpha is chosen by k-fold inner cross-validation (k = ``n_splits``, or
    fewer when there are fewer events or censored cases than that; folds stratified by event,
    seeded) as the value with the best mean Harrell c-index on the held-out cases (ties: the larger
    alpha; a fold without a comparable pair scores 0.5).  With fewer than ``min_events`` events (or
    k < 2) no CV is run and the documented fixed rule picks the middle of the path
    (``alphas[n_alphas // 2]``).  ``path_fraction`` f skips the CV: alpha is
    ``alphas[int(len(alphas) * f)]`` (the path may stop short of ``n_alphas`` once the fit
    saturates; :data:`healnet.prior.PRIOR_PENALTY`).  Without any event the model predicts risk 0
    and survival 1."""
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler
    from sksurv.linear_model import CoxnetSurvivalAnalysis
    from sksurv.util import Surv

    x = np.asarray(x_train, dtype=float)
    time, event = np.asarray(time, dtype=float).ravel(), np.asarray(event).astype(bool).ravel()
    if x.ndim != 2 or len(x) != len(time) or len(time) != len(event):
        raise ValueError(f"fit_coxnet: x {x.shape}, time {time.shape}, event {event.shape} do not match")
    if not np.isfinite(x).all():
        raise ValueError("fit_coxnet: features have NaN or infinite values")
    scaler = StandardScaler().fit(x)
    if not event.any():
        log.warning("coxnet: no event among %d training cases; predicting a constant", len(time))
        return CoxnetModel(scaler=scaler, model=None, alpha=float("nan"), alphas=np.empty(0), cv_scores=None,
                           reason="no event: constant prediction", n_features=x.shape[1])
    xs, y = scaler.transform(x), Surv.from_arrays(event=event, time=time)

    def coxnet(baseline: bool = False, **kwargs):
        return CoxnetSurvivalAnalysis(l1_ratio=l1_ratio, fit_baseline_model=baseline, max_iter=100000, **kwargs)

    with np.errstate(over="ignore"):  # the Breslow baseline of the path's least penalised end may overflow
        path = coxnet(True, n_alphas=n_alphas, alpha_min_ratio=alpha_min_ratio).fit(xs, y)
    alphas = path.alphas_
    n_events, n_censored = int(event.sum()), int((~event).sum())
    k_folds = min(n_splits, n_events, n_censored) if n_censored else min(n_splits, n_events)
    if path_fraction is not None:
        idx, scores = min(int(len(alphas) * path_fraction), len(alphas) - 1), None
        reason = f"fixed rule, {path_fraction:g} of the way along the alpha path"
    elif n_events < min_events or k_folds < 2:
        idx, scores = len(alphas) // 2, None
        reason = f"{n_events} events (< {min_events}) or too few for 2 folds: fixed rule, the middle of the alpha path"
    else:
        from .survival import concordance

        scores = np.zeros(len(alphas))
        folds = StratifiedKFold(n_splits=k_folds, shuffle=True, random_state=seed).split(xs, event)
        for fit_idx, val_idx in folds:
            inner = coxnet(alphas=alphas).fit(xs[fit_idx], y[fit_idx])
            for k, a in enumerate(alphas):
                c = concordance(time[val_idx], event[val_idx], inner.predict(xs[val_idx], alpha=a))
                scores[k] += (0.5 if math.isnan(c) else c) / k_folds
        idx = int(np.argmax(scores))  # first maximum = the largest alpha among ties (path is decreasing)
        reason = f"inner {k_folds}-fold CV, mean c-index {scores[idx]:.3f}"
    log.info("coxnet: alpha %.4g (%s)", alphas[idx], reason)
    return CoxnetModel(scaler=scaler, model=path, alpha=float(alphas[idx]), alphas=alphas, cv_scores=scores,
                       reason=reason, n_features=x.shape[1])


def _omic_widths(*subsets: FoldData) -> list[int]:
    """Features per modality, from whichever subset has a case with it (a small validation split
    may have no case with some modality)."""
    return [max((np.asarray(x).size for sub in subsets for x in sub.inputs[m] if x is not None), default=0)
            for m in range(len(subsets[0].inputs))]


def omics_matrix(data: FoldData, widths: list[int], drop: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated standardised omics (n, sum of ``widths``) and whether a case has any; an absent
    (or dropped) modality is filled with 0, its training mean; a modality of width 0 (a WSI bag) is
    left out."""
    x = np.zeros((len(data.case_ids), sum(widths)), np.float64)
    has = np.zeros(len(data.case_ids), bool)
    start = 0
    for m, (col, w) in enumerate(zip(data.inputs, widths)):
        for i, v in enumerate(col if w else []):
            if v is not None and not (drop is not None and drop[i, m]):
                x[i, start:start + w] = np.asarray(v, np.float64).ravel()
                has[i] = True
        start += w
    return x, has


def train_coxnet(cohort: Cohort, split: dict[str, list[str]], cfg, out_dir, fold: int) -> dict:
    """Elastic-net Cox on the fold's normalised, selected, concatenated omics (``cfg``: the
    :class:`healnet.train_config.TrainConfig` of the run, its modalities those coxnet reads).  The transforms and
    bins are those of the fold (fitted on its training cases); with no early stopping to drive
    (fit_coxnet picks its penalty by inner cross-validation) the validation cases join the fit."""
    subsets, edges, transforms = prepare_fold(cohort, split, replace(cfg, omic_top_k=None))  # its penalty selects
    train, val, test = subsets["train"], subsets["val"], subsets["test"]
    widths = _omic_widths(train, val, test)
    x_fit, has = (np.concatenate(a) for a in zip(omics_matrix(train, widths), omics_matrix(val, widths)))
    times, events = np.concatenate([train.times, val.times]), np.concatenate([train.events, val.events])
    if not has.any() or x_fit.shape[1] == 0:
        raise ValueError(f"fold {fold}: coxnet needs omics ({list(cfg.modalities)}) for some training case")
    kwargs = dict(cfg.baselines.get("coxnet", {}))
    fitted = fit_coxnet(x_fit[has], times[has], events[has], seed=cfg.seed, **kwargs)
    x_test, _ = omics_matrix(test, widths)
    risk = np.asarray(fitted.predict(x_test), float)
    surv = np.asarray(fitted.predict_survival(x_test, np.array(surv_times(edges, train.times))), float)
    scenarios = missing_risks(lambda drop: np.asarray(fitted.predict(omics_matrix(test, widths, drop)[0]), float),
                              test.case_ids, cfg.modalities, cfg.missing_fractions, cfg.seed + fold)
    return fold_outputs(
        out_dir, fold=fold, architecture="coxnet", modalities=cfg.modalities, test=test, risk=risk, surv=surv,
        scenarios=scenarios, edges=edges, train_times=train.times, transforms=transforms, n_train=int(has.sum()),
        n_val=0, best_epoch=-1, epochs_run=0, device="cpu", history=[],
        checkpoint=lambda: {"coxnet": fitted, "architecture": "coxnet", "modalities": list(cfg.modalities),
                            "config": asdict(cfg), "bin_edges": edges, "transforms": transforms},
        attention=lambda: {"notes": {"attention": "not defined for coxnet"}})
