from preprocessing.inventory import read_inventory, slides_of
from preprocessing.io import job_log
from healnet.qc import write_qc_tables

with job_log(snakemake.log[0]):
    slides = None  # a cohort of tables only (no sample sheet) has no slides; its cases are still accounted for
    if snakemake.input.sample_sheet:
        slides = slides_of(read_inventory(snakemake.input.sample_sheet, snakemake.input.manifest,
                                          snakemake.params.data_dir))
    write_qc_tables(slides, snakemake.params.tissue_dir, snakemake.params.patches_dir,
                    snakemake.params.features_dir, snakemake.input.clinical,
                    dict(zip(snakemake.params.omics_names, snakemake.input.omics)), snakemake.input.splits,
                    snakemake.output.slides, snakemake.output.cases, modalities=snakemake.params.modalities)
