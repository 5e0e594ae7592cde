from preprocessing.copy_number import write_cnv_tables
from preprocessing.inventory import cnv_workflow_table, prefer_cnv_workflow, read_inventory_table
from preprocessing.io import atomic_path, job_log
from preprocessing.omics import cnv_files_of, with_tumour_samples

with job_log(snakemake.log[0]):
    files = read_inventory_table(snakemake.input.inventory)
    cnv = with_tumour_samples(cnv_files_of(files), snakemake.input.sample_sheet)
    order = list(snakemake.params.cnv_workflows)
    write_cnv_tables(prefer_cnv_workflow(cnv, order)[0], snakemake.output.matrix, snakemake.output.genes,
                     snakemake.output.set_aside)
    with atomic_path(snakemake.output.workflows) as tmp:  # which pipeline each case's copy number is from
        cnv_workflow_table(cnv, order).to_csv(tmp, sep="\t", index=False)
