from preprocessing.clinical import write_survival_table
from preprocessing.inventory import read_inventory
from preprocessing.io import job_log

with job_log(snakemake.log[0]):
    files = read_inventory(snakemake.input.sample_sheet, snakemake.input.manifest, snakemake.params.data_dir)
    write_survival_table(snakemake.input.clinical, files, snakemake.output.table)
