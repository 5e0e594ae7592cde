import torch

from preprocessing.features import extract_features
from preprocessing.io import job_log
from preprocessing.tiling import TilingParams, segment_and_tile
from preprocessing.tissue import TissueParams

torch.set_num_threads(snakemake.threads)
with job_log(snakemake.log[0]):
    p, out = snakemake.params, snakemake.output
    segment_and_tile(snakemake.input.slide, out, TissueParams(**p.tissue), TilingParams(**p.tiling),
                     mpp_fallback=p.mpp_fallback, coords=snakemake.input.coords or None)
    extract_features(snakemake.input.slide, out.h5, out.zarr, encoder=p.encoder, weights=p.weights,
                     batch_size=p.batch_size, num_workers=snakemake.resources.get("num_workers"),
                     dtype=p.dtype, seed=p.seed,
                     stain_target=snakemake.input.stain_target[0] if snakemake.input.stain_target else None,
                     case_id=p.case_id)
