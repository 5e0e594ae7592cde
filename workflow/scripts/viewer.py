import os

from healnet.viewer import attach_attention, build_viewer, report_pairs, viewer_slides
from preprocessing.feature_store import index_files
from preprocessing.io import job_log

with job_log(snakemake.log[0]):
    p, index = snakemake.params, snakemake.input.index
    slides = viewer_slides(report_pairs(snakemake.input.heatmaps), *(index_files(index, k) for k in
                                                                     ("slide", "tissue", "patches")))
    attach_attention(slides, list(snakemake.input.attention), list(snakemake.input.predictions))
    build_viewer(slides, snakemake.output.folder, title=f"{snakemake.wildcards.cohort}: {p.attention_model} attention",
                 openseadragon=os.path.dirname(snakemake.input.openseadragon), tile_size=int(p.tile_size),
                 quality=int(p.quality))
