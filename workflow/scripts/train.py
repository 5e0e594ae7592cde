import os

import torch

from healnet.train import train_fold_from_files
from preprocessing.io import job_log

torch.set_num_threads(snakemake.threads)
with job_log(snakemake.log[0]):
    train_fold_from_files(snakemake.input.clinical, list(snakemake.input.features), {"rna": snakemake.input.rna},
                          snakemake.input.splits, int(snakemake.wildcards.fold),
                          os.path.dirname(snakemake.output.metrics), snakemake.params.train, seed=snakemake.params.seed)
