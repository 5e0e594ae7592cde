from preprocessing.io import job_log
from preprocessing.tissue import TissueParams
from preprocessing.tissue_geojson import segment_slide

with job_log(snakemake.log[0]):
    segment_slide(snakemake.input.slide, snakemake.output.geojson, snakemake.output.png,
                  TissueParams(**snakemake.params.tissue), snakemake.params.mpp_fallback)
