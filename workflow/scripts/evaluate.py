from healnet.evaluate import evaluate_cohort
from preprocessing.io import job_log

with job_log(snakemake.log[0]):
    evaluate_cohort(list(snakemake.input.metrics), list(snakemake.input.predictions), snakemake.params.models,
                    snakemake.output.metrics, snakemake.output.summary, snakemake.output.km,
                    oracle=snakemake.params.oracle, title=snakemake.wildcards.cohort)
