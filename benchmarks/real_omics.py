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
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.elastic_net_reference import cached_elastic_net, cohort_file, parse_readme, published_figure  # noqa: E402
from benchmarks.real_omics_tables import FOOTNOTE, _render, cohort_report, final_rows, final_table  # noqa: E402
from preprocessing.io import write_text_atomic  # noqa: E402

log = logging.getLogger("benchmarks.real_omics")

COHORTS = ["gbmlgg", "kirc", "luad", "hnsc"]
MODELS = ["healnet", "healnet_prior", "snn", "coxnet", "early-fusion", "late-fusion"]
# The README's protocol on the benchmark's own folds (every fold x repeat, the same test cases as the
# models): coxnet at the middle of scikit-survival's default path, no inner CV.
EN_SAME_FOLDS = {"l1_ratio": 0.5, "n_alphas": 100, "alpha_min_ratio": "auto", "path_fraction": 0.5}
DEFAULT_OUT = "results/benchmarks/real_omics"


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
