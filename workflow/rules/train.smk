rule train:
    input:
        features=per_slide(rules.features.output.zarr),
        rna=rules.rna.output.matrix,
        clinical=rules.clinical.output.table,
        splits=rules.splits.output.json,
    output:
        metrics=f"{RESULTS}/{{cohort}}/models/{{model}}/fold{{fold}}/metrics.json",
        predictions=f"{RESULTS}/{{cohort}}/models/{{model}}/fold{{fold}}/predictions.tsv",
        checkpoint=f"{RESULTS}/{{cohort}}/models/{{model}}/fold{{fold}}/model.pt",
    log:
        f"{RESULTS}/{{cohort}}/logs/train/{{model}}/fold{{fold}}.log",
    message:
        "Training {wildcards.model} on fold {wildcards.fold} of cohort {wildcards.cohort}"
    params:
        train=config["train"],
        seed=config["seed"],
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    script:
        "../scripts/train.py"
