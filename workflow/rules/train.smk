# One architecture (the `model` wildcard: healnet, healnet-<modality>, snn, abmil, early-fusion,
# late-fusion, coxnet; see healnet/zoo.py) trained on one fold.  Omics inputs: each modality of
# train.modalities whose matrix a rule makes (rna; cnv and mutations when omics.smk defines them).
from healnet.names import requested_modalities


def omics_inputs(cohort, models):
    """{modality: matrix} for the omics modalities that ``models`` load and a rule makes: those of config
    train.modalities, or those a model's name lists (healnet-wsi-rna-cnv-mutations; healnet.zoo)."""
    wanted = [m for model in models for m in requested_modalities(model, config["train"]["modalities"])]
    return {m: expand(getattr(rules, m).output.matrix, cohort=cohort)[0]
            for m in dict.fromkeys(wanted) if m in OMICS_RULES and defined(m)}


def train_omics(wildcards):
    """Input function of rule train: the omics matrices of model ``wildcards.model``."""
    return omics_inputs(wildcards.cohort, [wildcards.model])


FOLD = f"{RESULTS}/{{cohort}}/models/{{model}}/fold{{fold}}"  # what train writes for one model and fold


# longer than 15 lines: six outputs and four kinds of input
rule train:
    input:
        unpack(train_omics),
        features=rules.feature_index.output.table,
        clinical=rules.clinical.output.table,
        splits=rules.splits.output.json,
    output:
        metrics=f"{FOLD}/metrics.json", predictions=f"{FOLD}/predictions.tsv", missing=f"{FOLD}/missing.tsv",
        attention=f"{FOLD}/attention.npz", history=f"{FOLD}/history.tsv", checkpoint=f"{FOLD}/model.pt",
    log:
        f"{RESULTS}/{{cohort}}/logs/train/{{model}}/fold{{fold}}.log",
    message:
        "Training {wildcards.model} on fold {wildcards.fold} of cohort {wildcards.cohort}"
    params:
        train=config["train"], seed=config["seed"], omics=lambda wildcards: sorted(train_omics(wildcards)),
    threads: 2
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/train.py"
