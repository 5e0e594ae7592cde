"""Every omics model on the real TCGA development cohorts, against the README's elastic-net figure.

    .venv/bin/python benchmarks/real_omics.py --data /work/shared/data/tcga-omics
        [--folds 5] [--repeats 3] [--models healnet healnet_prior snn coxnet early-fusion late-fusion] [--ablations]
        [--cohorts gbmlgg kirc luad hnsc] [--epochs N] [--device auto] [--jobs 1]
        [--out results/benchmarks/real_omics]

``--data`` holds ``tcga_{cohort}_all_clean.csv.zip`` (PORPOISE/MCAT layout) and a ``README.md``
that quotes, per cohort, an elastic-net Cox c-index (``GBMLGG 0.822 ± 0.019, ...``).  Per cohort:

* :func:`healnet.cli.run_cv` on the table (HEALNet on all three modalities, rna, cnv, mutations;
  ``--ablations`` adds HEALNet's ablation variants as rows; patient-level folds × repeats,
  seed 0, the default :class:`healnet.train_config.TrainConfig` unless ``--epochs``/``--device``), into
  ``OUT/<cohort>/``.  A fold with ``metrics.json`` is not trained again, so an interrupted run
  resumes; ``OUT/<cohort>/benchmark.json`` records folds, repeats and settings, and a rerun with
  other ones into the same ``--out`` is refused (its old folds would be reused silently).
* The README's elastic-net figure computed again with its protocol: one row per patient (duplicate
  ``case_id`` rows dropped), every ``*_rnaseq``/``*_cnv``/``*_mut`` feature z-scored on the
  training fold, scikit-survival ``CoxnetSurvivalAnalysis(l1_ratio=0.5)`` at the middle of its
  fitted path (``alphas_[len(alphas_) // 2]``), ``StratifiedKFold(5, shuffle=True,
  random_state=0)`` by event, Harrell's c-index (``concordance_index_censored``): mean ± std
  (ddof 1, as the models' std) over the 5 folds.  Cached in ``OUT/<cohort>/elastic_net.json``.
* The same protocol on the models' own folds (every fold × repeat, the same test cases; the
  non-test cases fit it): ``coxnet`` with :data:`EN_SAME_FOLDS`, into ``OUT/<cohort>/en_same_folds/``.
  The README's figure comes from one split of 5 folds; this one is measured as the models are.
* The published figure is parsed from the README (its prose sentence ``NAME mean ± std, ...``,
  or a table column named like "c-index"/"elastic"); where that fails the figures of the issue
  are used and the table says ``fallback``.

Printed: per cohort, each model's mean ± std Harrell c-index over all folds × repeats, its
bootstrap 95 % CI, the paired difference to HEALNet (CI, p) and the test cases per fold (the
same for every model: each fold is scored on the cases all models predicted); then one row per
cohort: HEALNet (and each HEALNet variant run, e.g. ``healnet_prior``), the README's elastic net,
the recomputed one, our coxnet and snn, the verdicts ``healnet >= EN - std`` and ``healnet >= EN``
for each of them (EN = the README's figure, std = its ±), and the lowest model fold-mean (must be
>= 0.5).  The final table is written to ``OUT/real_omics.tsv``
and ``OUT/real_omics.md``.  ``--jobs J`` runs J cohorts at once, each in its own process; every
process uses one torch (and BLAS) thread.  Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from preprocessing.io import write_text_atomic  # noqa: E402

log = logging.getLogger("benchmarks.real_omics")

COHORTS = ["gbmlgg", "kirc", "luad", "hnsc"]
MODELS = ["healnet", "healnet_prior", "snn", "coxnet", "early-fusion", "late-fusion"]
REFERENCE = "healnet"
# The README's protocol on the benchmark's own folds (every fold x repeat, the same test cases as the
# models): coxnet at the middle of scikit-survival's default path, no inner CV.
EN_SAME_FOLDS = {"l1_ratio": 0.5, "n_alphas": 100, "alpha_min_ratio": "auto", "path_fraction": 0.5}
#: the README's elastic-net figures as the issue quotes them: used where the README cannot be parsed
FALLBACK_EN = {"gbmlgg": (0.822, 0.019), "kirc": (0.702, 0.073), "luad": (0.667, 0.047), "hnsc": (0.580, 0.043)}
FEATURE_SUFFIXES = ("_rnaseq", "_cnv", "_mut")
EN_PROTOCOL = {"l1_ratio": 0.5, "alpha": "alphas_[len(alphas_)//2]", "folds": 5, "shuffle": True,
               "random_state": 0, "stratify": "event", "dedup": "case_id", "scale": "train-fold z-score",
               "std_ddof": 1, "version": 1}
DEFAULT_OUT = "results/benchmarks/real_omics"


def cohort_file(data: str | Path, cohort: str) -> Path:
    return Path(data) / f"tcga_{cohort}_all_clean.csv.zip"


# ----------------------------------------------------------------------------------- the README
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


# --------------------------------------------------------------------------------- one cohort
class _CohortField(logging.Filter):
    cohort = "-"

    def filter(self, record: logging.LogRecord) -> bool:
        record.cohort = _CohortField.cohort
        return True


@contextlib.contextmanager
def log_to_stderr():
    """INFO records (this benchmark's and the pipeline's) to stderr, tagged with the cohort."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(cohort)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(_CohortField())
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def _check_settings(out_dir: Path, record: dict) -> None:
    """Refuse to resume into a folder trained with other folds, repeats, settings or data."""
    path = out_dir / "benchmark.json"
    if path.exists():
        stored = json.loads(path.read_text())
        if stored != record:
            differ = sorted(k for k in set(stored) | set(record) if stored.get(k) != record.get(k))
            raise SystemExit(f"{out_dir}: trained with other {', '.join(differ)} ({ {k: stored.get(k) for k in differ} }"
                             f" vs now { {k: record.get(k) for k in differ} }); its folds would be reused: "
                             f"give another --out or delete {out_dir}")
    else:
        write_text_atomic(path, json.dumps(record, indent=1))


