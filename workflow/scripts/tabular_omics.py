from preprocessing.io import job_log
from preprocessing.tabular import write_omics_table

with job_log(snakemake.log[0]):
    write_omics_table(snakemake.input.table, snakemake.output.matrix)
