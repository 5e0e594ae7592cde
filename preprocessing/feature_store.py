"""The on-disk format of a slide's patch features: the one module that knows it.

Our store is a Zarr group ``<features_dir>/<slide_id>.zarr`` with

* ``features``: N × D (float16 by default), one row per patch;
* ``coords``: N × 2, level-0 px of each patch's top-left corner, in the same order;
* with stain normalisation, ``stain_status`` (N, uint8) and ``stain_fit`` (N × K float32) per patch;
* attributes (:func:`read_attrs`): encoder, weights, µm/px, patch size, ``n_patches``, ``status``
  (``ok`` or ``failed``, with a ``reason``), library versions and, when the writer was given it,
  ``case_id``: the case the slide belongs to (see :func:`stored_case_id`).

Writing is :func:`preprocessing.features.extract_features`' business, through the pieces here
(:func:`partial_path`, :func:`rows_done`, :func:`create_store`, :class:`ChunkWriter`): rows go to a
hidden partial store, chunk by chunk, and a store exists under its final name only once complete.
Features extracted elsewhere are read from CLAM and TRIDENT feature h5 files
(:func:`read_feature_h5`) wherever a store is accepted.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
import zarr

from .io import _remove

if TYPE_CHECKING:  # only an annotation: the store format does not need torch
    from .stain import StainNormaliser

log = logging.getLogger(__name__)

STORE_SUFFIX = ".zarr"
H5_SUFFIXES = (".h5", ".hdf5")
FEATURES = "features"  # N × D
COORDS = "coords"  # N × 2, level-0 px
STAIN_STATUS = "stain_status"  # N, uint8 (stain normalisation only)
STAIN_FIT = "stain_fit"  # N × K, float32 (stain normalisation only)
CASE_ID = "case_id"  # attribute: the slide's case, when the writer was given it


def slide_of(path: str | os.PathLike) -> str:
    """The slide id of a store or feature h5 file: its file name without the suffix."""
    return os.path.splitext(os.path.basename(str(path)))[0]


def is_h5(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a CLAM / TRIDENT feature h5 file rather than our Zarr store."""
    return os.path.splitext(str(path))[1].lower() in H5_SUFFIXES


# ---------------------------------------------------------------------------------------------
# reading


def open_features(path: str | os.PathLike):
    """The features array of a store, sliceable without reading it: Zarr array or h5py dataset
    (CLAM-style files may hold it as 1 × N × D)."""
    path = str(path)
    if is_h5(path):
        return h5py.File(path, "r")[FEATURES]
    return zarr.open_group(path, mode="r")[FEATURES]


def open_store(path: str | os.PathLike) -> tuple[int, int, np.ndarray, str | None]:
    """What a lazy reader needs of one store: (patches N, dimension D, coords N × 2, case_id or None).

    Only shapes, coordinates and attributes of a Zarr store are read; a CLAM / TRIDENT h5 file is
    small enough to be read once for its shape (its attributes give no case id)."""
    path = str(path)
    if is_h5(path):
        feats, coords, _ = read_feature_h5(path)
        n, dim = feats.shape
        return n, dim, coords, None
    root = zarr.open_group(path, mode="r")
    n, dim = root[FEATURES].shape
    return n, dim, root[COORDS][:], stored_case_id(root.attrs)


def read_features(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict]:
    """Features (N×D), coords (N×2, level-0 px) and attributes of one slide: our Zarr store, or a
    CLAM / TRIDENT feature h5 file (see :func:`read_feature_h5`)."""
    if is_h5(path):
        return read_feature_h5(path)
    root = zarr.open_group(str(path), mode="r")
    return root[FEATURES][:], root[COORDS][:], dict(root.attrs)


def read_attrs(path: str | os.PathLike) -> dict:
    """The attributes (metadata) of a Zarr store."""
    return dict(zarr.open_group(str(path), mode="r").attrs)


def stored_case_id(attrs) -> str | None:
    """The case a store's attributes name (``case_id``), or None for a store written without it."""
    value = attrs.get(CASE_ID)
    return None if value is None else str(value)


