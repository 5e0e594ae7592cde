"""A cohort for training: per-case WSI bags (in memory, or lazy: :class:`healnet.bags.LazyBag`),
raw omics and survival, and the per-fold omics transform that is fitted on training cases only.
The one loader: of the pipeline's outputs (:func:`open_cohort`) and of plain tables, for
``healnet cv`` and the benchmarks (:func:`load_tables`, :func:`load_porpoise`)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from healnet.survival import cox_score_z

from .bags import open_bags

log = logging.getLogger(__name__)


@dataclass
class Cohort:
    survival: pd.DataFrame  # index case_id; columns time (days), event (0/1)
    bags: dict = field(default_factory=dict)  # case_id -> patches × channels: float32 array or LazyBag
    positions: dict[str, np.ndarray] = field(default_factory=dict)  # case_id -> patches × 2, level-0 px
    omics: dict[str, pd.DataFrame] = field(default_factory=dict)  # modality -> cases × features, raw values
    feature_names: dict[str, list[str]] = field(default_factory=dict)  # modality -> readable names

    @property
    def case_ids(self) -> list[str]:
        return list(self.survival.index)


@dataclass
class OmicTransform:
    """log2(x + 1) where the table allows it, keep the ``top_k`` most variable features (None: all),
    z-score: all fitted on training cases.

    The log is a decision made per table when it is fitted (``log_applied``, with ``log_reason``):
    asked for (``log_transform``) and the training values are all >= 0, as counts and TPM are.  A
    table with negative values (already z-scored RNA, copy-number calls) is never logged: clipping
    it at 0 would erase every below-mean value.  Missing values (a copy-number segment without a
    call, a gap in a user's table) are ignored by the fitted statistics and become 0 after the
    z-score: the training cases' mean."""

    top_k: int | None = None
    select: str = "variance"  # how top_k ranks: "variance", or "cox": |univariate Cox score z| on the training cases
    log_transform: bool = True
    name: str = "omics"  # the modality, for the log
    columns: list[str] = field(default_factory=list)
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    log_applied: bool = False
    log_reason: str = ""

    def _prep(self, table: pd.DataFrame) -> pd.DataFrame:
        return np.log2(table.clip(lower=0) + 1) if self.log_applied else table  # a stray negative test value: 0

    def _decide_log(self, table: pd.DataFrame) -> None:
        lowest = np.nanmin(table.to_numpy(dtype=float)) if table.size else 0.0
        if not self.log_transform:
            self.log_applied, self.log_reason = False, "not requested"
        elif lowest < 0:
            self.log_applied = False
            self.log_reason = f"skipped: the table has negative values (min {lowest:.3g}), so it is not counts or TPM"
            log.warning("%s: log2(x + 1) %s", self.name, self.log_reason)
        else:
            self.log_applied, self.log_reason = True, "applied: every training value is >= 0"

    def fit(self, table: pd.DataFrame, times: np.ndarray | None = None,
            events: np.ndarray | None = None) -> "OmicTransform":
        """``times`` (days) and ``events`` of the table's rows: needed only by ``select="cox"``."""
        self._decide_log(table)
        x = self._prep(table)
        if self.top_k is None:  # every feature, in the table's order
            self.columns = list(x.columns)
        elif self.select == "cox":  # the most prognostic features, kept in the table's order
            if times is None or events is None:
                raise ValueError(f"{self.name}: select='cox' needs the training cases' times and events")
            z = np.abs(cox_score_z(x.fillna(x.mean()).to_numpy(dtype=float), times, events))
            keep = np.sort(np.argsort(-z, kind="stable")[: self.top_k])
            self.columns = list(x.columns[keep])
        else:
            variance = x.var(axis=0).fillna(0).sort_values(ascending=False, kind="stable")
            self.columns = list(variance.index[: self.top_k])
        self.mean = x[self.columns].mean(axis=0).to_numpy()
        self.std = np.maximum(x[self.columns].std(axis=0).fillna(0).to_numpy(), 1e-6)
        return self

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        x = self._prep(table.reindex(columns=self.columns))
        z = (x.to_numpy(dtype=np.float64) - self.mean) / self.std
        return np.nan_to_num(z, nan=0.0).astype(np.float32)

    def summary(self) -> dict:
        """What was done to the table, for the fold's metrics.json."""
        return {"log2": self.log_applied, "log_reason": self.log_reason, "features": len(self.columns)}


def cohort_of(clinical: pd.DataFrame, omics: dict[str, pd.DataFrame], bags: dict | None = None,
              positions: dict[str, np.ndarray] | None = None) -> Cohort:
    """The one way a :class:`Cohort` is built: the cases of ``clinical`` (columns case_id, status,
    time, event) with status ``ok`` and at least one usable modality: a bag (``bags``, case ->
    patches) or a row in one of the ``omics`` tables (cases × features).  Survival keeps time and
    event as given; bags, positions and omics tables are kept whole."""
    bags = {} if bags is None else bags
    surv = clinical.set_index("case_id")
    surv = surv[surv["status"] == "ok"]
    with_omics = [surv.index.isin(t.index) for t in omics.values()] or [np.zeros(len(surv), bool)]
    usable = surv.index.isin(list(bags)) | np.any(with_omics, axis=0)
    return Cohort(survival=surv.loc[usable, ["time", "event"]], bags=bags, positions=dict(positions or {}),
                  omics=dict(omics))


def open_cohort(clinical: str | os.PathLike, feature_stores: list[str], omics: dict[str, str | os.PathLike]) -> Cohort:
    """:func:`cohort_of` the pipeline's outputs: the survival table (parquet), feature stores
    and omics tables (parquet).  Bags stay on disk (:class:`LazyBag`), omics tables are read
    (they are small)."""
    survival = pd.read_parquet(clinical)
    bags, positions, _ = open_bags(feature_stores)
    tables = {m: pd.read_parquet(p) for m, p in omics.items()}
    return cohort_of(survival, tables, bags, positions)


def build_cohort(tables: dict[str, pd.DataFrame], clinical: pd.DataFrame, source: str) -> Cohort:
    """The cohort of plain tables (``healnet cv``): the cases of ``clinical`` (survival rows) with
    status ``ok`` and at least one omics row, built by :func:`cohort_of` (no slides here);
    time and event typed (float, int) and each table cut to the cohort's cases.  An error if no
    case is left."""
    cohort = cohort_of(clinical, tables)
    survival = cohort.survival
    if not len(survival):
        raise ValueError(f"{source}: no case with a valid survival time is in any omics table")
    dropped = int((clinical["status"] == "ok").sum()) - len(survival)
    if dropped:
        log.warning("%d case(s) of the clinical table have no omics row and are left out", dropped)
    cohort.survival = survival.astype({"time": float, "event": int})
    cohort.omics = {m: t.loc[t.index.intersection(survival.index)] for m, t in tables.items()}
    return cohort


def load_tables(omics: dict[str, str], clinical: str) -> Cohort:
    """:func:`build_cohort` of omics table files and a clinical table file."""
    from preprocessing.tabular import read_clinical_table, read_omics_table

    return build_cohort({m: read_omics_table(p) for m, p in omics.items()}, read_clinical_table(clinical), clinical)


def load_porpoise(path: str) -> Cohort:
    """:func:`build_cohort` of a PORPOISE/MCAT table (modalities rna, cnv, mutations)."""
    from preprocessing.tabular import read_porpoise_table

    tables, clinical = read_porpoise_table(path)
    return build_cohort(tables, clinical, path)
