"""The planted-truth file ``truth_tumour.npz``: where a generated slide's tumour texture is.

Why here: the file is written by the demo generator (:mod:`generators.demo`, beside
``oracle.json``) and read by the reporting (:mod:`healnet.attention_maps` outlines the planted
tumour on the heatmaps, :mod:`healnet.faithfulness` scores attention against it).  Its format lives
in the stages package so that the reporting reads it without importing a generator
(tests/test_layers.py: ``preprocessing`` and ``healnet`` never import ``generators``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .io import atomic_path

CELL_PX = 16  # default level-0 px per cell (the demo's drawing grid)


def write_truth_tumour(path: str | Path, cells: dict[str, tuple[np.ndarray, np.ndarray]],
                       cell: int = CELL_PX) -> None:
    """Write ``truth_tumour.npz`` (atomically): ``cell_px`` (level-0 px per cell), ``slide_ids``,
    and per slide ``tumour/<slide_id>`` and ``tissue/<slide_id>``, the uint8 (0-255) shares of
    :func:`generators.slide_render.label_cells`."""
    import io
    import zipfile

    arrays = {"cell_px": np.array(cell), "slide_ids": np.array(sorted(cells), dtype=str)}
    for sid in sorted(cells):
        arrays[f"tumour/{sid}"], arrays[f"tissue/{sid}"] = cells[sid]
    # np.savez stamps the current time into the zip: written by hand for byte-identical reruns
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for key, a in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(a), allow_pickle=False)
            z.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue(),
                       compress_type=zipfile.ZIP_DEFLATED)


def read_truth_tumour(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """(tumour share, tissue share, cell px) of :func:`write_truth_tumour`: per slide id a float
    (rows, cols) grid in [0, 1]; cell (i, j) covers level-0 px x in [j, j + 1) * cell, y in [i, i + 1) * cell."""
    with np.load(path, allow_pickle=False) as z:
        ids = [str(s) for s in np.atleast_1d(z["slide_ids"])]
        tumour = {s: z[f"tumour/{s}"].astype(np.float32) / 255 for s in ids}
        tissue = {s: z[f"tissue/{s}"].astype(np.float32) / 255 for s in ids}
        return tumour, tissue, int(z["cell_px"])
