from preprocessing.inventory import read_inventory_table
from preprocessing.io import job_log
from preprocessing.mutations import write_mutation_tables
from preprocessing.omics import maf_files_of, with_tumour_samples

with job_log(snakemake.log[0]):
    files = read_inventory_table(snakemake.input.inventory)
    mafs = with_tumour_samples(maf_files_of(files), snakemake.input.sample_sheet)
    write_mutation_tables(mafs, snakemake.output.matrix, snakemake.output.set_aside)
