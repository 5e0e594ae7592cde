"""The report's tables read off the summary (:func:`healnet.evaluate.summary_table` with its paired
columns): the headline, each model's c-index and its paired difference to the reference as
reStructuredText (:func:`headline_rst`), and HEALNet beside its ablations (:func:`ablation_table`).

Split out of :mod:`healnet.evaluate`, which computes the summary and writes these tables.
"""
from __future__ import annotations

import math

import pandas as pd


def _fmt_ci(value: float, low: float, high: float, signed: bool = False) -> str:
    if math.isnan(value):
        return "–"
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(value)} ({f.format(low)} to {f.format(high)})"


def headline_rst(summary: pd.DataFrame, title: str = "") -> str:
    """reStructuredText table for the report's first page: each model's c-index (95 % CI) and its
    paired difference to the reference (95 % CI, p) on the common test cases, and the oracle."""
    n_cases = int(summary["n_test_cases"].max()) if len(summary) else 0
    n_folds = int(summary["n_folds"].max()) if len(summary) else 0
    reference = next((r for r in summary.get("reference", []) if isinstance(r, str) and r), "")
    delta_head = f"difference to ``{reference}`` (95 % CI)" if reference else "difference (no reference model)"
    lines = [f".. list-table:: {title + ': ' if title else ''}Harrell's c-index on the {n_cases} test cases that "
             f"every model predicted, mean over {n_folds} folds",
             "   :header-rows: 1", "",
             "   * - model", "     - c-index (95 % CI)", f"     - {delta_head}", "     - p"]
    for row in sorted(summary.itertuples(), key=lambda r: r.model != reference):  # the reference first
        delta = _fmt_ci(row.delta_vs_reference, row.delta_ci_low, row.delta_ci_high, signed=True)
        if row.model == reference:
            delta = "reference"
        p = "–" if math.isnan(row.delta_p) else f"{row.delta_p:.3f}"
        lines += [f"   * - ``{row.model}``", f"     - {_fmt_ci(row.harrell_mean, row.harrell_ci_low, row.harrell_ci_high)}",
                  f"     - {delta}", f"     - {p}"]
    lines.append("")
    if "oracle_c_index" in summary.columns and len(summary):
        lines += [f"Oracle c-index (the planted true risk, all cases): {summary['oracle_c_index'].iloc[0]:.3f}.", ""]
    lines += ["Paired bootstrap over patients (see the summary table's caption); each model on all the cases it "
              "can handle: ``metrics_all_cases.tsv``.", ""]
    return "\n".join(lines)


def ablation_table(summary: pd.DataFrame, reference: str = "healnet") -> pd.DataFrame:
    """HEALNet beside its ablations (:data:`healnet.zoo.ABLATIONS`) that were trained: what each
    changes, its c-index (95 % CI) and its paired difference to ``reference`` on the same cases,
    from the summary table; empty (columns only) when no ablation was trained."""
    from .zoo import ABLATION_CHANGES

    columns = ["model", "change", "n_test_cases", "harrell_mean", "harrell_std", "harrell_ci_low", "harrell_ci_high",
               "delta_vs_reference", "delta_ci_low", "delta_ci_high", "delta_p"]
    rows = summary[summary["model"].isin([reference, *ABLATION_CHANGES])]
    if not rows["model"].isin(list(ABLATION_CHANGES)).any():
        return pd.DataFrame(columns=columns)
    rows = rows.assign(change=rows["model"].map({reference: "none (the reference)", **ABLATION_CHANGES}))
    order = {m: k for k, m in enumerate([reference, *ABLATION_CHANGES])}
    return rows.sort_values("model", key=lambda m: m.map(order))[columns].reset_index(drop=True)
