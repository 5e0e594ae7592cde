"""``healnet``: the cross-validation of the pipeline on plain tables, without Snakemake.

    healnet cv --omics rna=rna.tsv [--omics cnv.tsv] --clinical clinical.tsv \\
               --models healnet coxnet --folds 5 [--repeats 3] --out results/mine
    healnet cv --porpoise tcga_kirc_all_clean.csv.zip --models healnet coxnet --out results/kirc

Tables are read and validated by :mod:`preprocessing.tabular` (omics: one row per case, one
column per feature, the modality named NAME= or after the file stem; clinical: case_id, time in
days, event; or one PORPOISE/MCAT table giving rna, cnv, mutations and survival). Folds come from
:func:`healnet.splits.make_splits` (stratified by event, seeded) over patients: a TCGA barcode's
first 12 characters, or the clinical table's ``--patient-column``; a patient's samples share a
fold. Each model is trained on each fold by :func:`healnet.train.train_fold` (everything fitted on
the fold's training cases), and the results are evaluated by
:func:`healnet.evaluate.evaluate_cohort`. Output folder::

    splits.json               n_repeats × n_folds folds; fold k = repeat * n_folds + fold in repeat
    models/<model>/fold<k>/   model.pt, predictions.tsv, metrics.json, missing.tsv, ...
    metrics.tsv               per model and fold, on the test cases common to all models
    metrics_all_cases.tsv     per model and fold, each model on all the cases it predicted
    metrics_summary.tsv       per model: mean ± std, bootstrap CI, paired difference to healnet
    headline.rst              the summary as a reStructuredText table (the report's first page)
    missing_modalities.tsv, missing_curves.tsv, missing_curves.png, km.png

A fold whose ``metrics.json`` exists is not trained again (delete it, or use ``--overwrite``),
so an interrupted run resumes; changing the tables, folds or settings needs a fresh ``--out``.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path

import pandas as pd

log = logging.getLogger("healnet.cli")

TABLE_SUFFIXES = (".gz", ".zip", ".tsv", ".txt", ".csv", ".parquet")
#: metrics_summary.tsv columns printed at the end, those present: the ``make demo`` summary's, the
#: confidence interval of Harrell's c-index and the paired comparison with the reference (HEALNet)
PRINTED = ["model", "n_folds", "harrell_mean", "harrell_std", "harrell_ci_low", "harrell_ci_high", "uno_mean",
           "ibs_mean", "logrank_p", "oracle_c_index", "delta_vs_healnet", "delta_vs_reference", "delta_ci_low",
           "delta_ci_high", "delta_p"]


def _stem(path: str) -> str:
    """``rna_tpm`` of ``/data/rna_tpm.tsv.gz``: the file name without its table extensions."""
    name = Path(path).name
    while name.lower().endswith(TABLE_SUFFIXES):
        name = name[: name.rfind(".")]
    return name


def _pairs(values: list[str]) -> dict[str, str]:
    """``--omics`` values, ``NAME=PATH`` or ``PATH`` (named after its file stem), by modality."""
    out = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or "/" in name:  # a plain path (which may itself contain '=')
            name, path = _stem(v), v
        if not name or not path:
            raise SystemExit(f"--omics wants NAME=PATH or PATH (e.g. rna=rna.tsv or rna.tsv), got {v!r}")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            raise SystemExit(f"--omics: modality name {name!r} (of {v!r}) must be letters, digits and _; "
                             "give NAME=PATH")
        if name == "wsi":
            raise SystemExit("--omics: 'wsi' is the slide modality; name omics tables e.g. rna, cnv, mut")
        if name in out:
            raise SystemExit(f"--omics: modality {name!r} given twice")
        out[name] = path
    return out


def train_config(modalities: tuple[str, ...], settings: dict, *, architecture: str, seed: int):
    from .train_config import config_from_dict

    return config_from_dict({**settings, "modalities": modalities}, seed=seed, architecture=architecture)


def run_cv(*, omics: dict[str, str] | None = None, clinical: str | None = None, porpoise: str | None = None,
           models: list[str], folds: int, out: str | Path, settings: dict | None = None, seed: int = 0,
           val_fraction: float = 0.2, overwrite: bool = False, repeats: int = 1,
           patient_column: str | None = None, missing_train: bool = False) -> pd.DataFrame:
    """The cross-validation (see the module docstring) on ``omics`` + ``clinical`` tables or one
    ``porpoise`` table; returns the summary table.  ``missing_train``: add the missing-modality
    curves with the missingness in training too (:func:`healnet.missing_curves.trained_curves`)."""
    from .evaluate import evaluate_cohort
    from .splits import make_splits, split_meta, write_splits
    from .train import train_fold
    from .zoo import model_modalities

    if (porpoise is None) == (omics is None or clinical is None):
        raise ValueError("give either omics tables and a clinical table, or a PORPOISE table")
    if porpoise is not None and patient_column is not None:
        raise ValueError("--patient-column names a column of --clinical; a PORPOISE table is one row per patient")
    out = Path(out)
    settings = dict(settings or {})
    if porpoise is not None:
        from preprocessing.tabular import porpoise_modalities

        available = porpoise_modalities(porpoise)  # z-scored RNA: the fold's log decision skips it
    else:
        available = list(omics)
    modalities = tuple(settings.pop("modalities", None) or available)
    unknown = [m for m in modalities if m not in available]
    if unknown:
        raise ValueError(f"modalities {unknown} have no table (given: {sorted(available)})")
    for model in models:  # fail before any training on a model that cannot run on these tables
        model_modalities(model, modalities)
    if len(set(models)) != len(models):
        raise ValueError(f"--models lists a model twice: {models}")
    if repeats < 1:
        raise ValueError(f"--repeats {repeats}: needs at least 1")
    from .data import load_porpoise, load_tables
    from .splits import patient_groups

    cohort = load_porpoise(porpoise) if porpoise is not None else load_tables(omics, clinical)
    ids = list(cohort.survival.index)
    groups = patient_groups(ids, clinical, patient_column)
    n_patients = len(set(groups))
    if folds < 2 or folds > n_patients:
        raise ValueError(f"--folds {folds}: needs 2 <= folds <= number of patients ({n_patients})")
    splits = make_splits(ids, cohort.survival["event"].to_numpy(), n_folds=folds, val_fraction=val_fraction, seed=seed,
                         groups=groups, n_repeats=repeats)
    write_splits(out / "splits.json", splits, **split_meta(seed=seed, n_folds=folds, n_cases=len(ids),
                                                             n_repeats=repeats, n_patients=n_patients))
    log.info("%d cases of %d patients (%d events), %d folds × %d repeat(s), models %s", len(ids), n_patients,
             int(cohort.survival["event"].sum()), folds, repeats, ", ".join(models))
    metrics_files, prediction_files, missing_files = [], [], []
    jobs = len(models) * len(splits)
    for m, model in enumerate(models):
        cfg = train_config(modalities, settings, architecture=model, seed=seed)
        for k, split in enumerate(splits):
            fold_dir = out / "models" / model / f"fold{k}"
            where = f"[{m * len(splits) + k + 1}/{jobs}] {model} fold {k}" + (
                f" (repeat {k // folds}, fold {k % folds})" if repeats > 1 else "")
            if overwrite or not (fold_dir / "metrics.json").exists():
                log.info("%s: training on %d cases, testing on %d", where, len(split["train"]), len(split["test"]))
                started = time.monotonic()
                result = train_fold(cohort, split, cfg, fold_dir, fold=k)
                log.info("%s: done, c-index %.3f (%.0f s)", where, result["c_index"], time.monotonic() - started)
            else:
                log.info("%s: already trained (%s), skipped", where, fold_dir / "metrics.json")
            metrics_files.append(str(fold_dir / "metrics.json"))
            prediction_files.append(str(fold_dir / "predictions.tsv"))
            if (fold_dir / "missing.tsv").exists():
                missing_files.append(str(fold_dir / "missing.tsv"))
    summary = evaluate_cohort(metrics_files, prediction_files, metrics_out=out / "metrics.tsv",
                              summary_out=out / "metrics_summary.tsv", km_out=out / "km.png",
                              missing_out=out / "missing_modalities.tsv", fold_missing=missing_files,
                              curves_out=out / "missing_curves.tsv", curves_png=out / "missing_curves.png",
                              all_cases_out=out / "metrics_all_cases.tsv", headline_out=out / "headline.rst",
                              survival=cohort.survival, splits=splits, title=out.name)
    if missing_train:
        _add_trained_curves(cohort, splits, out, train_config(modalities, settings, architecture="healnet", seed=seed),
                            [m for m in models if m != "coxnet" and len(model_modalities(m, modalities)) > 1])
    return summary


def _add_trained_curves(cohort, splits: list[dict], out: Path, cfg, models: list[str]) -> None:
    """Append the ``trained`` curves to ``missing_curves.tsv`` and draw both modes."""
    from .evaluate import _write_tsv
    from .missing_curves import curves_plot, trained_curves

    log.info("missing-modality curves with missingness in training: %s, fractions %s", ", ".join(models),
             list(cfg.missing_fractions))
    trained = trained_curves(cohort, splits, cfg, models=models, fractions=list(cfg.missing_fractions))
    tested = pd.read_csv(out / "missing_curves.tsv", sep="\t")
    table = pd.concat([tested[tested["mode"] != "trained"], trained], ignore_index=True)
    _write_tsv(table, out / "missing_curves.tsv")
    curves_plot(table, out / "missing_curves.png", out.name)


def _settings(path: str | None, epochs: int | None, device: str | None,
              missing_fractions: list[float] | None = None) -> dict:
    settings: dict = {}
    if path:
        import yaml

        loaded = yaml.safe_load(Path(path).read_text()) or {}
        settings = dict(loaded.get("train", loaded))  # a pipeline config or just its train block
        settings.pop("models", None)
        if "seed" in settings:  # it would be overridden by --seed without a word
            raise ValueError(f"{path}: 'seed' is not a training setting here: --seed (default 0) seeds "
                             f"the folds and every model; remove it from the train block and pass --seed")
    if epochs is not None:
        settings["epochs"] = epochs
    if device is not None:
        settings["device"] = device
    if missing_fractions is not None:
        settings["missing_fractions"] = missing_fractions
    return settings


def _view(args: argparse.Namespace) -> int:
    """``healnet view``: DeepZoom tiles and the OpenSeadragon page of a finished cohort."""
    from .viewer import view_results

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = view_results(args.cohort_dir, args.out, model=args.model)
    except (ValueError, FileNotFoundError) as err:
        print(f"healnet view: error: {err}", file=sys.stderr)
        return 2
    print(f"viewer: {result['index']} ({len(result['slides'])} slides); open it in a browser, or serve its folder: "
          f"python -m http.server -d {Path(result['index']).parent} 8000")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="healnet", description="HEALNet survival models on tables.")
    sub = parser.add_subparsers(dest="command", required=True)
    cv = sub.add_parser("cv", help="patient-level cross-validation of one or more models on omics tables",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cv.add_argument("--omics", action="append", metavar="[NAME=]PATH",
                    help="an omics table (.tsv/.csv/.parquet; rows cases, columns features), named NAME or after "
                         "its file stem; repeat per modality")
    cv.add_argument("--clinical", help="table with case_id, time (days), event")
    cv.add_argument("--porpoise", metavar="FILE",
                    help="a PORPOISE/MCAT table (*_all_clean.csv[.zip]): rna, cnv, mutations and survival in one; "
                         "instead of --omics and --clinical")
    cv.add_argument("--patient-column", help="column of --clinical naming each case's patient (default: the "
                                             "first 12 characters of TCGA barcodes, else the case id)")
    cv.add_argument("--models", nargs="+", default=["healnet"],
                    help="healnet, healnet-<modality>, snn, early-fusion, late-fusion, coxnet (default: healnet)")
    cv.add_argument("--folds", type=int, default=5)
    cv.add_argument("--repeats", type=int, default=1, help="repeated cross-validation: fold assignments with "
                                                           "seeds seed, seed+1, ... (default 1)")
    cv.add_argument("--val-fraction", type=float, default=0.2)
    cv.add_argument("--seed", type=int, default=0, help="seeds the folds (repeat r: seed + r) and every model")
    cv.add_argument("--config", help="YAML with training settings: a pipeline config (its train block) or the "
                                     "block; its seed is --seed, not a train setting")
    cv.add_argument("--epochs", type=int, help="overrides the config's epochs")
    cv.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    cv.add_argument("--threads", type=int, help="torch CPU threads")
    cv.add_argument("--missing-train", action="store_true",
                    help="also the curves with the missingness in training (one model per model, fold, removed "
                         "modality and fraction: costly)")
    cv.add_argument("--missing-fractions", type=float, nargs="+", metavar="F",
                    help="missing-modality curves: shares of test cases that lose each modality (and pair) "
                         "(default 0.1 0.3 0.5 0.7 0.9)")
    cv.add_argument("--overwrite", action="store_true", help="retrain folds that already have results")
    cv.add_argument("--out", required=True, help="output folder")
    view = sub.add_parser("view", help="write the zoomable slide viewer of a finished cohort: RESULTS/COHORT/viewer/")
    view.add_argument("cohort_dir", metavar="RESULTS/COHORT", help="a cohort's results folder (with attention/heatmaps)")
    view.add_argument("--model", default="healnet", help="whose attention (default: healnet)")
    view.add_argument("--out", help="output folder (default: RESULTS/COHORT/viewer)")
    args = parser.parse_args(argv)
    if args.command == "view":
        return _view(args)
    if args.porpoise and (args.omics or args.clinical):
        parser.error("--porpoise replaces --omics and --clinical; give one or the other")
    if not args.porpoise and not (args.omics and args.clinical):
        parser.error("give --omics (one or more) and --clinical, or --porpoise")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        settings = _settings(args.config, args.epochs, args.device, args.missing_fractions)
        summary = run_cv(omics=_pairs(args.omics) if args.omics else None, clinical=args.clinical,
                         porpoise=args.porpoise, models=args.models, folds=args.folds, out=args.out,
                         settings=settings, seed=args.seed,
                         val_fraction=args.val_fraction, overwrite=args.overwrite, repeats=args.repeats,
                         patient_column=args.patient_column, missing_train=args.missing_train)
    except (ValueError, FileNotFoundError) as err:
        print(f"healnet cv: error: {err}", file=sys.stderr)
        return 2
    print(summary[[c for c in PRINTED if c in summary.columns]].to_string(index=False, float_format="%.3f"))
    print(f"results: {args.out}/ (metrics.tsv, metrics_summary.tsv, missing_modalities.tsv, missing_curves.tsv/.png, km.png, models/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
