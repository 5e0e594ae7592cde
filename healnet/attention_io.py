"""The ``attention.npz`` of a trained fold: the one place its keys are spelled, its writer and its reader.

An ``np.savez_compressed`` archive of plain arrays (no pickles)::

    case_ids                    str (n_cases,)        the fold's test cases
    wsi_attention/<case_id>     float32 (n_patches,)  attention per patch (the mean over layers,
                                                      heads and latents), >= 0
    wsi_coords/<case_id>        int64 (n_patches, 2)  top-left (x, y) of each patch, level-0 px, in
                                                      the same order
    slide/<case_id>             str (n_patches,) or ()  optional: the slide of each patch (a case's
                                                      bag concatenates its slides in slide-id order)
    <m>_features                str (n_genes,)        feature ids of omics modality m's tokens (the
                                                      omics table's columns: Ensembl ids)
    <m>_attention/<case_id>     float32 (n_genes,)    attention per feature of omics modality m
    notes                       str ()                free text (JSON), ignored by the reader

Keys may be absent for a case without a slide, or for a modality whose attention is not per gene
(all genes in one token: the notes say so).  A model that records no attention (a baseline,
coxnet) writes ``notes`` alone, without ``case_ids``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from preprocessing.io import atomic_path

WSI = "wsi"
CASE_IDS = "case_ids"
NOTES = "notes"
ATTENTION = "_attention"  # <m>_attention/<case_id>
FEATURES = "_features"  # <m>_features
COORDS = "wsi_coords"  # wsi_coords/<case_id>
SLIDE = "slide"  # slide/<case_id>


def attention_key(modality: str, case: str) -> str:
    return f"{modality}{ATTENTION}/{case}"


def features_key(modality: str) -> str:
    return f"{modality}{FEATURES}"


def coords_key(case: str) -> str:
    return f"{COORDS}/{case}"


def slide_key(case: str) -> str:
    return f"{SLIDE}/{case}"


@dataclass
class Attention:
    """The content of one ``attention.npz`` (the keyword arguments of :func:`write_attention`)."""

    case_ids: list[str]
    wsi: dict[str, np.ndarray] = field(default_factory=dict)  # case -> attention per patch
    coords: dict[str, np.ndarray] = field(default_factory=dict)  # case -> (n_patches, 2)
    slides: dict[str, np.ndarray] = field(default_factory=dict)  # case -> slide per patch
    genes: dict[str, np.ndarray] = field(default_factory=dict)  # omics modality -> feature ids
    omics: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # modality -> case -> per feature


def write_attention(path: str | os.PathLike, *, case_ids=None, wsi=None, coords=None, slides=None, genes=None,
                    omics=None, notes: dict | None = None) -> None:
    """Write ``attention.npz`` (atomically); arguments are dicts keyed as in :class:`Attention`
    (a ``slides`` value may be one id for the case); ``notes`` is stored as JSON."""
    arrays = {}
    if case_ids is not None:
        arrays[CASE_IDS] = np.asarray(list(case_ids), dtype=str)
    for c, a in (wsi or {}).items():
        arrays[attention_key(WSI, c)] = np.asarray(a, np.float32)
        if coords is not None and c in coords:
            xy = arrays[coords_key(c)] = np.asarray(coords[c], np.int64).reshape(-1, 2)
            if len(xy) != len(arrays[attention_key(WSI, c)]):
                raise ValueError(f"case {c}: {len(arrays[attention_key(WSI, c)])} attention values for "
                                 f"{len(xy)} patch coordinates")
        if slides is not None and c in slides:
            arrays[slide_key(c)] = np.asarray(slides[c], dtype=str)
    for m, names in (genes or {}).items():
        arrays[features_key(m)] = np.asarray(names, dtype=str)
    for m, per_case in (omics or {}).items():
        if m not in (genes or {}):
            raise ValueError(f"omics attention of {m!r} without its feature names (genes[{m!r}])")
        for c, a in per_case.items():
            arrays[attention_key(m, c)] = np.asarray(a, np.float32)
    if notes is not None:
        arrays[NOTES] = np.array(json.dumps(notes))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def read_attention(path: str | os.PathLike, *, require_cases: bool = True) -> Attention:
    """Read and check an ``attention.npz`` (see the module docstring).  Without ``case_ids`` (a model
    that records no attention) it is an error, or with ``require_cases=False`` an empty
    :class:`Attention`."""
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        if CASE_IDS not in keys:
            if not require_cases:
                return Attention(case_ids=[])
            raise ValueError(f"{path}: no {CASE_IDS!r} array; keys: {sorted(keys)[:10]}")
        att = Attention(case_ids=[str(c) for c in np.atleast_1d(z[CASE_IDS])])
        omics_keys = []
        for key in sorted(keys):
            head, _, case = key.partition("/")
            if not case and head.endswith(FEATURES):
                att.genes[head[: -len(FEATURES)]] = z[key].astype(str).ravel()
            elif case and head == WSI + ATTENTION:
                att.wsi[case] = z[key].astype(np.float32).ravel()
            elif case and head.endswith(ATTENTION):
                omics_keys.append((key, head[: -len(ATTENTION)], case))
        for case, values in att.wsi.items():
            if coords_key(case) not in keys:
                raise ValueError(f"{path}: attention of case {case} has no {coords_key(case)}")
            att.coords[case] = z[coords_key(case)].astype(np.int64).reshape(-1, 2)
            if len(att.coords[case]) != len(values):
                raise ValueError(f"{path}: case {case} has {len(values)} attention values for "
                                 f"{len(att.coords[case])} coordinates")
            if slide_key(case) in keys:
                s = z[slide_key(case)].astype(str)
                att.slides[case] = np.full(len(values), str(s)) if s.ndim == 0 else s
        for key, m, case in omics_keys:
            values = z[key].astype(np.float32).ravel()
            if m not in att.genes:
                raise ValueError(f"{path}: {key} has no feature names ({features_key(m)})")
            if len(values) != len(att.genes[m]):
                raise ValueError(f"{path}: {key} has {len(values)} values for {len(att.genes[m])} genes")
            att.omics.setdefault(m, {})[case] = values
    return att
