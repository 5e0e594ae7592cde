"""Print what a finished run produced: the metrics table per cohort and where to look."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd


def summarise(results: str | Path) -> str:
    results = Path(results)
    lines = []
    for summary in sorted(results.glob("*/metrics_summary.tsv")):
        cohort = summary.parent
        per_fold = pd.read_csv(cohort / "metrics.tsv", sep="\t")
        table = pd.read_csv(summary, sep="\t")
        slides = pd.read_csv(cohort / "qc" / "slides.tsv", sep="\t")
        cases = pd.read_csv(cohort / "qc" / "cases.tsv", sep="\t")
        lines += [f"== cohort {cohort.name} ==", per_fold.to_string(index=False, float_format="%.3f"), "",
                  table.to_string(index=False, float_format="%.3f"), "",
                  "slides: " + ", ".join(f"{k} {v}" for k, v in slides["status"].value_counts().items()),
                  "cases:  " + ", ".join(f"{k} {v}" for k, v in cases["status"].value_counts().items()),
                  f"results: {cohort}/ (metrics.tsv, qc/, km.png, models/)", ""]
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
