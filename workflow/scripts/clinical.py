# Rules `clinical` (GDC export, optional TCGA-CDR table) and `tabular_clinical` (a case_id/time/event table).
from preprocessing.inventory import read_inventory
from preprocessing.io import job_log
from preprocessing.omics import omics_cases

inp, params = snakemake.input, snakemake.params

with job_log(snakemake.log[0]):
    if "clinical_table" in inp.keys():
        from preprocessing.tabular import write_tabular_survival_table

        slides = None
        if inp.sample_sheet:
            files = read_inventory(inp.sample_sheet, inp.manifest, params.data_dir)
            slides = files[files["data_type"] == "Slide Image"].groupby("case_id").size()
        write_tabular_survival_table(inp.clinical_table, dict(zip(params.omics_names, inp.omics)),
                                     snakemake.output.table, slides=slides, endpoint=params.endpoint)
    else:
        from preprocessing.clinical import write_survival_table

        files = read_inventory(inp.sample_sheet, inp.manifest, params.data_dir)
        extra = omics_cases(dict(zip(params.table_names, inp.tables)))
        write_survival_table(inp.clinical, files, snakemake.output.table, cdr=inp.cdr or None,
                             endpoint=params.endpoint, extra=extra)
