# GDC cohorts (`source: gdc`): find the project's files and clinical data, then fetch the files.
# Both are checkpoints: the slide list, and so the per-slide jobs, is known only once they ran.
# Cohorts whose sample sheet and manifest are given never reach these rules (no network).


checkpoint gdc_manifest:
    output:
        manifest=f"{RESULTS}/{{cohort}}/gdc/gdc_manifest.txt",
        sample_sheet=f"{RESULTS}/{{cohort}}/gdc/gdc_sample_sheet.tsv",
        clinical=f"{RESULTS}/{{cohort}}/gdc/clinical.tsv",
    log:
        f"{RESULTS}/{{cohort}}/logs/gdc_manifest.log",
    message:
        "Querying the GDC for {params.project} ({params.kinds}) of cohort {wildcards.cohort}"
    params:
        project=lambda wildcards: cohort_config(wildcards)["project"],
        kinds=lambda wildcards: cohort_config(wildcards)["kinds"],
        max_cases=lambda wildcards: cohort_config(wildcards).get("max_cases"),
        only_manifest=lambda wildcards: cohort_config(wildcards).get("given_manifest"),
        base_url=lambda wildcards: cohort_config(wildcards)["gdc"]["base_url"],
        page_size=lambda wildcards: cohort_config(wildcards)["gdc"]["page_size"],
    localrule: True
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/gdc_manifest.py"


checkpoint download:
    input:
        manifest=rules.gdc_manifest.output.manifest,
    output:
        table=f"{RESULTS}/{{cohort}}/gdc/download.tsv",
    log:
        f"{RESULTS}/{{cohort}}/logs/download.log",
    message:
        "Downloading the files of cohort {wildcards.cohort} to {params.data_dir}"
    params:
        data_dir=lambda wildcards: cohort_config(wildcards)["data_dir"],
        gdc=lambda wildcards: cohort_config(wildcards)["gdc"],
    localrule: True
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 24 * 60 * attempt,
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/gdc_download.py"
