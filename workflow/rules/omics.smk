rule rna:
    input:
        files=rna_paths,
        sample_sheet=lambda wildcards: cohort_config(wildcards)["sample_sheet"],
        manifest=lambda wildcards: cohort_config(wildcards)["manifest"],
    output:
        matrix=f"{RESULTS}/{{cohort}}/omics/rna.parquet",
        genes=f"{RESULTS}/{{cohort}}/omics/rna_genes.tsv",
        set_aside=f"{RESULTS}/{{cohort}}/omics/rna_set_aside.tsv",
    log:
        f"{RESULTS}/{{cohort}}/logs/rna.log",
    message:
        "Collecting RNA (STAR counts, TPM) of cohort {wildcards.cohort}"
    params:
        data_dir=lambda wildcards: cohort_config(wildcards)["data_dir"],
    resources:
        mem_mb=8000,
        runtime=30,
    script:
        "../scripts/rna.py"


rule clinical:
    input:
        clinical=lambda wildcards: cohort_config(wildcards)["clinical"],
        sample_sheet=lambda wildcards: cohort_config(wildcards)["sample_sheet"],
        manifest=lambda wildcards: cohort_config(wildcards)["manifest"],
    output:
        table=f"{RESULTS}/{{cohort}}/clinical.parquet",
    log:
        f"{RESULTS}/{{cohort}}/logs/clinical.log",
    message:
        "Deriving overall survival of cohort {wildcards.cohort}"
    params:
        data_dir=lambda wildcards: cohort_config(wildcards)["data_dir"],
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/clinical.py"


rule splits:
    input:
        clinical=rules.clinical.output.table,
    output:
        json=f"{RESULTS}/{{cohort}}/splits.json",
    log:
        f"{RESULTS}/{{cohort}}/logs/splits.log",
    message:
        "Making {params.n_folds} patient-level folds for cohort {wildcards.cohort}"
    params:
        n_folds=config["splits"]["n_folds"],
        val_fraction=config["splits"]["val_fraction"],
        by_site=config["splits"]["stratify_by_site"],
        seed=config["seed"],
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/splits.py"
