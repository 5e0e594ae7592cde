# One architecture (the `model` wildcard: healnet, healnet-<modality>, snn, abmil, early-fusion,
# late-fusion, coxnet; see healnet/zoo.py) trained on one fold.  Omics inputs: each modality of
# train.modalities whose matrix a rule makes (rna; cnv and mutations when omics.smk defines them).
from healnet.zoo import requested_modalities


def omics_inputs(cohort, models):
    """{modality: matrix} for the omics modalities that ``models`` load and a rule makes: those of config
    train.modalities, or those a model's name lists (healnet-wsi-rna-cnv-mutations; healnet.zoo)."""
    wanted = [m for model in models for m in requested_modalities(model, config["train"]["modalities"])]
    return {m: expand(getattr(rules, m).output.matrix, cohort=cohort)[0]
            for m in dict.fromkeys(wanted) if m in OMICS_RULES and defined(m)}


def train_omics(wildcards):
    """Input function of rule train: the omics matrices of model ``wildcards.model``."""
    return omics_inputs(wildcards.cohort, [wildcards.model])


rule train:
    input:
        unpack(train_omics),
        features=per_slide(rules.features.output.zarr),
        clinical=rules.clinical.output.table,
        splits=rules.splits.output.json,
    output:
        metrics=f"{RESULTS}/{{cohort}}/models/{{model}}/fold{{fold}}/metrics.json",
        predictions=f"{RESULTS}/{{cohort}}/models/{{model}}/fold{{fold}}/predictions.tsv",
        missing=f"{RESULTS}/{{cohort}}/models/{{model}}/fold{{fold}}/missing.tsv",
        attention=f"{RESULTS}/{{cohort}}/models/{{model}}/fold{{fold}}/attention.npz",
        history=f"{RESULTS}/{{cohort}}/models/{{model}}/fold{{fold}}/history.tsv",
        checkpoint=f"{RESULTS}/{{cohort}}/models/{{model}}/fold{{fold}}/model.pt",
    log:
        f"{RESULTS}/{{cohort}}/logs/train/{{model}}/fold{{fold}}.log",
    message:
        "Training {wildcards.model} on fold {wildcards.fold} of cohort {wildcards.cohort}"
    wildcard_constraints:
        model=r"[a-z0-9][a-z0-9_-]*",
    params:
        train=config["train"],
        seed=config["seed"],
        omics=lambda wildcards: sorted(train_omics(wildcards)),
    threads: 2
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/train.py"