def store_summary(path: str | os.PathLike) -> dict:
    """The state of a slide's store, for QC: ``exists``; ``status`` (``ok``, ``failed``, or
    ``missing`` when there is no store) and ``reason``; ``n_patches`` and ``dim`` (rows and
    columns of ``features``); ``complete``: the store is there, ``ok``, and has every row its
    attributes announce; ``case_id`` (:func:`stored_case_id`, None without one)."""
    path = Path(path)
    if not path.exists():
        return {"exists": False, "status": "missing", "reason": "no feature store", "n_patches": 0, "dim": 0,
                "complete": False, "case_id": None}
    root = zarr.open_group(str(path), mode="r")
    attrs = root.attrs
    n, dim = root[FEATURES].shape
    status = str(attrs.get("status", "ok"))
    return {"exists": True, "status": status, "reason": str(attrs.get("reason", "")), "n_patches": int(n),
            "dim": int(dim), "complete": status == "ok" and int(attrs.get("n_patches", n)) == n,
            "case_id": stored_case_id(attrs)}


INDEX_COLUMNS = ["slide_id", "case_id", "store", "status", "n_patches"]
INDEX_FILES = ("slide", "tissue", "patches")  # the slide's file, its tissue GeoJSON, its patch coordinates


def write_index(stores: list[str | os.PathLike], path: str | os.PathLike,
                files: dict[str, dict[str, str]] | None = None) -> None:
    """One row per store (:data:`INDEX_COLUMNS`), written atomically: what a cohort's jobs read instead
    of naming every slide's outputs as inputs, so that planning all of TCGA stays cheap (a train, QC,
    attention-map or viewer job has one input where it had up to three per slide).  ``files`` adds
    the columns of :data:`INDEX_FILES`: column -> {slide id: path} (empty for a slide without one)."""
    import pandas as pd

    from preprocessing.io import atomic_path

    files = files or {}
    unknown = sorted(set(files) - set(INDEX_FILES))
    if unknown:
        raise ValueError(f"{path}: index columns {unknown} are not among {list(INDEX_FILES)}")
    rows = []
    for store in map(str, stores):
        if is_h5(store):
            n, _, _, case = open_store(store)
            status = "ok"
        else:
            summary = store_summary(store)  # one open of the store gives all three
            n, status, case = summary["n_patches"], summary["status"], summary["case_id"]
        slide = slide_of(store)
        rows.append({"slide_id": slide, "case_id": case or "", "store": store, "status": status, "n_patches": int(n),
                     **{column: str(files[column].get(slide, "")) for column in INDEX_FILES if column in files}})
    columns = INDEX_COLUMNS + [c for c in INDEX_FILES if c in files]
    with atomic_path(path) as tmp:
        pd.DataFrame(rows, columns=columns).to_csv(tmp, sep="\t", index=False)


def _read_index_table(path: str | os.PathLike):
    import pandas as pd

    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = sorted(set(INDEX_COLUMNS) - set(table.columns))
    if missing:
        raise ValueError(f"{path}: not a feature-store index (no column {missing})")
    return table


def read_index(path: str | os.PathLike) -> list[str]:
    """The stores that :func:`write_index` listed in ``path``, in its order."""
    return _read_index_table(path)["store"].tolist()


def index_files(path: str | os.PathLike, column: str) -> dict[str, str]:
    """{slide id: file} from column ``column`` (``store`` or one of :data:`INDEX_FILES`) of an index, for
    every slide that has one; an index written without that column is refused by name."""
    table = _read_index_table(path)
    if column not in table.columns:
        raise ValueError(f"{path}: the index has no column {column!r} (it has {list(table.columns)})")
    return {s: f for s, f in zip(table["slide_id"], table[column]) if f}


