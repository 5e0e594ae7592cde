from healnet.evaluate import evaluate_cohort, read_survival
from healnet.splits import read_splits
from preprocessing.io import job_log

with job_log(snakemake.log[0]):
    evaluate_cohort(list(snakemake.input.metrics), list(snakemake.input.predictions),
                    metrics_out=snakemake.output.metrics, summary_out=snakemake.output.summary,
                    km_out=snakemake.output.km, missing_out=snakemake.output.missing,
                    curves_out=snakemake.output.curves, curves_png=snakemake.output.curves_png,
                    all_cases_out=snakemake.output.all_cases, headline_out=snakemake.output.headline,
                    ablations_out=snakemake.output.ablations,
                    fold_missing=list(snakemake.input.missing), survival=read_survival(snakemake.input.clinical),
                    splits=read_splits(snakemake.input.splits), oracle=snakemake.params.oracle,
                    reference=snakemake.params.reference_model, n_boot=snakemake.params.bootstrap,
                    seed=snakemake.params.bootstrap_seed, title=snakemake.wildcards.cohort)
