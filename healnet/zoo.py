"""Every architecture the pipeline trains, by name, built the same way and trained on the same folds.

* ``healnet``: HEALNet over all the configured modalities;
* ``healnet-<modality>`` (``healnet-wsi``, ``healnet-rna``, ...): HEALNet over that modality alone, and
  ``healnet-<m1>-<m2>...`` (``healnet-wsi-rna-cnv-mutations``) over exactly the modalities it names, in
  that order, whether or not ``train.modalities`` lists them (:func:`healnet.names.requested_modalities`);
* ``healnet_<ablation>``: HEALNet over all the configured modalities with one part changed
  (:data:`ABLATIONS`): ``healnet_noself`` (no latent self-attention), ``healnet_selfeach``
  (self-attention after every modality's update, the published code's placement, instead of once
  per layer), ``healnet_tied`` (one set of weights for all layers), ``healnet_meanpool`` (no learned
  latent array: one latent per modality, its mean-pooled tokens projected).  The separator is ``_``:
  modality names are letters, digits and ``_``, so ``healnet-<modality>`` can never mean an ablation,
  and ``healnet_...`` never a modality; both fit the workflow's ``model`` wildcard ``[a-z0-9_-]``;
* ``healnet_prior``: HEALNet whose logits add a fixed elastic-net Cox fitted on the fold's training
  omics, trained at lr 1e-4 (:mod:`healnet.prior`; :data:`TRAINING_VARIANTS`);
* ``snn`` (omics), ``abmil`` (WSI), ``early-fusion``, ``late-fusion``: the baselines of
  :mod:`healnet.baselines`, imported only when asked for;
* ``coxnet``: elastic-net Cox on the concatenated omics (not a torch module: trained by
  :func:`healnet.train.train_fold` through ``healnet.coxnet.fit_coxnet``).

Every torch model takes ``forward(tensors, masks=None, present=None, positions=None,
return_attention=False)`` and returns (b, num_classes) discrete-hazard logits.
"""
from __future__ import annotations

import inspect
from typing import Sequence

from torch import nn

from .model import HEALNet
from .names import named_modalities

BASELINES = ("snn", "abmil", "early-fusion", "late-fusion")
OMICS_ONLY = ("snn", "coxnet")
WSI_ONLY = ("abmil",)
# HEALNet keyword arguments of each ablation; they override the configured model block
ABLATIONS = {
    "healnet_noself": {"self_per_cross_attn": 0},
    "healnet_selfeach": {"self_attn_after": "modality"},
    "healnet_tied": {"tie_all_layers": True},
    "healnet_meanpool": {"latent_array": "mean_pool"},
}
# what each ablation changes, for the report's ablation table
ABLATION_CHANGES = {
    "healnet_noself": "no self-attention between the latent updates",
    "healnet_selfeach": "self-attention after every modality's update (the published code's placement)",
    "healnet_tied": "one set of weights shared by all layers",
    "healnet_meanpool": "no latent array: mean-pooled modality embeddings",
}
# HEALNet trained differently, by name: the training settings it overrides
TRAINING_VARIANTS = {
    "healnet_genes": {"omic_tokens": "genes"},  # one token per gene: per-gene attention (healnet.faithfulness)
    # the attention over a fixed in-fold elastic-net Cox (healnet.prior), at the learning rate chosen for it on the
    # development cohorts (README "Training protocol"): the attention only refines the linear model
    "healnet_prior": {"omic_prior": "elastic_net", "lr": 1e-4},
}
ARCHITECTURES = ("healnet", "healnet-<modality>", *ABLATIONS, *TRAINING_VARIANTS, *BASELINES, "coxnet")


def is_healnet(name: str) -> bool:
    return name == "healnet" or name.startswith("healnet-") or name in ABLATIONS or name in TRAINING_VARIANTS


def training_overrides(name: str) -> dict:
    """The training settings architecture ``name`` sets whatever the config says (none for most)."""
    return dict(TRAINING_VARIANTS.get(name, {}))


def healnet_kwargs(name: str, kwargs: dict) -> dict:
    """HEALNet keyword arguments of architecture ``name``: ``kwargs`` with its ablation's own on top
    (saved with a checkpoint, ``HEALNet(**healnet_kwargs(...))`` rebuilds the ablation)."""
    return {**kwargs, **ABLATIONS.get(name, {})}


def model_modalities(name: str, modalities: Sequence[str]) -> tuple[str, ...]:
    """The modalities (in configured order; a ``healnet-<m1>-<m2>`` name: in its order) that
    architecture ``name`` reads."""
    modalities = tuple(modalities)
    if name == "healnet" or name in ABLATIONS or name in TRAINING_VARIANTS or name in ("early-fusion", "late-fusion"):
        chosen = modalities
    elif name.startswith("healnet-"):
        chosen = named_modalities(name)
        absent = [m for m in chosen if m not in modalities]
        if absent or len(set(chosen)) < len(chosen):
            raise ValueError(f"architecture {name!r}: modalities {absent or list(chosen)} are not among (or repeat) "
                             f"the loaded modalities {list(modalities)}")
    elif name in OMICS_ONLY:
        chosen = tuple(m for m in modalities if m != "wsi")
    elif name in WSI_ONLY:
        chosen = tuple(m for m in modalities if m == "wsi")
    else:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    if not chosen:
        raise ValueError(f"architecture {name!r} has none of its modalities among {list(modalities)}")
    return chosen


def build_model(name: str, *, input_channels: Sequence[int], modalities: Sequence[str], num_classes: int,
                input_axes: Sequence[int] | None = None, fourier_encode: bool = False, **kwargs) -> nn.Module:
    """The torch model ``name`` over ``modalities`` (already those of :func:`model_modalities`).

    HEALNet variants take HEALNet's keyword arguments (an ablation's own, :data:`ABLATIONS`, win); a
    baseline gets ``kwargs`` (and the Fourier arguments only if its builder accepts them)."""
    if len(input_channels) != len(modalities):
        raise ValueError(f"{name}: {len(input_channels)} input channel counts for {len(modalities)} modalities")
    if is_healnet(name):
        return HEALNet(input_channels=list(input_channels), input_axes=input_axes, num_classes=num_classes,
                       fourier_encode=fourier_encode, **healnet_kwargs(name, kwargs))
    if name == "coxnet":
        raise ValueError("coxnet is not a torch model: train it with healnet.train.train_fold")
    if name not in BASELINES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    from .baselines import BASELINES as builders  # lazy: the baselines are optional

    builder = builders[name]
    params = inspect.signature(builder).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    extra = {k: v for k, v in {"input_axes": input_axes, "fourier_encode": fourier_encode}.items()
             if fourier_encode and (takes_all or k in params)}
    return builder(input_channels=list(input_channels), modalities=list(modalities), num_classes=num_classes,
                   **extra, **kwargs)
