import torch

from preprocessing.features import extract_features
from preprocessing.io import job_log

torch.set_num_threads(snakemake.threads)
with job_log(snakemake.log[0]):
    extract_features(snakemake.input.slide, snakemake.input.coords, snakemake.output.zarr,
                     encoder=snakemake.wildcards.encoder, weights=snakemake.params.weights,
                     batch_size=snakemake.params.batch_size, num_workers=snakemake.resources.get("num_workers"),
                     dtype=snakemake.params.dtype, seed=snakemake.params.seed,
                     stain_target=snakemake.input.stain_target[0] if snakemake.input.stain_target else None,
                     case_id=snakemake.params.case_id)
