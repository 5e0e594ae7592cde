from healnet.splits import splits_for_cohort
from preprocessing.io import job_log

with job_log(snakemake.log[0]):
    splits_for_cohort(snakemake.input.clinical, snakemake.output.json, n_folds=snakemake.params.n_folds,
                      val_fraction=snakemake.params.val_fraction, seed=snakemake.params.seed,
                      stratify_by_site=snakemake.params.by_site, n_repeats=snakemake.params.n_repeats)