def run_cohort(spec: dict) -> dict:
    """Cross-validation of every model and the recomputed elastic net on one cohort (in a worker
    process when ``--jobs`` > 1)."""
    import torch
    from threadpoolctl import threadpool_limits

    from healnet.cli import run_cv

    cohort, path, out_dir = spec["cohort"], Path(spec["path"]), Path(spec["out"]) / spec["cohort"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(threadpool_limits(1))  # BLAS/OpenMP of numpy and scikit-learn
            if spec.get("own_log"):
                stack.enter_context(log_to_stderr())
            _CohortField.cohort = cohort
            stat = path.stat()
            _check_settings(out_dir, {"file": path.name, "size": stat.st_size, "folds": spec["folds"],
                                      "repeats": spec["repeats"], "seed": 0, "settings": spec["settings"]})
            started = time.monotonic()
            log.info("elastic net (README protocol) on %s", path.name)
            en = cached_elastic_net(path, out_dir)
            log.info("elastic net: %.3f ± %.3f over %d folds", en["mean"], en["std"], len(en["fold_c_index"]))
            log.info("cross-validation of %s: %d folds × %d repeat(s)", ", ".join(spec["models"]), spec["folds"],
                     spec["repeats"])
            summary = run_cv(porpoise=str(path), models=list(spec["models"]), folds=spec["folds"],
                             repeats=spec["repeats"], out=out_dir, settings=dict(spec["settings"]), seed=0)
            metrics = pd.read_csv(out_dir / "metrics.tsv", sep="\t")
            log.info("elastic net (README protocol) on the same folds")
            same = run_cv(porpoise=str(path), models=["coxnet"], folds=spec["folds"], repeats=spec["repeats"],
                          out=out_dir / "en_same_folds", seed=0,
                          settings={**spec["settings"], "baselines": {"coxnet": EN_SAME_FOLDS}}).set_index("model")
            en["same_folds"] = {k: float(same.loc["coxnet", f"harrell_{k}"]) for k in ("mean", "std")}
            log.info("done in %.0f s", time.monotonic() - started)
    finally:
        torch.set_num_threads(threads)
    return {"cohort": cohort, "summary": summary, "metrics": metrics, "en": en}


# ----------------------------------------------------------------------------------- tables
def _pm(mean: float, std: float) -> str:
    if mean is None or not np.isfinite(mean):
        return "–"
    return f"{mean:.3f} ± {std:.3f}" if std is not None and np.isfinite(std) else f"{mean:.3f}"


def _render(header: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*r).rstrip() for r in [header, ["-" * w for w in widths], *rows]) + "\n"


