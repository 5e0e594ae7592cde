"""The ``coxnet`` architecture on one fold: elastic-net Cox (:func:`healnet.baselines.fit_coxnet`) on
the fold's normalised, selected, concatenated omics, with the outputs every architecture writes
(:func:`healnet.outputs.fold_outputs`)."""
from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np

from .data import Cohort
from .folds import FoldData, prepare_fold
from .missing import missing_risks
from .outputs import fold_outputs, surv_times


def _omic_widths(*subsets: FoldData) -> list[int]:
    """Features per modality, from whichever subset has a case with it (a small validation split
    may have no case with some modality)."""
    return [max((np.asarray(x).size for sub in subsets for x in sub.inputs[m] if x is not None), default=0)
            for m in range(len(subsets[0].inputs))]


def _omics_matrix(data: FoldData, widths: list[int], drop: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated standardised omics (n, sum of ``widths``) and whether a case has any; an absent
    (or dropped) modality is filled with 0, its training mean."""
    x = np.zeros((len(data.case_ids), sum(widths)), np.float64)
    has = np.zeros(len(data.case_ids), bool)
    start = 0
    for m, (col, w) in enumerate(zip(data.inputs, widths)):
        for i, v in enumerate(col):
            if v is not None and not (drop is not None and drop[i, m]):
                x[i, start:start + w] = np.asarray(v, np.float64).ravel()
                has[i] = True
        start += w
    return x, has


def train_coxnet(cohort: Cohort, split: dict[str, list[str]], cfg, out_dir, fold: int) -> dict:
    """Elastic-net Cox on the fold's normalised, selected, concatenated omics (``cfg``: the
    :class:`healnet.train.TrainConfig` of the run, its modalities those coxnet reads).  The transforms and
    bins are those of the fold (fitted on its training cases); with no early stopping to drive
    (fit_coxnet picks its penalty by inner cross-validation) the validation cases join the fit."""
    from .baselines import fit_coxnet  # lazy: the baselines are optional

    subsets, edges, transforms = prepare_fold(cohort, split, replace(cfg, omic_top_k=None))  # its penalty selects
    train, val, test = subsets["train"], subsets["val"], subsets["test"]
    widths = _omic_widths(train, val, test)
    x_fit, has = (np.concatenate(a) for a in zip(_omics_matrix(train, widths), _omics_matrix(val, widths)))
    times, events = np.concatenate([train.times, val.times]), np.concatenate([train.events, val.events])
    if not has.any() or x_fit.shape[1] == 0:
        raise ValueError(f"fold {fold}: coxnet needs omics ({list(cfg.modalities)}) for some training case")
    kwargs = dict(cfg.baselines.get("coxnet", {}))
    fitted = fit_coxnet(x_fit[has], times[has], events[has], seed=cfg.seed, **kwargs)
    x_test, _ = _omics_matrix(test, widths)
    risk = np.asarray(fitted.predict(x_test), float)
    surv = np.asarray(fitted.predict_survival(x_test, np.array(surv_times(edges, train.times))), float)
    scenarios = missing_risks(lambda drop: np.asarray(fitted.predict(_omics_matrix(test, widths, drop)[0]), float),
                              test.case_ids, cfg.modalities, cfg.missing_fractions, cfg.seed + fold)
    return fold_outputs(
        out_dir, fold=fold, architecture="coxnet", modalities=cfg.modalities, test=test, risk=risk, surv=surv,
        scenarios=scenarios, edges=edges, train_times=train.times, transforms=transforms, n_train=int(has.sum()),
        n_val=0, best_epoch=-1, epochs_run=0, device="cpu", history=[],
        checkpoint=lambda: {"coxnet": fitted, "architecture": "coxnet", "modalities": list(cfg.modalities),
                            "config": asdict(cfg), "bin_edges": edges, "transforms": transforms},
        attention=lambda: {"notes": {"attention": "not defined for coxnet"}})
