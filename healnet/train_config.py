"""The training settings as one typed object: :class:`TrainConfig`, what the pipeline's ``train:`` block holds.

Its defaults are not written here but read from the ``default:``s of workflow/schemas/config.schema.yaml
(``train:``), so the pipeline's train rule and ``healnet cv`` agree on every setting.
:func:`config_from_dict` builds one from a config's ``train`` block (an unknown key is an error);
:data:`HEALNET_DEFAULTS` is the pipeline's HEALNet size.  The loop that reads it is :mod:`healnet.train`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from preprocessing.settings import schema_defaults


# The defaults of every training setting, the pipeline's and `healnet cv`'s alike, are written once: as the
# `default:`s of workflow/schemas/config.schema.yaml (train:), chosen on the four development cohorts.
_TRAIN = schema_defaults()["train"]


@dataclass
class TrainConfig:
    modalities: tuple[str, ...] = tuple(_TRAIN["modalities"])
    architecture: str = "healnet"  # see healnet.zoo: healnet, healnet-<modality>, snn, abmil, early-fusion, ...
    # defaults chosen on the four development cohorts (benchmarks/real_omics.py; README "Training protocol")
    epochs: int = _TRAIN["epochs"]
    batch_size: int = _TRAIN["batch_size"]
    lr: float = _TRAIN["lr"]  # peak of the one-cycle schedule
    weight_decay: float = _TRAIN["weight_decay"]  # decoupled (AdamW) weight decay
    l1: float = _TRAIN["l1"]  # weight of the L1 penalty on weight matrices
    patience: int = _TRAIN["patience"]  # with early stopping: epochs without a better validation score before stopping
    # "none": train the whole one-cycle schedule, the validation cases joining the training (default: on the
    # development cohorts both early-stopping rules chose too early an epoch); "loss": stop on the data term
    # of the training objective (bin-weighted NLL) on the validation cases; "c_index": on their c-index
    early_stopping: str = _TRAIN["early_stopping"]
    n_bins: int = _TRAIN["n_bins"]
    alpha: float = _TRAIN["alpha"]  # weight of the uncensored term in the survival NLL
    cox_weight: float = _TRAIN["cox_weight"]  # weight of the Cox partial likelihood of the risk score (ranking), added to the NLL
    max_patches: int | None = _TRAIN["max_patches"]  # a larger bag is subsampled (seeded, once per fold) to this many patches
    omic_top_k: int | None = _TRAIN["omic_top_k"]  # keep k features of each omics table (ranked by omic_select); None: all
    omic_select: str = _TRAIN["omic_select"]  # rank for omic_top_k: "variance", or "cox" (univariate Cox score, in-fold)
    omic_tokens: str = _TRAIN["omic_tokens"]  # "single": one token whose channels are the genes; "genes": one token per gene
    omic_prior: str = _TRAIN["omic_prior"]  # "elastic_net": a fixed in-fold elastic-net Cox under HEALNet's logits (healnet.prior)
    log_omics: tuple[str, ...] = tuple(_TRAIN["log_omics"])  # omics that get log2(x + 1) before the z-score, where no value is < 0
    fourier_wsi: bool = _TRAIN["fourier_wsi"]  # Fourier-encode patch coordinates
    tie_layers: bool = _TRAIN["tie_layers"]  # HEALNet weight_tie_layers (layers 1..depth-1 share weights)
    snn: bool = _TRAIN["snn"]  # self-normalising (SELU + AlphaDropout) feed-forward blocks
    model: dict = field(default_factory=dict)  # HEALNet keyword arguments (win over tie_layers / snn)
    baselines: dict = field(default_factory=dict)  # per baseline name: its builder's keyword arguments
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:1"...; bf16 autocast on cuda
    prefetch: bool = True  # build the next batch (read its bags) in a background thread
    seed: int = 0
    # test-time missing-modality curves (missing.tsv, healnet.evaluate.missing_curves): each modality, and
    # each pair, removed from these fractions of the test cases
    missing_fractions: tuple[float, ...] = tuple(_TRAIN["missing_fractions"])
    # trained with missingness: {"removed": "rna" or "wsi+rna", "fraction": f} removes it from that share of the
    # training cases AND of the test cases (healnet.missing_curves.trained_curves); None: complete data
    train_missing: dict | None = None
    tune_trials: int = 0  # > 0: Optuna search of that many trials per fold on its inner validation split (healnet.tune)

    def __post_init__(self):
        if self.early_stopping not in ("loss", "c_index", "none"):
            raise ValueError(f"early_stopping must be 'loss', 'c_index' or 'none', got {self.early_stopping!r}")
        if self.omic_top_k is not None and (isinstance(self.omic_top_k, bool) or not isinstance(self.omic_top_k, int)
                                            or self.omic_top_k < 1):
            raise ValueError(f"omic_top_k must be a positive number of features or null (every feature), "
                             f"got {self.omic_top_k!r}")
        if self.omic_select not in ("variance", "cox"):
            raise ValueError(f"omic_select must be 'variance' or 'cox', got {self.omic_select!r}")
        if self.omic_tokens not in ("single", "genes"):
            raise ValueError(f"omic_tokens must be 'single' or 'genes', got {self.omic_tokens!r}")
        if self.omic_prior not in ("none", "elastic_net"):
            raise ValueError(f"omic_prior must be 'none' or 'elastic_net', got {self.omic_prior!r}")
        if any(not 0 < f <= 1 for f in self.missing_fractions):
            raise ValueError(f"missing_fractions must lie in (0, 1], got {list(self.missing_fractions)}")
        self.modalities, self.log_omics = tuple(self.modalities), tuple(self.log_omics)
        self.missing_fractions = tuple(float(f) for f in self.missing_fractions)


HEALNET_DEFAULTS = dict(_TRAIN["model"])  # the pipeline's HEALNet size (config train.model), over HEALNet's own


def config_from_dict(config: dict, **overrides) -> TrainConfig:
    """A :class:`TrainConfig` from the ``train`` block of the pipeline config (its ``models`` list,
    which names the architectures to run, is not a training setting); unknown keys are an error."""
    settings = {k: v for k, v in {**config, **overrides}.items() if k != "models"}
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown train setting(s) {unknown}; known: {sorted(known)}")
    return TrainConfig(**settings)