def fold_counts(metrics: pd.DataFrame) -> tuple[dict[str, list[int]], bool]:
    """n_test per fold of each model (in fold order), and whether they are equal across models."""
    per_model = {m: g.sort_values("fold")["n_test"].astype(int).tolist() for m, g in metrics.groupby("model")}
    return per_model, len({tuple(v) for v in per_model.values()}) <= 1


def cohort_report(result: dict, models: list[str], folds: int, repeats: int) -> str:
    summary = result["summary"].set_index("model")
    counts, equal = fold_counts(result["metrics"])
    order = [m for m in [REFERENCE, *models] if m in summary.index]
    order = list(dict.fromkeys(order))
    rows = []
    for m in order:
        r = summary.loc[m]
        if m == REFERENCE:
            delta, delta_ci, p = "reference", "", ""
        elif np.isfinite(r.get("delta_vs_reference", np.nan)):
            delta = f"{r['delta_vs_reference']:+.3f}"
            delta_ci = f"[{r['delta_ci_low']:+.3f}, {r['delta_ci_high']:+.3f}]"
            p = f"{r['delta_p']:.3f}"
        else:
            delta, delta_ci, p = "–", "", ""
        n = counts.get(m, [])
        rows.append([m, _pm(r["harrell_mean"], r["harrell_std"]),
                     f"[{r['harrell_ci_low']:.3f}, {r['harrell_ci_high']:.3f}]", delta, delta_ci, p,
                     f"{min(n)}–{max(n)}" if n else "–", str(int(r["n_folds"]))])
    en = result["en"]
    head = (f"{result['cohort'].upper()}: {en['n_patients']} patients, {en['n_events']} deaths, "
            f"{en['n_features']} features; {folds} folds × {repeats} repeat(s)")
    table = _render(["model", "Harrell mean ± std", "95 % CI", f"Δ vs {REFERENCE}", "Δ 95 % CI", "p",
                     "n_test/fold", "folds"], rows)
    any_counts = next(iter(counts.values()), [])
    note = (f"n_test per fold, equal across models: {' '.join(map(str, any_counts))}" if equal else
            "n_test per fold DIFFERS between models: " + "; ".join(f"{m} {v}" for m, v in counts.items()))
    return f"{head}\n{table}{note}\n"


