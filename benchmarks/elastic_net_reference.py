"""The data README's elastic-net Cox figure, for ``benchmarks/real_omics.py``: parsed from the README,
and computed again with the README's protocol (one row per patient, train-fold z-scores,
``CoxnetSurvivalAnalysis(l1_ratio=0.5)`` at the middle of its path, stratified 5-fold, seed 0)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from preprocessing.io import write_text_atomic

#: the README's elastic-net figures as the issue quotes them: used where the README cannot be parsed
FALLBACK_EN = {"gbmlgg": (0.822, 0.019), "kirc": (0.702, 0.073), "luad": (0.667, 0.047), "hnsc": (0.580, 0.043)}
FEATURE_SUFFIXES = ("_rnaseq", "_cnv", "_mut")
EN_PROTOCOL = {"l1_ratio": 0.5, "alpha": "alphas_[len(alphas_)//2]", "folds": 5, "shuffle": True,
               "random_state": 0, "stratify": "event", "dedup": "case_id", "scale": "train-fold z-score",
               "std_ddof": 1, "version": 1}


def cohort_file(data: str | Path, cohort: str) -> Path:
    """The development table of ``cohort`` (e.g. ``luad``) in the data folder ``data``."""
    return Path(data) / f"tcga_{cohort}_all_clean.csv.zip"


_FIGURE = re.compile(r"\b([A-Za-z][A-Za-z0-9_-]*)\s+(\d*\.\d+)\s*(?:±|\+/-|\+-)\s*(\d*\.\d+)")
_FILE = re.compile(r"tcga_([A-Za-z0-9_-]+?)_all_clean")


def _table_rows(text: str) -> list[list[str]]:
    """The rows (cells stripped) of the markdown tables of ``text``, separator lines left out."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if all(re.fullmatch(r":?-{3,}:?", c) for c in cells if c):
            continue
        rows.append(cells)
    return rows


def parse_readme(path: str | Path) -> tuple[dict[str, tuple[float, float]], dict[str, dict]]:
    """(figures, table) of the data README: ``{cohort: (mean, std)}`` of the elastic-net c-index
    (from a table column named like c-index/elastic/coxnet, else from the prose sentence
    ``... c-index: GBMLGG 0.822 ± 0.019, KIRC ...``) and ``{cohort: {column: cell}}`` of the
    file table (a row per ``tcga_<cohort>_all_clean`` file).  Empty where nothing parses."""
    path = Path(path)
    if not path.is_file():
        return {}, {}
    text = path.read_text(encoding="utf-8", errors="replace")
    figures: dict[str, tuple[float, float]] = {}
    table: dict[str, dict] = {}
    header: list[str] | None = None
    for cells in _table_rows(text):
        if any(c.lower() == "file" for c in cells):
            header = [c.lower() for c in cells]
            continue
        if header is None or len(cells) != len(header):
            continue
        match = _FILE.search(cells[header.index("file")])
        if not match:
            continue
        cohort = match.group(1).lower()
        table[cohort] = dict(zip(header, cells))
        for col, cell in zip(header, cells):
            if re.search(r"c-index|elastic|coxnet", col):
                fig = re.search(r"(\d*\.\d+)\s*(?:±|\+/-|\+-)\s*(\d*\.\d+)", cell)
                if fig:
                    figures[cohort] = (float(fig.group(1)), float(fig.group(2)))
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(paragraph.split())
        if "c-index" not in flat.lower() or not re.search(r"elastic|coxnet", flat, re.I):
            continue
        for name, mean, std in _FIGURE.findall(flat.split("c-index", 1)[1] if "c-index" in flat else flat):
            figures.setdefault(name.lower(), (float(mean), float(std)))
    return figures, table


def published_figure(cohort: str, figures: dict[str, tuple[float, float]]) -> tuple[float, float, str]:
    """(mean, std, source) of the README's elastic-net figure of ``cohort``."""
    if cohort in figures:
        return (*figures[cohort], "README")
    if cohort in FALLBACK_EN:
        return (*FALLBACK_EN[cohort], "fallback")
    return float("nan"), float("nan"), "none"


# ------------------------------------------------------------------------ elastic net, recomputed
def elastic_net_cv(path: str | Path) -> dict:
    """The README's elastic-net protocol (module docstring) on one PORPOISE table."""
    import warnings

    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler
    from sksurv.linear_model import CoxnetSurvivalAnalysis
    from sksurv.metrics import concordance_index_censored
    from sksurv.util import Surv

    table = pd.read_csv(path, low_memory=False).drop_duplicates("case_id").reset_index(drop=True)
    features = [c for c in table.columns.astype(str) if c.endswith(FEATURE_SUFFIXES)]
    x = table[features].to_numpy(dtype=float)
    time_ = table["survival_months"].to_numpy(dtype=float)
    event = (1 - table["censorship"].astype(int)).astype(bool).to_numpy()
    folds = StratifiedKFold(EN_PROTOCOL["folds"], shuffle=True, random_state=EN_PROTOCOL["random_state"])
    scores, alphas = [], []
    for train, test in folds.split(x, event):
        scaler = StandardScaler().fit(x[train])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # sksurv's convergence chatter on the long path
            model = CoxnetSurvivalAnalysis(l1_ratio=EN_PROTOCOL["l1_ratio"]).fit(
                scaler.transform(x[train]), Surv.from_arrays(event=event[train], time=time_[train]))
        alpha = float(model.alphas_[len(model.alphas_) // 2])
        risk = model.predict(scaler.transform(x[test]), alpha=alpha)
        scores.append(float(concordance_index_censored(event[test], time_[test], risk)[0]))
        alphas.append(alpha)
    return {"fold_c_index": scores, "alphas": alphas, "mean": float(np.mean(scores)),
            "std": float(np.std(scores, ddof=EN_PROTOCOL["std_ddof"])), "n_patients": len(table),
            "n_events": int(event.sum()), "n_features": len(features)}


def cached_elastic_net(path: Path, out_dir: Path) -> dict:
    """:func:`elastic_net_cv`, reused from ``out_dir/elastic_net.json`` when the table (name,
    size, mtime) and the protocol are those it was computed with."""
    stat = path.stat()
    key = {"file": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "protocol": EN_PROTOCOL}
    cache = out_dir / "elastic_net.json"
    if cache.exists():
        try:
            stored = json.loads(cache.read_text())
            if stored.get("key") == key:
                return stored["result"]
        except (OSError, ValueError, KeyError):
            pass
    result = elastic_net_cv(path)
    write_text_atomic(cache, json.dumps({"key": key, "result": result}, indent=1))
    return result