def read_feature_h5(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict]:
    """Features (N×D), coords (N×2, level-0 px) and attributes of a CLAM or TRIDENT feature file:
    ``features`` N×D (CLAM, TRIDENT) or 1×N×D, ``coords`` N×2.  Attributes are the file's and its
    datasets' (coords attributes win), plus ``source``."""
    with h5py.File(path, "r") as f:
        if FEATURES not in f or COORDS not in f:
            raise ValueError(f"{path}: a feature h5 file needs 'features' and 'coords' datasets (has {sorted(f)})")
        feats, coords = f[FEATURES][:], f[COORDS][:]
        attrs = {**dict(f.attrs), **dict(f[FEATURES].attrs), **dict(f[COORDS].attrs)}
    if feats.ndim == 3 and feats.shape[0] == 1:
        feats = feats[0]
    coords = coords.reshape(-1, 2).astype(np.int64) if coords.size else np.zeros((0, 2), np.int64)
    if feats.ndim != 2 or len(feats) != len(coords):
        raise ValueError(f"{path}: features of shape {feats.shape} do not match {len(coords)} coordinates")
    attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v.item() if isinstance(v, np.generic) else v)
             for k, v in attrs.items()}
    attrs.update(source=str(path), n_patches=len(coords), dim=int(feats.shape[1]))
    return feats, coords, attrs


# ---------------------------------------------------------------------------------------------
# writing: the partial store (used by preprocessing.features.extract_features)


def partial_path(out_zarr: str | os.PathLike) -> Path:
    """Where rows go while a slide is being encoded: a hidden sibling no glob for ``*.zarr`` matches."""
    out = Path(out_zarr)
    return out.with_name(f".{out.name}.tmp-partial")


def rows_done(tmp: Path, fingerprint: dict) -> int:
    """Rows already in a partial store written with the same ``fingerprint``, else 0 (and the
    stale store is removed)."""
    if not tmp.exists():
        return 0
    try:
        attrs = json.loads((tmp / "zarr.json").read_text())["attributes"]
        if attrs.get("_fingerprint") == fingerprint:
            return int(attrs["_rows_done"])
        why = "written with other settings"
    except (OSError, ValueError, KeyError, TypeError) as err:  # torn by a kill: start again
        why = f"unreadable ({err})"
    log.info("%s: partial store %s; starting again", tmp, why)
    _remove(tmp)
    return 0


def create_store(path: Path, coords: np.ndarray, dim: int, dtype: str, chunk: int,
                 stain: StainNormaliser | None = None) -> zarr.Group:
    """An empty ``features`` array (N × ``dim``) beside ``coords`` (N × 2), both in chunks of ``chunk`` rows;
    with stain normalisation also ``stain_status`` (N, uint8) and ``stain_fit`` (N × K float32) per patch."""
    root = zarr.open_group(str(path), mode="w")
    rows = max(1, min(len(coords), chunk))
    root.create_array(FEATURES, shape=(len(coords), dim), dtype=dtype, chunks=(rows, dim))
    root.create_array(COORDS, data=coords, chunks=(rows, 2))
    if stain is not None:
        root.create_array(STAIN_STATUS, shape=(len(coords),), dtype="uint8", chunks=(rows,))
        k = len(stain.columns)
        root.create_array(STAIN_FIT, shape=(len(coords), k), dtype="float32", chunks=(rows, k))
    return root


class ChunkWriter:
    """Appends rows to ``root[name]`` for each of ``names`` (``features``, and the per-patch stain
    arrays when there are any) one whole chunk at a time and records progress (``_rows_done``)
    after each chunk, so a killed job can resume at the last complete chunk."""

    def __init__(self, root: zarr.Group, start: int, chunk_rows: int, names: tuple[str, ...] = (FEATURES,)):
        self.root, self.arrays = root, [root[name] for name in names]
        self.start = self.filled = start  # rows on disk; rows on disk + in the buffer
        self.buffers = [np.empty((chunk_rows, *a.shape[1:]), dtype=a.dtype) for a in self.arrays]

    def append(self, *columns: np.ndarray) -> None:
        """Rows of every array, in the order of ``names``."""
        done, n = 0, len(columns[0])
        while done < n:
            at = self.filled - self.start
            take = min(n - done, len(self.buffers[0]) - at)
            for buffer, rows in zip(self.buffers, columns):
                buffer[at:at + take] = rows[done:done + take]
            self.filled += take
            done += take
            if self.filled - self.start == len(self.buffers[0]):
                self.flush()

    def flush(self) -> None:
        if self.filled > self.start:
            for array, buffer in zip(self.arrays, self.buffers):
                array[self.start:self.filled] = buffer[:self.filled - self.start]
            self.start = self.filled
            self.root.attrs["_rows_done"] = self.start
            log.debug("%d rows written", self.start)