def final_table(results: list[dict], figures: dict, models: list[str]) -> pd.DataFrame:
    rows = []
    for res in results:
        cohort, summary = res["cohort"], res["summary"].set_index("model")
        en_mean, en_std, source = published_figure(cohort, figures)

        def stat(model: str, col: str) -> float:
            return float(summary.loc[model, col]) if model in summary.index else float("nan")

        h = stat(REFERENCE, "harrell_mean")
        means = summary["harrell_mean"].astype(float)
        lowest = means.idxmin() if means.notna().any() else ""
        counts, equal = fold_counts(res["metrics"])
        row = {"cohort": cohort, "n_patients": res["en"]["n_patients"], "n_events": res["en"]["n_events"],
               "n_test_folds": int(summary["n_folds"].max()), "healnet_mean": h,
               "healnet_std": stat(REFERENCE, "harrell_std"), "en_readme_mean": en_mean, "en_readme_std": en_std,
               "en_readme_source": source, "en_recomputed_mean": res["en"]["mean"],
               "en_recomputed_std": res["en"]["std"], "en_same_folds_mean": res["en"]["same_folds"]["mean"],
               "en_same_folds_std": res["en"]["same_folds"]["std"]}
        for m in dict.fromkeys(["coxnet", "snn", *models]):
            if m != REFERENCE:
                key = m.replace("-", "_")
                row[f"{key}_mean"], row[f"{key}_std"] = stat(m, "harrell_mean"), stat(m, "harrell_std")
        for m in _healnets(models):  # the verdicts, for HEALNet and each variant run
            key, mean = m.replace("-", "_"), stat(m, "harrell_mean")
            comparable = np.isfinite(mean) and np.isfinite(en_mean)
            row[f"{key}_ge_en_minus_std"] = bool(mean >= en_mean - en_std) if comparable else None
            row[f"{key}_ge_en"] = bool(mean >= en_mean) if comparable else None
            row[f"{key}_ge_en_same_folds"] = bool(mean >= row["en_same_folds_mean"]) if np.isfinite(mean) else None
        row["lowest_model"] = lowest
        row["lowest_model_mean"] = float(means.min()) if lowest else float("nan")
        row["lowest_ge_0_5"] = bool(means.min() >= 0.5) if lowest else None
        row["n_test_equal_across_models"] = equal
        rows.append(row)
    return pd.DataFrame(rows)


