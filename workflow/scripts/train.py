import os

import torch

from healnet.train import train_fold_from_files
from preprocessing.feature_store import read_index
from preprocessing.io import job_log

torch.set_num_threads(snakemake.threads)
with job_log(snakemake.log[0]):
    omics = {m: getattr(snakemake.input, m) for m in snakemake.params.omics}
    train_fold_from_files(snakemake.input.clinical, read_index(snakemake.input.features), omics,
                          snakemake.input.splits, int(snakemake.wildcards.fold),
                          os.path.dirname(snakemake.output.metrics), snakemake.params.train,
                          seed=snakemake.params.seed, architecture=snakemake.wildcards.model)
