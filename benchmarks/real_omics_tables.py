"""The tables ``benchmarks/real_omics.py`` prints and writes: per cohort, each model against HEALNet
on the same test cases; then one row per cohort with the elastic-net figures and the verdicts."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from benchmarks.elastic_net_reference import published_figure

REFERENCE = "healnet"


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
