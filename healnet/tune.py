"""Optional in-fold hyper-parameter search (Optuna, seeded TPE), nested inside a cross-validation fold.

The HEALNet paper tuned its hyper-parameters per cohort; here each outer fold tunes on its own
inner split so the search never sees the fold's test cases: every trial trains on ``split["train"]``
and is scored by Harrell's c-index on ``split["val"]``.  ``split["test"]`` is not passed to
:func:`healnet.train.train_fold` at all.

How a trial uses the validation cases mirrors what the outer run (:func:`healnet.train.train_fold`)
does with them, so the score measures the configuration that will actually be trained:

* ``early_stopping == "none"``: the outer run merges the validation cases into the training and
  runs the whole one-cycle schedule, keeping the LAST epoch.  A trial runs the inner split
  ``{"train": train, "val": [], "test": val}`` with ``early_stopping="none"``: the (empty) validation
  set merges into nothing, the whole schedule runs, the last epoch is kept and the validation cases
  are only scored (as the inner "test").  Switching the trial to ``early_stopping="loss"`` with
  ``patience=epochs`` instead would also run the whole schedule, but would keep the epoch of best
  validation loss, i.e. pick a checkpoint on the very cases that score it (optimistic) and not the
  checkpoint the outer run keeps (which makes ``epochs`` nearly irrelevant to the search).
* ``early_stopping in ("loss", "c_index")``: the outer run trains on ``train`` and stops on ``val``
  with ``patience``; a trial does exactly that (``{"train": train, "val": val, "test": val}``,
  early stopping and patience as configured) and reports the c-index of the checkpoint kept.  That
  checkpoint was chosen on the same cases, as in the outer run, for every trial alike.

The best trial's parameters become :class:`~healnet.train_config.TrainConfig` overrides (see
:func:`tuned_config`, called by ``train_fold`` when ``cfg.tune_trials > 0``).
"""
from __future__ import annotations

import logging
import math
from dataclasses import replace

import numpy as np

from . import train as _train  # module attribute access: train_fold is looked up at call time
from .data import Cohort
from .survival import concordance

log = logging.getLogger(__name__)

SPACE: dict[str, tuple] = {
    "lr": ("log_uniform", 3e-4, 3e-3),
    "l1": ("log_uniform", 1e-4, 3e-3),
    "latent_dim": ("categorical", (16, 32, 64)),
    "dropout": ("uniform", 0.1, 0.5),
    "epochs": ("categorical", (20, 30, 40)),
}
"""The search space, one entry per sampled parameter: ``(kind, low, high)`` or ``("categorical", choices)``.

* ``lr``: peak learning rate of the one-cycle schedule, log-uniform in [3e-4, 3e-3] -> ``TrainConfig.lr``;
* ``l1``: weight of the L1 penalty, log-uniform in [1e-4, 3e-3] -> ``TrainConfig.l1``;
* ``latent_dim``: width of the HEALNet latent array, one of 16, 32, 64 -> ``model["latent_dim"]``;
* ``dropout``: one value, uniform in [0.1, 0.5], for both ``model["attn_dropout"]`` and ``model["ff_dropout"]``;
* ``epochs``: length of the schedule, one of 20, 30, 40 -> ``TrainConfig.epochs``.

``model`` keys are merged into ``cfg.model`` (baseline builders ignore those they do not take)."""

MODEL_KEYS = {"latent_dim": ("latent_dim",), "dropout": ("attn_dropout", "ff_dropout")}


def sample(trial) -> dict:
    """One point of :data:`SPACE` drawn by an Optuna ``trial``: ``{name: value}``."""
    point = {}
    for name, spec in SPACE.items():
        kind = spec[0]
        if kind == "categorical":
            point[name] = trial.suggest_categorical(name, list(spec[1]))
        else:
            point[name] = trial.suggest_float(name, spec[1], spec[2], log=kind == "log_uniform")
    return point


