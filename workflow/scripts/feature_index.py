from preprocessing.feature_store import write_index
from preprocessing.io import job_log

with job_log(snakemake.log[0]):
    write_index(list(snakemake.input.stores), snakemake.output.table, snakemake.params.files)
