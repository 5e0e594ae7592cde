from preprocessing.inventory import read_inventory
from preprocessing.io import job_log
from preprocessing.omics import cnv_files_of, with_tumour_samples, write_cnv_tables

with job_log(snakemake.log[0]):
    files = read_inventory(snakemake.input.sample_sheet, snakemake.input.manifest, snakemake.params.data_dir)
    cnv = with_tumour_samples(cnv_files_of(files), snakemake.input.sample_sheet)
    write_cnv_tables(cnv, snakemake.output.matrix, snakemake.output.genes, snakemake.output.set_aside)
