"""``healnet``: the cross-validation of the pipeline on plain tables, without Snakemake.

    healnet cv --omics rna=rna.tsv [--omics cnv=cnv.tsv] --clinical clinical.tsv \\
               --models healnet coxnet --folds 5 --out results/mine

Tables are read and validated by :mod:`preprocessing.tabular` (omics: one row per case, one
column per feature; clinical: case_id, time, event).  Patient-level folds come from
:func:`healnet.splits.make_splits` (stratified by event, seeded), each model is trained on each
fold by :func:`healnet.train.train_fold` (everything fitted on the fold's training cases), and the
results are evaluated by :func:`healnet.evaluate.evaluate_cohort`.  Output folder::

    splits.json
    models/<model>/fold<k>/   model.pt, predictions.tsv, metrics.json, missing.tsv, ...
    metrics.tsv, metrics_summary.tsv, missing_modalities.tsv, km.png

A fold whose ``metrics.json`` exists is not trained again (delete it, or use ``--overwrite``),
so an interrupted run resumes; changing the tables, folds or settings needs a fresh ``--out``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("healnet.cli")


def _pairs(values: list[str]) -> dict[str, str]:
    out = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--omics wants NAME=PATH (e.g. rna=rna.tsv), got {v!r}")
        if name == "wsi":
            raise SystemExit("--omics: 'wsi' is the slide modality; name omics tables e.g. rna, cnv, mut")
        if name in out:
            raise SystemExit(f"--omics: modality {name!r} given twice")
        out[name] = path
    return out


def load_tables(omics: dict[str, str], clinical: str):
    """A :class:`healnet.data.Cohort` of the cases with status ``ok`` and at least one omics row."""
    from preprocessing.tabular import read_clinical_table, read_omics_table

    from .data import Cohort

    tables = {m: read_omics_table(p) for m, p in omics.items()}
    clin = read_clinical_table(clinical)
    ok = clin[clin["status"] == "ok"].set_index("case_id")
    has = ok.index.isin(sorted(set().union(*(t.index for t in tables.values()))))
    if not has.any():
        raise ValueError(f"{clinical}: no case with a valid survival time is in any omics table")
    dropped = int((~has).sum())
    if dropped:
        log.warning("%d case(s) of the clinical table have no omics row and are left out", dropped)
    survival = ok.loc[has, ["time", "event"]].astype({"time": float, "event": int})
    return Cohort(survival=survival, omics={m: t.loc[t.index.intersection(survival.index)] for m, t in tables.items()})


def train_config(modalities: tuple[str, ...], settings: dict, *, architecture: str, seed: int):
    from .train import TrainConfig

    try:
        from .train import config_from_dict
    except ImportError:  # an older train module
        return TrainConfig(**{**settings, "modalities": modalities, "seed": seed, "architecture": architecture})
    return config_from_dict({**settings, "modalities": modalities}, seed=seed, architecture=architecture)


def run_cv(*, omics: dict[str, str], clinical: str, models: list[str], folds: int, out: str | Path,
           settings: dict | None = None, seed: int = 0, val_fraction: float = 0.2, overwrite: bool = False):
    """The cross-validation (see the module docstring); returns the summary table."""
    from .evaluate import evaluate_cohort
    from .splits import make_splits, write_splits
    from .train import train_fold
    from .zoo import model_modalities

    out = Path(out)
    settings = dict(settings or {})
    modalities = tuple(settings.pop("modalities", None) or omics)
    unknown = [m for m in modalities if m not in omics]
    if unknown:
        raise ValueError(f"modalities {unknown} have no --omics table (given: {sorted(omics)})")
    for model in models:  # fail before any training on a model that cannot run on these tables
        model_modalities(model, modalities)
    if len(set(models)) != len(models):
        raise ValueError(f"--models lists a model twice: {models}")
    cohort = load_tables(omics, clinical)
    ids = list(cohort.survival.index)
    if folds < 2 or folds > len(ids):
        raise ValueError(f"--folds {folds}: needs 2 <= folds <= number of cases ({len(ids)})")
    splits = make_splits(ids, cohort.survival["event"].to_numpy(), n_folds=folds, val_fraction=val_fraction, seed=seed)
    write_splits(out / "splits.json", splits, seed=seed, n_folds=folds, n_cases=len(ids))
    log.info("%d cases (%d events), %d folds, models %s", len(ids), int(cohort.survival["event"].sum()), folds,
             ", ".join(models))
    metrics_files, prediction_files, missing_files = [], [], []
    for model in models:
        cfg = train_config(modalities, settings, architecture=model, seed=seed)
        for k, split in enumerate(splits):
            fold_dir = out / "models" / model / f"fold{k}"
            if overwrite or not (fold_dir / "metrics.json").exists():
                result = train_fold(cohort, split, cfg, fold_dir, fold=k)
                log.info("%s fold %d: c-index %.3f", model, k, result["c_index"])
            metrics_files.append(str(fold_dir / "metrics.json"))
            prediction_files.append(str(fold_dir / "predictions.tsv"))
            if (fold_dir / "missing.tsv").exists():
                missing_files.append(str(fold_dir / "missing.tsv"))
    return evaluate_cohort(metrics_files, prediction_files, metrics_out=out / "metrics.tsv",
                           summary_out=out / "metrics_summary.tsv", km_out=out / "km.png",
                           missing_out=out / "missing_modalities.tsv", fold_missing=missing_files,
                           survival=cohort.survival, splits=splits, title=out.name)


def _settings(path: str | None, epochs: int | None, device: str | None) -> dict:
    settings: dict = {}
    if path:
        import yaml

        loaded = yaml.safe_load(Path(path).read_text()) or {}
        settings = dict(loaded.get("train", loaded))  # a pipeline config or just its train block
        settings.pop("models", None)
    if epochs is not None:
        settings["epochs"] = epochs
    if device is not None:
        settings["device"] = device
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="healnet", description="HEALNet survival models on tables.")
    sub = parser.add_subparsers(dest="command", required=True)
    cv = sub.add_parser("cv", help="patient-level cross-validation of one or more models on omics tables",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cv.add_argument("--omics", action="append", required=True, metavar="NAME=PATH",
                    help="an omics table (.tsv/.csv/.parquet; rows cases, columns features); repeat per modality")
    cv.add_argument("--clinical", required=True, help="table with case_id, time, event")
    cv.add_argument("--models", nargs="+", default=["healnet"],
                    help="healnet, healnet-<modality>, snn, early-fusion, late-fusion, coxnet (default: healnet)")
    cv.add_argument("--folds", type=int, default=5)
    cv.add_argument("--val-fraction", type=float, default=0.2)
    cv.add_argument("--seed", type=int, default=0)
    cv.add_argument("--config", help="YAML with training settings: a pipeline config (its train block) or the block")
    cv.add_argument("--epochs", type=int, help="overrides the config's epochs")
    cv.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    cv.add_argument("--threads", type=int, help="torch CPU threads")
    cv.add_argument("--overwrite", action="store_true", help="retrain folds that already have results")
    cv.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        summary = run_cv(omics=_pairs(args.omics), clinical=args.clinical, models=args.models, folds=args.folds,
                         out=args.out, settings=_settings(args.config, args.epochs, args.device), seed=args.seed,
                         val_fraction=args.val_fraction, overwrite=args.overwrite)
    except (ValueError, FileNotFoundError) as err:
        print(f"healnet cv: error: {err}", file=sys.stderr)
        return 2
    cols = [c for c in ("model", "n_folds", "harrell_mean", "harrell_std", "uno_mean", "ibs_mean", "logrank_p")
            if c in summary.columns]
    print(summary[cols].to_string(index=False, float_format="%.3f"))
    print(f"results: {args.out}/ (metrics.tsv, metrics_summary.tsv, missing_modalities.tsv, km.png, models/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
