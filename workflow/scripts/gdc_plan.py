# Rule gdc_plan: files, cases and bytes per data kind, free space at data_dir; stops when it is short.
from preprocessing.gdc import write_plan
from preprocessing.inventory import read_inventory
from preprocessing.io import job_log

with job_log(snakemake.log[0]):
    files = read_inventory(snakemake.input.sample_sheet, snakemake.input.manifest, snakemake.params.data_dir)
    write_plan(files, snakemake.params.data_dir, snakemake.output.plan, snakemake.params.margin)