def overrides(point: dict, cfg) -> dict:
    """:class:`~healnet.train_config.TrainConfig` overrides of a point of :data:`SPACE`; ``model`` is
    ``cfg.model`` with the point's model keys merged in."""
    out = {k: v for k, v in point.items() if k not in MODEL_KEYS}
    model = dict(cfg.model)
    for name, keys in MODEL_KEYS.items():
        if name in point:
            model.update({k: point[name] for k in keys})
    out["model"] = model
    return out


def inner_split(split: dict[str, list[str]], cfg) -> tuple[dict[str, list[str]], object]:
    """The split and config a trial trains with (see the module docstring); never holds ``split["test"]``."""
    base = replace(cfg, tune_trials=0)  # no search inside the search
    if cfg.early_stopping == "none":
        return {"train": list(split["train"]), "val": [], "test": list(split["val"])}, base
    return {"train": list(split["train"]), "val": list(split["val"]), "test": list(split["val"])}, base


def search(cohort: Cohort, split: dict[str, list[str]], cfg, *, trials: int, seed: int, fold: int = 0) -> dict:
    """Optuna search (TPE sampler seeded with ``seed``: the same seed gives the same trials) of
    ``trials`` configurations from :data:`SPACE`, each trained on ``split["train"]`` and scored by
    Harrell's c-index on ``split["val"]``.  ``split["test"]`` is never used.

    Returns ``{"params": TrainConfig overrides of the best trial, "best_trial", "best_c_index",
    "seed", "early_stopping", "n_train", "n_val", "trials": [one dict per trial: trial, the sampled
    values, c_index (on the validation cases), best_epoch, epochs_run, state]}``."""
    import optuna  # lazy: only a search needs it

    if trials < 1:
        raise ValueError(f"search: trials must be >= 1, got {trials}")
    surv = cohort.survival
    val = [c for c in split["val"] if c in surv.index]
    if not val or math.isnan(concordance(surv.loc[val, "time"].to_numpy(), surv.loc[val, "event"].to_numpy(),
                                         np.zeros(len(val)))):
        raise ValueError(f"fold {fold}: the validation split ({len(val)} cases with a survival time) has no "
                         f"comparable pair, so no c-index to tune on; use tune_trials: 0 or a larger val_fraction")
    inner, base = inner_split(split, cfg)
    records: dict[int, dict] = {}

    def objective(trial) -> float:
        point = sample(trial)
        metrics = _train.train_fold(cohort, inner, replace(base, **overrides(point, base)), None, fold=fold)
        records[trial.number] = {"best_epoch": metrics["best_epoch"], "epochs_run": metrics["epochs_run"]}
        log.info("fold %d tuning trial %d %s: validation c-index %.3f", fold, trial.number, point,
                 metrics["c_index"])
        return metrics["c_index"]

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        study.optimize(objective, n_trials=trials)
    finally:
        optuna.logging.set_verbosity(verbosity)
    table = [{"trial": t.number, **t.params,
              "c_index": float("nan") if t.value is None else float(t.value),
              **records.get(t.number, {}), "state": t.state.name} for t in study.trials]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise RuntimeError(f"fold {fold}: no tuning trial completed: {table}")
    best = study.best_trial
    return {"params": overrides(best.params, cfg), "best_trial": best.number, "best_c_index": float(best.value),
            "seed": seed, "early_stopping": cfg.early_stopping, "n_train": len(inner["train"]), "n_val": len(val),
            "trials": table}


def tuned_config(cohort: Cohort, split: dict[str, list[str]], cfg, fold: int = 0):
    """``(cfg with the best overrides of a cfg.tune_trials-trial search, the search record)``; the
    search is seeded with ``cfg.seed`` and ``tune_trials`` stays in the returned config for the record."""
    result = search(cohort, split, cfg, trials=cfg.tune_trials, seed=cfg.seed, fold=fold)
    return replace(cfg, **result["params"]), result
