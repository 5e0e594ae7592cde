# One architecture (the `model` wildcard: healnet, healnet-<modality>, snn, abmil, early-fusion,
# late-fusion, coxnet; see healnet/zoo.py) trained on one fold.  Omics inputs: each modality of
# train.modalities whose matrix a rule makes (rna; cnv and mutations when omics.smk defines them).
OMICS_RULES = ("rna", "cnv", "mutations")


def train_omics(wildcards):
    """{modality: matrix} for the omics modalities listed in config train.modalities that have a rule."""
    wanted = [m for m in config["train"]["modalities"] if m in OMICS_RULES]
    return {m: expand(getattr(rules, m).output.matrix, cohort=wildcards.cohort)[0]
            for m in wanted if m in rules._rules}


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
    resources:
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=lambda wc, attempt: 120 * attempt,
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/train.py"
