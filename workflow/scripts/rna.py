from preprocessing.inventory import read_inventory_table
from preprocessing.io import job_log
from preprocessing.omics import rna_files_of, write_rna_tables

with job_log(snakemake.log[0]):
    files = read_inventory_table(snakemake.input.inventory)
    write_rna_tables(rna_files_of(files), snakemake.output.matrix, snakemake.output.genes, snakemake.output.set_aside,
                     counts_out=snakemake.output.counts)
