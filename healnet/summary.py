"""Print what a finished run produced: the metrics table per cohort and where to look."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd


PER_FOLD = ["model", "fold", "repeat", "harrell", "uno", "ibs", "n_test", "events", "n_left_out"]
SUMMARY = ["model", "n_folds", "n_test_cases", "harrell_mean", "harrell_std", "harrell_ci_low", "harrell_ci_high",
           "delta_vs_reference", "delta_ci_low", "delta_ci_high", "delta_p", "uno_mean", "uno_std", "ibs_mean", "ibs_std",
           "logrank_p", "oracle_c_index"]


def _columns(table: pd.DataFrame, wanted: list[str]) -> pd.DataFrame:
    return table[[c for c in wanted if c in table.columns]]


def _status_line(path: Path, label: str) -> list[str]:
    if not path.exists():
        return []
    counts = pd.read_csv(path, sep="\t")["status"].value_counts()
    return [f"{label}: " + ", ".join(f"{k} {v}" for k, v in counts.items())]


def summarise(results: str | Path) -> str:
    """Per cohort under ``results``: per-fold metrics, their summary, the missing-modality table
    and the QC counts, where they exist."""
    results = Path(results)
    lines = []
    for summary in sorted(results.glob("*/metrics_summary.tsv")):
        cohort = summary.parent
        per_fold = _columns(pd.read_csv(cohort / "metrics.tsv", sep="\t"), PER_FOLD)
        full = pd.read_csv(summary, sep="\t")
        table = _columns(full, SUMMARY)
        reference = full["reference"].dropna() if "reference" in full.columns else []
        lines += [f"== cohort {cohort.name} ==", "per fold, every model on the test cases common to all models:",
                  per_fold.to_string(index=False, float_format="%.3f"), "",
                  "summary (95 % bootstrap CIs; delta = paired difference in Harrell's c-index to "
                  f"{reference.iloc[0] if len(reference) else 'the reference model'}):",
                  table.to_string(index=False, float_format="%.3f"), ""]
        missing = cohort / "missing_modalities.tsv"
        if missing.exists() and len(m := pd.read_csv(missing, sep="\t")):
            lines += ["missing modalities (Harrell's c-index):", m.to_string(index=False, float_format="%.3f"), ""]
        lines += _status_line(cohort / "qc" / "slides.tsv", "slides")
        lines += _status_line(cohort / "qc" / "cases.tsv", "cases ")
        all_cases = "metrics_all_cases.tsv, " if (cohort / "metrics_all_cases.tsv").exists() else ""
        extra = ", attention/" if (cohort / "attention").exists() else ""
        lines += [f"results: {cohort}/ (metrics.tsv, metrics_summary.tsv, {all_cases}missing_modalities.tsv, "
                  f"km.png{extra}, qc/, models/)", ""]
    report = results / "report.html"
    if report.exists():
        lines.append(f"report: {report}")
    return "\n".join(lines) if lines else f"no finished cohort under {results}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", nargs="?", default="results")
    print(summarise(parser.parse_args(argv).results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
