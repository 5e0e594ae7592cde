from healnet.splits import splits_for_cohort
from preprocessing.io import job_log

with job_log(snakemake.log[0]):
    s = snakemake.params.splits  # config splits:
    splits_for_cohort(snakemake.input.clinical, snakemake.output.json, n_folds=s["n_folds"],
                      val_fraction=s["val_fraction"], seed=snakemake.params.seed,
                      stratify_by_site=s["stratify_by_site"], n_repeats=s["n_repeats"])
