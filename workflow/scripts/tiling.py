from preprocessing.io import job_log
from preprocessing.tiling import TilingParams, tile_slide

with job_log(snakemake.log[0]):
    tile_slide(snakemake.input.tissue, snakemake.output.h5, TilingParams(**snakemake.params.tiling),
               tissue_png=snakemake.input.tissue_png, qc_png=snakemake.output.png)
