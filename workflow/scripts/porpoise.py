# Rule porpoise_<cohort>: a PORPOISE/MCAT table split into omics parquets and a clinical TSV.
from preprocessing.io import job_log
from preprocessing.tabular import write_porpoise_tables

out = snakemake.output
with job_log(snakemake.log[0]):
    write_porpoise_tables(snakemake.input.table, {k: v for k, v in out.items() if k != "clinical"}, out.clinical)