def _yes(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else ("yes" if value else "NO")


def _healnets(models: list[str]) -> list[str]:
    """HEALNet and the HEALNet variants among ``models`` (each gets the verdicts), HEALNet first."""
    from healnet.zoo import is_healnet

    return list(dict.fromkeys([REFERENCE, *(m for m in models if is_healnet(m))]))


def final_rows(table: pd.DataFrame, models: list[str]) -> tuple[list[str], list[list[str]]]:
    variants = [m for m in _healnets(models) if m != REFERENCE and f"{m.replace('-', '_')}_mean" in table]
    header = ["cohort", "healnet", *variants, "EN (README)", "EN (recomputed)", "EN (same folds)", "coxnet", "snn",
              *(f"{m} >= EN{s}" for m in [REFERENCE, *variants] for s in (" - std", "", " (same folds)")),
              "lowest model fold-mean"]
    rows = []
    for r in table.to_dict("records"):
        readme = _pm(r["en_readme_mean"], r["en_readme_std"])
        if r["en_readme_source"] != "README":
            readme += f" ({r['en_readme_source']})"
        lowest = ("–" if not r["lowest_model"] else
                  f"{r['lowest_model_mean']:.3f} ({r['lowest_model']}) {'ok' if r['lowest_ge_0_5'] else '< 0.5!'}")
        keys = [m.replace("-", "_") for m in variants]
        rows.append([r["cohort"].upper(), _pm(r["healnet_mean"], r["healnet_std"]),
                     *(_pm(r[f"{k}_mean"], r[f"{k}_std"]) for k in keys), readme,
                     _pm(r["en_recomputed_mean"], r["en_recomputed_std"]),
                     _pm(r["en_same_folds_mean"], r["en_same_folds_std"]), _pm(r["coxnet_mean"], r["coxnet_std"]),
                     _pm(r["snn_mean"], r["snn_std"]),
                     *(_yes(r[f"{k}_ge_en{s}"]) for k in ["healnet", *keys] for s in ("_minus_std", "", "_same_folds")),
                     lowest])
    return header, rows


FOOTNOTE = ("Harrell's c-index, mean ± std over all test folds (folds × repeats; elastic net: its 5 folds). "
            "EN = the README's elastic-net figure, std its ±; recomputed = the same protocol run again here; "
            "same folds = that protocol on the models' folds and test cases.")


# ------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder of tcga_<cohort>_all_clean.csv.zip and README.md")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--ablations", action="store_true",
                   help="add HEALNet's ablation variants (healnet.zoo.ABLATIONS) to --models, on the same folds")
    p.add_argument("--cohorts", nargs="+", default=COHORTS)
    p.add_argument("--epochs", type=int, help="training epochs (default: TrainConfig's)")
    p.add_argument("--device", help="auto (TrainConfig's default), cpu, cuda, ...")
    p.add_argument("--jobs", type=int, default=1, help="cohorts run at once, one process each (default 1)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    cohorts = [c.lower() for c in args.cohorts]
    missing = [str(cohort_file(args.data, c)) for c in cohorts if not cohort_file(args.data, c).is_file()]
    if missing:
        p.error(f"no table for: {', '.join(missing)}")
    settings: dict = {}
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    if args.device is not None:
        settings["device"] = args.device
    out = Path(args.out)
    figures, readme_table = parse_readme(Path(args.data) / "README.md")
    if args.ablations:
        from healnet.zoo import ABLATIONS

        args.models = list(dict.fromkeys([*args.models, *ABLATIONS]))
    specs = [{"cohort": c, "path": str(cohort_file(args.data, c)), "out": str(out), "models": list(args.models),
              "folds": args.folds, "repeats": args.repeats, "settings": settings, "own_log": args.jobs > 1}
             for c in cohorts]

    results: dict[str, dict] = {}
    with log_to_stderr():
        for c in cohorts:
            source = published_figure(c, figures)[2]
            if source != "README":
                log.warning("%s: no elastic-net figure parsed from %s; using %s", c, Path(args.data) / "README.md",
                            "the issue's figure" if source == "fallback" else "none")
        if args.jobs == 1:
            for spec in specs:
                results[spec["cohort"]] = run_cohort(spec)
                print(cohort_report(results[spec["cohort"]], args.models, args.folds, args.repeats), flush=True)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(max_workers=min(args.jobs, len(specs)), mp_context=mp.get_context("spawn")) as ex:
                futures = {ex.submit(run_cohort, spec): spec["cohort"] for spec in specs}
                for future in as_completed(futures):
                    res = future.result()
                    results[res["cohort"]] = res
                    print(cohort_report(res, args.models, args.folds, args.repeats), flush=True)
        _CohortField.cohort = "-"
        for c in cohorts:  # the README's file table against what was read
            row, en = readme_table.get(c), results[c]["en"]
            if row and {"patients", "deaths"} <= set(row):
                if (str(en["n_patients"]), str(en["n_events"])) != (row["patients"], row["deaths"]):
                    log.warning("%s: README says %s patients, %s deaths; the table has %d, %d", c, row["patients"],
                                row["deaths"], en["n_patients"], en["n_events"])

    table = final_table([results[c] for c in cohorts], figures, args.models)
    header, rows = final_rows(table, args.models)
    print(_render(header, rows) + FOOTNOTE)
    if (table["en_readme_source"] != "README").any():
        print("README figures not parsed for: " + ", ".join(table.loc[table["en_readme_source"] != "README", "cohort"])
              + " (issue's numbers used where known)")
    write_text_atomic(out / "real_omics.tsv", table.to_csv(sep="\t", index=False, float_format="%.6g"))
    md = (f"# Omics models on the TCGA development cohorts\n\n{args.folds} folds × {args.repeats} repeat(s), "
          f"models {', '.join(args.models)}, settings {settings or 'TrainConfig defaults'}.\n\n"
          + _render(header, rows, markdown=True) + f"\n{FOOTNOTE}\n")
    write_text_atomic(out / "real_omics.md", md)
    print(f"results: {out}/real_omics.tsv, {out}/real_omics.md; per cohort {out}/<cohort>/ (metrics_summary.tsv, "
          f"metrics.tsv, elastic_net.json, models/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
