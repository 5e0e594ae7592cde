"""What a model's name asks for, without importing torch: the workflow plans with it (rule train's
inputs), and planning all of TCGA must not pay for loading the learner."""
from __future__ import annotations

from typing import Sequence


def named_modalities(name: str) -> tuple[str, ...] | None:
    """The modalities ``healnet-<m1>[-<m2>...]`` names, in its order; None for any other architecture."""
    return tuple(name[len("healnet-"):].split("-")) if name.startswith("healnet-") else None


def requested_modalities(name: str, configured: Sequence[str]) -> tuple[str, ...]:
    """The modalities a run of ``name`` loads: those its name lists (``healnet-wsi-rna-cnv``), else the
    configured ``train.modalities``: a model over more modalities than the others needs no second config."""
    return named_modalities(name) or tuple(configured)
