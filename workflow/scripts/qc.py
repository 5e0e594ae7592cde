from pathlib import Path

from preprocessing.inventory import read_inventory_table, slides_of
from preprocessing.io import job_log
from healnet.qc import write_qc_tables

with job_log(snakemake.log[0]):
    inp, p = snakemake.input, snakemake.params
    # a cohort of tables only (no sample sheet, no inventory) has no slides; its cases are still accounted for
    slides = slides_of(read_inventory_table(inp.inventory)) if inp.inventory else None
    write_qc_tables(slides, inp.index, inp.clinical,
                    {Path(o).stem: o for o in inp.omics}, inp.splits,  # omics/{name}.parquet
                    snakemake.output.slides, snakemake.output.cases, modalities=p.modalities)
