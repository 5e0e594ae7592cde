"""The config of a small DAG run on one generated cohort (tests/test_workflow.py, test_slurm.py,
test_restart.py): the default config with its cohort replaced by ``tiny`` and training shrunk."""
from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def write_tiny_config(work: Path, raw: Path, *, n_folds: int, batch_size: int, **train) -> Path:
    """``work/config.yaml`` for the cohort :func:`generators.demo.generate_cohort` wrote to
    ``raw``: ``n_folds`` folds, HEALNet only (the baselines are tested in tests/test_train.py), the
    ``train`` settings given, and feature batches of ``batch_size``.  Returns the path."""
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    base["cohorts"] = {"tiny": {"data_dir": str(raw), "sample_sheet": str(raw / "gdc_sample_sheet.tsv"),
                                "manifest": str(raw / "gdc_manifest.txt"), "clinical": str(raw / "clinical.tsv"),
                                "oracle": str(raw / "oracle.json"), "mpp_fallback": None}}
    base["cohort_files"] = []
    base["splits"]["n_folds"] = n_folds
    base["train"].update(models=["healnet"], **train)
    base["features"]["batch_size"] = batch_size
    work.mkdir(parents=True, exist_ok=True)
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(base))
    return path
