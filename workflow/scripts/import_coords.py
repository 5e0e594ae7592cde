from preprocessing.io import job_log
from preprocessing.tiling import import_coords

with job_log(snakemake.log[0]):
    import_coords(snakemake.input.coords, snakemake.input.tissue, snakemake.output.h5,
                  tissue_png=snakemake.input.tissue_png, qc_png=snakemake.output.png)
