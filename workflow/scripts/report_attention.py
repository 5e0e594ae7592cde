from healnet.attention_maps import attention_report
from preprocessing.feature_store import index_files
from preprocessing.io import job_log

with job_log(snakemake.log[0]):
    index = snakemake.input.index
    attention_report(list(snakemake.input.attention), list(snakemake.input.predictions),
                     index_files(index, "slide"), index_files(index, "patches"),
                     snakemake.output.heatmaps, snakemake.output.genes,
                     gene_names=snakemake.input.genes[0] if len(snakemake.input.genes) else None,
                     n_cases=int(snakemake.params.attention_cases), max_side=int(snakemake.params.heatmap_px),
                     truth_tumour=snakemake.input.truth_tumour[0] if len(snakemake.input.truth_tumour) else None)
