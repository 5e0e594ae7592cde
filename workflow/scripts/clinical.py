# Rules `clinical` (GDC export, optional TCGA-CDR table) and `tabular_clinical` (a case_id/time/event table).
# The omics inputs are omics/{name}.parquet: each file's stem is its modality's name.
from pathlib import Path

from preprocessing.inventory import read_inventory_table
from preprocessing.io import job_log
from preprocessing.omics import omics_cases

inp, params = snakemake.input, snakemake.params

with job_log(snakemake.log[0]):
    if "clinical_table" in inp.keys():
        from preprocessing.tabular import write_tabular_survival_table

        slides = None
        if inp.inventory:
            files = read_inventory_table(inp.inventory)
            slides = files[files["data_type"] == "Slide Image"].groupby("case_id").size()
        write_tabular_survival_table(inp.clinical_table, {Path(p).stem: p for p in inp.omics},
                                     snakemake.output.table, slides=slides, endpoint=params.endpoint)
    else:
        from preprocessing.clinical import write_survival_table

        files = read_inventory_table(inp.inventory)
        extra = omics_cases({Path(p).stem: p for p in inp.tables})
        write_survival_table(inp.clinical, files, snakemake.output.table, cdr=inp.cdr or None,
                             endpoint=params.endpoint, extra=extra)
