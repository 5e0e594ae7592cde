from preprocessing.io import job_log
from preprocessing.tiling import TilingParams, segment_and_tile
from preprocessing.tissue import TissueParams

with job_log(snakemake.log[0]):
    segment_and_tile(snakemake.input.slide, snakemake.output, TissueParams(**snakemake.params.tissue),
                     TilingParams(**snakemake.params.tiling), mpp_fallback=snakemake.params.mpp_fallback,
                     coords=snakemake.input.coords or None)
