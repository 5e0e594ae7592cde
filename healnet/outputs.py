"""A trained fold's results: its metrics and the files :func:`healnet.train.train_fold` writes.

:func:`fold_outputs` builds the metrics dict, ``predictions.tsv`` and ``missing.tsv`` for every
architecture (the neural models and coxnet alike) and writes them with ``model.pt``,
``history.tsv``, ``attention.npz`` (:mod:`healnet.attention_io`) and ``metrics.json``.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from preprocessing.io import atomic_path, write_text_atomic

from .attention_io import write_attention
from .data import OmicTransform
from .folds import FoldData
from .survival import concordance

log = logging.getLogger(__name__)

HISTORY = ["epoch", "train_loss", "val_loss", "val_c_index"]


def surv_times(edges: np.ndarray, train_times: np.ndarray) -> list[float]:
    """End of each bin: the interior edges, then the longest training follow-up (the last bin is open)."""
    return [float(e) for e in edges[1:-1]] + [float(np.max(train_times))]


def omics_summary(transforms: dict) -> dict:
    """Per omics modality: whether log2(x + 1) was applied (and why) and the features kept."""
    return {m: t.summary() for m, t in transforms.items() if isinstance(t, OmicTransform)}


def fold_tables(test: FoldData, fold: int, modalities, risk: np.ndarray, surv: np.ndarray,
                missing_risks: list[tuple[str, str, float, np.ndarray, np.ndarray]]):
    """``predictions.tsv`` and ``missing.tsv`` of a fold's test cases (see :mod:`healnet.train`)."""
    has = {f"has_{m}": [x is not None for x in col] for m, col in zip(modalities, test.inputs)}
    predictions = pd.DataFrame({"case_id": test.case_ids, "fold": fold, "risk": risk, "time": test.times,
                                "event": test.events, **has,
                                **{f"surv_{k}": surv[:, k] for k in range(surv.shape[1])}})
    missing = pd.concat([pd.DataFrame({"case_id": test.case_ids, "fold": fold, "scenario": name, "removed": removed,
                                       "fraction": f, "dropped": dropped, "risk": r, "time": test.times,
                                       "event": test.events})
                         for name, removed, f, dropped, r in missing_risks], ignore_index=True)
    return predictions, missing


def write_outputs(out_dir, *, checkpoint: dict, history: list[dict], predictions: pd.DataFrame,
                  missing: pd.DataFrame, attention: dict, metrics: dict) -> None:
    """Write a fold's files; ``attention``: the keyword arguments of :func:`healnet.attention_io.write_attention`."""
    out = Path(out_dir)
    with atomic_path(out / "model.pt") as tmp:
        torch.save(checkpoint, tmp)
    with atomic_path(out / "history.tsv") as tmp:
        pd.DataFrame(history, columns=HISTORY).to_csv(tmp, sep="\t", index=False)
    with atomic_path(out / "predictions.tsv") as tmp:
        predictions.to_csv(tmp, sep="\t", index=False)
    with atomic_path(out / "missing.tsv") as tmp:
        missing.to_csv(tmp, sep="\t", index=False)
    write_attention(out / "attention.npz", **attention)
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=1))


def fold_outputs(out_dir: str | os.PathLike | None, *, fold: int, architecture: str, modalities, test: FoldData,
                 risk: np.ndarray, surv: np.ndarray, scenarios: list, edges: np.ndarray, train_times: np.ndarray,
                 transforms: dict, n_train: int, n_val: int, best_epoch: int, epochs_run: int, device: str,
                 history: list[dict], checkpoint: Callable[[], dict], attention: Callable[[], dict],
                 tuned: dict | None = None, prior: dict | None = None) -> dict:
    """The metrics of a fold (returned) and, with ``out_dir``, its files.

    ``risk`` (n_test,) and ``surv`` (n_test, bins): the test cases' predictions; ``scenarios``:
    :func:`healnet.missing.missing_risks`; ``checkpoint()`` and ``attention()`` give ``model.pt``'s
    content and :func:`~healnet.attention_io.write_attention`'s keyword arguments, asked for only
    when the files are written.  ``tuned`` (the search, :mod:`healnet.tune`) and ``prior`` (the fitted
    elastic net, :mod:`healnet.prior`) are recorded in the metrics when given."""
    c_index = concordance(test.times, test.events, risk) if test.events.sum() else float("nan")
    metrics = {"fold": fold, "architecture": architecture, "modalities": list(modalities), "c_index": c_index,
               "n_train": n_train, "n_val": n_val, "n_test": len(test.case_ids),
               "n_test_events": int(test.events.sum()), "best_epoch": best_epoch, "epochs_run": epochs_run,
               "bin_edges": [float(e) for e in edges], "surv_times": surv_times(edges, train_times),
               "device": device, "omics": omics_summary(transforms)}
    if tuned is not None:
        metrics["tuned"] = tuned
    if prior is not None:
        metrics["prior"] = prior
    log.info("fold %d (%s): c-index %.3f on %d test cases (best epoch %d)", fold, architecture, c_index,
             len(test.case_ids), best_epoch)
    if out_dir is not None:
        predictions, missing = fold_tables(test, fold, modalities, risk, surv, scenarios)
        write_outputs(out_dir, checkpoint=checkpoint(), history=history, predictions=predictions, missing=missing,
                      attention=attention(), metrics=metrics)
    return metrics
