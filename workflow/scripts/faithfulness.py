from pathlib import Path

import torch

from healnet.faithfulness import faithfulness_from_files
from preprocessing.feature_store import index_files, read_index
from preprocessing.io import job_log

torch.set_num_threads(snakemake.threads)
with job_log(snakemake.log[0]):
    fold_dirs = {}
    for checkpoint in snakemake.input.checkpoints:  # .../models/{model}/fold{k}/model.pt
        fold_dir = Path(checkpoint).parent
        fold_dirs.setdefault(fold_dir.parent.name, []).append(str(fold_dir))
    faithfulness_from_files(
        fold_dirs, snakemake.input.clinical, read_index(snakemake.input.features),
        {m: getattr(snakemake.input, m) for m in snakemake.params.omics},
        {k: getattr(snakemake.output, k) for k in ("table", "folds", "curves", "png")},
        patch_files=index_files(snakemake.input.features, "patches"),
        truth_tumour=snakemake.input.truth_tumour[0] if len(snakemake.input.truth_tumour) else None,
        truth_genes=snakemake.input.truth_genes[0] if len(snakemake.input.truth_genes) else None,
        fractions=[float(f) for f in snakemake.params.deletion_fractions], ig_steps=int(snakemake.params.ig_steps),
        n_random=int(snakemake.params.deletion_repeats), max_cases=int(snakemake.params.faithfulness_cases),
        seed=int(snakemake.params.seed))
