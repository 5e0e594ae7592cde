"""Lazy bags: a case's patch features stay in its slides' Zarr stores (only shapes are read when
the bag is opened) and are read by blocks, case by case, when a batch needs them, so that a cohort
bigger than memory trains.  Also the streaming statistics over such bags: the WSI channel mean and
std of a fold's training cases by a float64 pass, store by store, one block in memory at a time."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from preprocessing.feature_store import open_features, open_store


BLOCK_ROWS = 4096  # rows per block of the streaming statistics pass (fixed: results do not depend on storage)


class LazyBag:
    """One case's patch features: its slides' stores, concatenated in order, read on demand.

    Only shapes are read when the bag is opened; :meth:`read` decodes just the stores (and Zarr
    chunks) holding the requested rows, as float32.  Store handles are opened on first use."""

    def __init__(self, stores: list[str], lengths: list[int], dim: int):
        if len(stores) != len(lengths):
            raise ValueError("LazyBag: one length per store")
        self.stores, self.lengths, self.dim = [str(s) for s in stores], [int(n) for n in lengths], int(dim)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        self._arrays: list | None = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), self.dim

    @property
    def nbytes_on_disk(self) -> int:
        return sum(_du(s) for s in self.stores)

    def _array(self, k: int):
        if self._arrays is None:
            self._arrays = [None] * len(self.stores)
        if self._arrays[k] is None:
            self._arrays[k] = open_features(self.stores[k])
        return self._arrays[k]

    def _read_store(self, k: int, local: np.ndarray | slice) -> np.ndarray:
        arr = self._array(k)
        squeeze = arr.ndim == 3  # CLAM-style 1 x N x D
        if isinstance(local, slice):
            x = arr[0, local] if squeeze else arr[local]
        elif hasattr(arr, "oindex"):
            x = arr.oindex[0, local] if squeeze else arr.oindex[local]
        else:  # h5py: increasing indices
            x = arr[0, local] if squeeze else arr[local]
        return np.asarray(x, dtype=np.float32)

    def slide_ids(self, rows: np.ndarray | None = None) -> np.ndarray:
        """The slide (store name without its suffix) of each row (default all)."""
        rows = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        names = np.array([os.path.splitext(os.path.basename(s))[0] for s in self.stores])
        return names[np.searchsorted(self.offsets, rows, side="right") - 1]

    def read(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Rows (sorted, increasing; default all) as a float32 (len(rows), dim) array."""
        if rows is None:
            return self.read_range(0, len(self))
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= len(self)):
            raise ValueError("LazyBag.read: rows must be increasing and within the bag")
        parts = []
        for k in range(len(self.stores)):
            lo, hi = np.searchsorted(rows, self.offsets[k]), np.searchsorted(rows, self.offsets[k + 1])
            if hi > lo:
                parts.append(self._read_store(k, rows[lo:hi] - self.offsets[k]))
        return _join(parts, self.dim)

    def read_range(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of the concatenated bag as float32."""
        parts = []
        for k in range(len(self.stores)):
            lo, hi = max(start, self.offsets[k]), min(stop, self.offsets[k + 1])
            if hi > lo:
                parts.append(self._read_store(k, slice(int(lo - self.offsets[k]), int(hi - self.offsets[k]))))
        return _join(parts, self.dim)

    def __getstate__(self) -> dict:  # handles never travel
        return {**self.__dict__, "_arrays": None}


def _join(parts: list[np.ndarray], dim: int) -> np.ndarray:
    if len(parts) == 1:
        return parts[0]  # one store: no copy
    return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)


def _du(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
    return os.path.getsize(path)



def read_bag(bag, rows: np.ndarray | None = None) -> np.ndarray:
    """float32 rows of an in-memory or lazy bag (``rows`` sorted; default all)."""
    if isinstance(bag, LazyBag):
        return bag.read(rows)
    return np.asarray(bag if rows is None else bag[rows], dtype=np.float32)


def iter_blocks(bag, block: int | None = None):
    """Consecutive float32 blocks of ``block`` (default :data:`BLOCK_ROWS`) rows over a bag (the
    same blocks for either kind of bag)."""
    block = block or BLOCK_ROWS
    for start in range(0, len(bag), block):
        stop = min(start + block, len(bag))
        yield bag.read_range(start, stop) if isinstance(bag, LazyBag) else np.asarray(bag[start:stop], np.float32)


class RunningMoments:
    """Per-channel mean and variance accumulated block by block in float64 (Chan et al.'s merge)."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, None, None

    def update(self, block: np.ndarray) -> "RunningMoments":
        if len(block) == 0:
            return self
        x = np.asarray(block, dtype=np.float64)
        nb, mb = len(x), x.mean(axis=0)
        m2b = np.square(x - mb).sum(axis=0)
        if self.mean is None:
            self.n, self.mean, self.m2 = nb, mb, m2b
            return self
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + np.square(delta) * (self.n * nb / n)
        self.n = n
        return self

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (ddof 0)."""
        return np.sqrt(self.m2 / self.n)


def wsi_standardisation(bags, min_std: float = 1e-6) -> tuple[np.ndarray, np.ndarray] | None:
    """Channel mean and std (float64) over every patch of ``bags`` (in-memory or lazy), streamed:
    one block of :data:`BLOCK_ROWS` rows in memory at a time.  None when there is no patch."""
    moments = RunningMoments()
    for bag in bags:
        for block in iter_blocks(bag):
            moments.update(block)
    if moments.n == 0:
        return None
    return moments.mean, np.maximum(moments.std, min_std)


@dataclass
class BagView:
    """A fold's view of a bag: the kept rows, standardised with the fold's training statistics,
    read only when asked for (``load`` or ``np.asarray``)."""

    bag: object  # np.ndarray | LazyBag
    rows: np.ndarray | None = None  # kept rows (sorted) or None = all
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.bag) if self.rows is None else len(self.rows)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), self.bag.shape[1]

    def load(self) -> np.ndarray:
        x = read_bag(self.bag, self.rows)
        if self.mean is not None:
            if isinstance(self.bag, np.ndarray) and np.shares_memory(x, self.bag):
                x = x.copy()  # never standardise the cohort's own array in place
            x -= self.mean.astype(np.float32)  # in place: no full-size temporaries
            x /= self.std.astype(np.float32)
        return x

    def __array__(self, dtype=None, copy=None):
        x = self.load()
        return x if dtype is None else x.astype(dtype, copy=False)

    def __getitem__(self, item):
        return self.load()[item]


def case_of_slide(slide_id: str) -> str:
    """TCGA case barcode (``TCGA-XX-XXXX``) of a slide id or file name.

    The fallback rule of :func:`open_bags` for a store that does not name its case (a store
    written without ``case_id``, a CLAM / TRIDENT h5 file): right for TCGA file names only."""
    return "-".join(slide_id.split("-")[:3])


def open_bags(feature_stores: list[str | os.PathLike]) -> tuple[dict[str, LazyBag], dict[str, np.ndarray], int]:
    """Patch features of every slide, per case a :class:`LazyBag` over its slides' stores in path
    order (only shapes and patch coordinates are read now; :meth:`LazyBag.read` gives the float32
    rows); slides with no patches add nothing.  Returns (bags, positions: float32 level-0 px, dim).

    A slide's case is the store's ``case_id`` attribute when it has one
    (:func:`preprocessing.feature_store.stored_case_id`), else the TCGA file-name rule of
    :func:`case_of_slide`."""
    per_case: dict[str, list] = {}
    dim = 0
    for path in sorted(map(str, feature_stores)):
        n, dim, coords, case = open_store(path)
        if n:
            per_case.setdefault(case or case_of_slide(os.path.basename(path)), []).append((path, n, coords))
    bags = {c: LazyBag([p for p, _, _ in v], [n for _, n, _ in v], dim) for c, v in per_case.items()}
    positions = {c: np.concatenate([q for _, _, q in v]).astype(np.float32) for c, v in per_case.items()}
    return bags, positions, dim


def bounded_heap(threshold: int = 1 << 20) -> bool:
    """Serve every allocation of ``threshold`` bytes or more with its own mmap (glibc ``mallopt``).

    By default glibc raises its mmap threshold after each large free (up to 32 MiB), after which
    the buffers of the next bags (Zarr chunks, float32 copies, batch tensors) come from the heap
    and fragment it: a training process reading bag after bag grows by a few MB per batch.  With a
    fixed threshold such buffers go back to the system when freed and RSS stays flat.  Returns
    whether the setting was applied (False off glibc)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, int(threshold)))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False
