# GDC cohorts (`source: gdc`): find the project's files and clinical data (checkpoint gdc_manifest),
# plan the download and check the space (gdc_plan), fetch each file in its own job (checkpoint
# gdc_file, at most `gdc.connections` at once over all cohorts: the gdc_connections resource), then
# record what every file became (checkpoint download). A slide's jobs start once its gdc_file job is
# done; a file that answered 403 / 404 or kept a wrong md5 is marked failed and the others go on.
# Cohorts whose sample sheet and manifest are given never reach these rules (no network).
UUID_RE = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


checkpoint gdc_manifest:
    output:
        manifest=f"{RESULTS}/{{cohort}}/gdc/gdc_manifest.txt",
        sample_sheet=f"{RESULTS}/{{cohort}}/gdc/gdc_sample_sheet.tsv",
        clinical=f"{RESULTS}/{{cohort}}/gdc/clinical.tsv",
        stale_ids=f"{RESULTS}/{{cohort}}/gdc/stale_ids.tsv",
    log:
        f"{RESULTS}/{{cohort}}/logs/gdc_manifest.log",
    message:
        "Querying the GDC for {params.project} ({params.kinds}) of cohort {wildcards.cohort}"
    params:
        project=cohort_key("project"),
        kinds=cohort_key("kinds"),
        max_cases=cohort_key("max_cases"),
        only_manifest=cohort_key("given_manifest"),
        base_url=cohort_key("gdc.base_url"),
        page_size=cohort_key("gdc.page_size"),
        access=cohort_key("gdc.access"),
        cnv_workflows=cohort_key("cnv_workflows"),
        slide_codes=cohort_key("slide_sample_codes"),
    localrule: True
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/gdc_manifest.py"


rule gdc_plan:
    input:
        manifest=rules.gdc_manifest.output.manifest,
        sample_sheet=rules.gdc_manifest.output.sample_sheet,
    output:
        plan=f"{RESULTS}/{{cohort}}/gdc/plan.tsv",
    log:
        f"{RESULTS}/{{cohort}}/logs/gdc_plan.log",
    message:
        "Planning the download of cohort {wildcards.cohort} to {params.data_dir} (files, bytes, free space)"
    params:
        data_dir=cohort_key("data_dir"),
        margin=cohort_key("gdc.space_margin"),
    localrule: True
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/gdc_plan.py"


def gdc_file_info(wildcards):
    """The manifest row of the job's file (name, md5, size, kind, access)."""
    from preprocessing.gdc import kind_of

    f = gdc_files(wildcards.cohort).loc[wildcards.file_id]
    return {"file_name": f["file_name"], "md5": f["md5"], "size": int(f["size"]), "kind": kind_of(f["data_type"]),
            "access": f.get("access", "") or ""}


checkpoint gdc_file:
    input:
        plan=rules.gdc_plan.output.plan,
    output:
        record=f"{RESULTS}/{{cohort}}/gdc/records/{{file_id}}.tsv",
    log:
        f"{RESULTS}/{{cohort}}/logs/gdc_file/{{file_id}}.log",
    message:
        "Fetching {params.file[file_name]} of cohort {wildcards.cohort} to {params.data_dir}"
    wildcard_constraints:
        file_id=UUID_RE,
    params:
        file=gdc_file_info,
        data_dir=cohort_key("data_dir"),
        gdc=cohort_key("gdc"),
        progress=lambda wildcards: f"{RESULTS}/{wildcards.cohort}/gdc/progress.tsv",
    resources:
        gdc_connections=1,  # a concurrency bound (config gdc.connections), not a size: stays with the rule
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/gdc_file.py"


checkpoint download:
    input:
        records=lambda wildcards: [gdc_record(wildcards.cohort, f) for f in gdc_files(wildcards.cohort).index],
        sample_sheet=rules.gdc_manifest.output.sample_sheet,
    output:
        table=f"{RESULTS}/{{cohort}}/gdc/download.tsv",
        sample_sheet=f"{RESULTS}/{{cohort}}/gdc/sample_sheet.tsv",
    log:
        f"{RESULTS}/{{cohort}}/logs/download.log",
    message:
        "Recording what became of every file of cohort {wildcards.cohort}"
    localrule: True
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/gdc_download.py"
