"""The demo's planted truth as the faithfulness measurements score against it: which WSI patches
of a test case lie on planted tumour texture, and which genes carry the planted signal.

Reads the files ``generators.demo`` writes (through :mod:`preprocessing.truth`, so ``healnet``
never imports ``generators``) and maps the truth's cells onto a case's patches.  Apart from
:mod:`healnet.faithfulness` because it is the ground truth, not a measurement: only the generated
demo has one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd

from .fold_model import CaseInput

TUMOUR_SHARE = 0.5  # a patch is "tumour" when this share of its tissue is planted tumour texture


@dataclass
class PlantedTruth:
    """Where the demo planted its signal (``generators.demo``: truth_tumour.npz, truth_genes.tsv)."""

    tumour: dict[str, np.ndarray] = field(default_factory=dict)  # slide id -> tumour share per cell
    tissue: dict[str, np.ndarray] = field(default_factory=dict)  # slide id -> tissue share per cell
    cell_px: int = 16
    genes: set[str] = field(default_factory=set)  # planted gene ids, without Ensembl version

    @classmethod
    def read(cls, tumour: str | os.PathLike | None = None, genes: str | os.PathLike | None = None) -> "PlantedTruth":
        from preprocessing.truth import read_truth_tumour

        truth = cls()
        if tumour and os.path.exists(tumour):
            truth.tumour, truth.tissue, truth.cell_px = read_truth_tumour(tumour)
        if genes and os.path.exists(genes):
            table = pd.read_csv(genes, sep="\t")
            truth.genes = {str(g).split(".")[0] for g in table["gene_id"]}
        return truth

    def patch_tumour_share(self, slide: str, coords: np.ndarray, size0: int) -> np.ndarray:
        """Tumour share of each patch's tissue (cells whose centre lies in the patch; 0 without tissue)."""
        tumour, tissue, cell = self.tumour[slide], self.tissue[slide], self.cell_px
        out = np.zeros(len(coords))
        for i, (x, y) in enumerate(np.asarray(coords)):
            j0, i0 = int(np.ceil(x / cell - 0.5)), int(np.ceil(y / cell - 0.5))
            j1, i1 = int(np.ceil((x + size0) / cell - 0.5)), int(np.ceil((y + size0) / cell - 0.5))
            t, s = tumour[max(i0, 0):i1, max(j0, 0):j1].sum(), tissue[max(i0, 0):i1, max(j0, 0):j1].sum()
            out[i] = t / s if s > 0 else 0.0
        return out


def _patch_size(coords: np.ndarray) -> int:
    """A patch's side in level-0 px when no patch file tells: the grid step of the coordinates."""
    steps = [np.diff(np.unique(coords[:, a])) for a in (0, 1)]
    steps = np.concatenate([s[s > 0] for s in steps])
    return int(np.gcd.reduce(steps.astype(np.int64))) if steps.size else 256


def case_tumour_labels(case: CaseInput, truth: PlantedTruth, patch_sizes: Mapping[str, int] | None = None
                       ) -> np.ndarray | None:
    """Per WSI patch of ``case``: on planted tumour (True) or not; None when its slides have no truth."""
    from .bags import case_of_slide

    if case.coords is None or not truth.tumour:
        return None
    slides = case.slides
    if slides is None:  # an in-memory bag: the case's only slide with a truth, if it has one
        mine = [s for s in truth.tumour if case_of_slide(s) == case.case_id]
        if len(mine) != 1:
            return None
        slides = np.full(len(case.coords), mine[0])
    if any(s not in truth.tumour for s in set(slides.tolist())):
        return None
    share = np.zeros(len(case.coords))
    for s in set(slides.tolist()):
        on = slides == s
        size = (patch_sizes or {}).get(s) or _patch_size(case.coords[on])
        share[on] = truth.patch_tumour_share(s, case.coords[on], int(size))
    return share >= TUMOUR_SHARE
