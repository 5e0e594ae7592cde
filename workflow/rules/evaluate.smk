rule evaluate:
    input:
        metrics=fold_outputs(rules.train.output.metrics),
        predictions=fold_outputs(rules.train.output.predictions),
    output:
        metrics=report(f"{RESULTS}/{{cohort}}/metrics.tsv", caption="../report/metrics.rst", category="Results"),
        summary=report(f"{RESULTS}/{{cohort}}/metrics_summary.tsv", caption="../report/summary.rst",
                       category="Results"),
        km=report(f"{RESULTS}/{{cohort}}/km.png", caption="../report/km.rst", category="Results"),
    log:
        f"{RESULTS}/{{cohort}}/logs/evaluate.log",
    message:
        "Summarising cross-validation of cohort {wildcards.cohort}"
    params:
        models=config["train"]["models"],
        oracle=lambda wildcards: cohort_config(wildcards).get("oracle"),
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/evaluate.py"


rule qc:
    input:
        tissue=per_slide(rules.tissue.output.geojson),
        patches=per_slide(rules.tiling.output.h5),
        features=per_slide(rules.features.output.zarr),
        clinical=rules.clinical.output.table,
        rna=rules.rna.output.matrix,
        splits=rules.splits.output.json,
        sample_sheet=lambda wildcards: cohort_config(wildcards)["sample_sheet"],
        manifest=lambda wildcards: cohort_config(wildcards)["manifest"],
    output:
        slides=report(f"{RESULTS}/{{cohort}}/qc/slides.tsv", caption="../report/qc.rst", category="QC"),
        cases=report(f"{RESULTS}/{{cohort}}/qc/cases.tsv", caption="../report/qc.rst", category="QC"),
    log:
        f"{RESULTS}/{{cohort}}/logs/qc.log",
    message:
        "Accounting for every slide and case of cohort {wildcards.cohort}"
    params:
        data_dir=lambda wildcards: cohort_config(wildcards)["data_dir"],
        tissue_dir=lambda wildcards: os.path.dirname(rules.tissue.output.geojson).format(cohort=wildcards.cohort),
        patches_dir=lambda wildcards: os.path.dirname(rules.tiling.output.h5).format(cohort=wildcards.cohort),
        features_dir=lambda wildcards: os.path.dirname(rules.features.output.zarr).format(
            cohort=wildcards.cohort, encoder=ENCODER),
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/qc.py"
