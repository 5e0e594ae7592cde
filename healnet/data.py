"""A cohort in memory for training: per-case WSI bags, raw omics and survival, and the
per-fold transforms that are fitted on training cases only."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def case_of_slide(slide_id: str) -> str:
    """TCGA case barcode (``TCGA-XX-XXXX``) of a slide id or file name."""
    return "-".join(slide_id.split("-")[:3])


@dataclass
class Cohort:
    survival: pd.DataFrame  # index case_id; columns time (days), event (0/1)
    bags: dict[str, np.ndarray] = field(default_factory=dict)  # case_id -> patches × channels (float32)
    positions: dict[str, np.ndarray] = field(default_factory=dict)  # case_id -> patches × 2, level-0 px
    omics: dict[str, pd.DataFrame] = field(default_factory=dict)  # modality -> cases × features, raw values
    feature_names: dict[str, list[str]] = field(default_factory=dict)  # modality -> readable names

    @property
    def case_ids(self) -> list[str]:
        return list(self.survival.index)


def load_bags(feature_stores: list[str | os.PathLike]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """Patch features of every slide, concatenated per case; slides with no patches add nothing."""
    from preprocessing.features import read_features

    per_case: dict[str, list] = {}
    dim = 0
    for path in sorted(map(str, feature_stores)):
        feats, coords, attrs = read_features(path)
        dim = feats.shape[1]
        if len(feats):
            per_case.setdefault(case_of_slide(os.path.basename(path)), []).append((feats, coords))
    bags = {c: np.concatenate([f for f, _ in v]).astype(np.float32) for c, v in per_case.items()}
    positions = {c: np.concatenate([p for _, p in v]).astype(np.float32) for c, v in per_case.items()}
    return bags, positions, dim


@dataclass
class OmicTransform:
    """log2(x + 1), keep the ``top_k`` most variable features, z-score: all fitted on training cases."""

    top_k: int = 256
    log_transform: bool = True
    columns: list[str] = field(default_factory=list)
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def _prep(self, table: pd.DataFrame) -> pd.DataFrame:
        return np.log2(table.clip(lower=0) + 1) if self.log_transform else table

    def fit(self, table: pd.DataFrame) -> "OmicTransform":
        x = self._prep(table)
        variance = x.var(axis=0).fillna(0).sort_values(ascending=False, kind="stable")
        self.columns = list(variance.index[: self.top_k])
        self.mean = x[self.columns].mean(axis=0).to_numpy()
        self.std = np.maximum(x[self.columns].std(axis=0).fillna(0).to_numpy(), 1e-6)
        return self

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        x = self._prep(table.reindex(columns=self.columns))
        return ((x.to_numpy(dtype=np.float64) - self.mean) / self.std).astype(np.float32)
