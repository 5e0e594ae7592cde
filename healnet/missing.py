"""Which modality a test (or training) case loses: the missing-modality scenarios of ``missing.tsv``.

* :func:`missing_scenarios`: ``full``, ``no_<m>`` (m removed from every case) and ``mixed`` (each
  case loses one modality drawn uniformly, seeded);
* :func:`curve_scenarios`: the missing-modality curves, ``<removed>@<fraction>`` (each modality and
  each pair, :func:`removal_sets`, removed from that fraction of the cases);
* :func:`trained_missing`: the drop mask of ``TrainConfig.train_missing`` (training with missingness);
* :func:`missing_risks`: a fitted model's test risks under all of the above.

A drop mask is (n_cases, M) bool: True = treat that (case, modality) input as absent.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def missing_scenarios(n_cases: int, modalities: tuple[str, ...], seed: int) -> list[tuple[str, str, np.ndarray]]:
    """(scenario, dropped modality per case, drop mask (n, M)): ``full``, ``no_<m>`` and ``mixed``
    (each case loses one modality drawn uniformly, seeded)."""
    M = len(modalities)
    out = [("full", np.array([""] * n_cases, dtype=object), np.zeros((n_cases, M), bool))]
    for m, name in enumerate(modalities):
        drop = np.zeros((n_cases, M), bool)
        drop[:, m] = True
        out.append((f"no_{name}", np.array([name] * n_cases, dtype=object), drop))
    pick = np.random.default_rng(seed).integers(0, M, size=n_cases)
    drop = np.zeros((n_cases, M), bool)
    drop[np.arange(n_cases), pick] = True
    out.append(("mixed", np.array([modalities[k] for k in pick], dtype=object), drop))
    return out


def removal_sets(modalities: tuple[str, ...]) -> list[tuple[str, ...]]:
    """What a missing-modality curve removes: each modality alone, and each pair of them (with two or
    more modalities; a model of one modality has no curve: without it nothing is left)."""
    if len(modalities) < 2:
        return []
    singles = [(m,) for m in modalities]
    pairs = [(a, b) for i, a in enumerate(modalities) for b in modalities[i + 1:]]
    return singles + pairs


def curve_scenarios(case_ids: list[str], modalities: tuple[str, ...], fractions: Sequence[float],
                    seed: int) -> list[tuple[str, str, float, np.ndarray, np.ndarray]]:
    """Per removal set and fraction f: (scenario ``"<set>@<f>"``, set name, f, dropped modality per
    case, drop mask (n, M)).  ``round(f * n)`` cases lose the set's modality; for a pair each of them
    loses one of the two (alternating), so no case is left with nothing.  The cases are the first of
    one seeded permutation per set, so they are nested: those missing at 30 % include those at 10 %."""
    n, out = len(case_ids), []
    for removed in removal_sets(modalities):
        name = "+".join(removed)
        order = np.random.default_rng([seed, *map(ord, name)]).permutation(n)
        for f in fractions:
            chosen = order[: int(round(f * n))]
            which = np.array([modalities.index(removed[k % len(removed)]) for k in range(len(chosen))], dtype=int)
            drop = np.zeros((n, len(modalities)), bool)
            drop[chosen, which] = True
            dropped = np.array([""] * n, dtype=object)
            dropped[chosen] = [modalities[k] for k in which]
            out.append((f"{name}@{f:g}", name, float(f), dropped, drop))
    return out


def trained_missing(case_ids: list[str], modalities: tuple[str, ...], setting: dict | None,
                    seed: int) -> np.ndarray | None:
    """The drop mask of ``cfg.train_missing`` (``{"removed": ..., "fraction": ...}``) for these cases
    (None when unset)."""
    if not setting:
        return None
    removed, fraction = setting["removed"], float(setting["fraction"])
    if any(m not in modalities for m in removed.split("+")):
        raise ValueError(f"train_missing removes {removed!r}, not among the model's modalities {list(modalities)}")
    for name, _, f, _, drop in curve_scenarios(case_ids, modalities, (fraction,), seed):
        if name == f"{removed}@{fraction:g}":
            return drop
    raise ValueError(f"train_missing: {removed!r} is not a removal set of {list(modalities)} "
                     f"(one modality, or two joined by '+', in the configured order)")


def missing_risks(risk_of: Callable[[np.ndarray], np.ndarray], case_ids: list[str], modalities: tuple[str, ...],
                  fractions: Sequence[float], seed: int) -> list[tuple[str, str, float, np.ndarray, np.ndarray]]:
    """(scenario, removed, fraction, dropped, risk) for :func:`missing_scenarios` (removed empty,
    fraction NaN) and then :func:`curve_scenarios`; ``risk_of(drop)`` predicts the cases with those
    inputs treated as absent."""
    n = len(case_ids)
    rows = [(name, "", np.nan, dropped, risk_of(drop)) for name, dropped, drop in missing_scenarios(n, modalities, seed)]
    return rows + [(name, removed, f, dropped, risk_of(drop)) for name, removed, f, dropped, drop
                   in curve_scenarios(case_ids, modalities, fractions, seed)]
