# GDC cohorts (`source: gdc`): find the project's files and clinical data (checkpoint gdc_manifest),
# plan the download and check the space (gdc_plan), fetch each file in its own job (checkpoint
# gdc_file, at most `gdc.connections` at once over all cohorts: the gdc_connections resource), then
# record what every file became (checkpoint download). A slide's jobs start once its gdc_file job is
# done; a file that answered 403 / 404 or kept a wrong md5 is marked failed and the others go on.
# Cohorts whose sample sheet and manifest are given never reach these rules (no network).
UUID_RE = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
GDC_DIR = f"{RESULTS}/{{cohort}}/gdc"  # the cohort's query, plan, records and sample sheet (not its files)


localrules:
    gdc_manifest,
    gdc_plan,
    download,


wildcard_constraints:
    file_id=UUID_RE,


checkpoint gdc_manifest:
    output:
        manifest=f"{GDC_DIR}/gdc_manifest.txt", sample_sheet=f"{GDC_DIR}/gdc_sample_sheet.tsv",
        clinical=f"{GDC_DIR}/clinical.tsv", stale_ids=f"{GDC_DIR}/stale_ids.tsv",
    log:
        f"{RESULTS}/{{cohort}}/logs/gdc_manifest.log",
    message:
        "Querying the GDC for {params.project} ({params.kinds}) of cohort {wildcards.cohort}"
    params:
        **settings("cohort", "project", "kinds", "max_cases", "cnv_workflows", "gdc.base_url", "gdc.page_size",
                   "gdc.access", only_manifest="given_manifest", slide_codes="slide_sample_codes"),
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/gdc_manifest.py"


rule gdc_plan:
    input:
        manifest=rules.gdc_manifest.output.manifest, sample_sheet=rules.gdc_manifest.output.sample_sheet,
    output:
        plan=f"{GDC_DIR}/plan.tsv",
    log:
        f"{RESULTS}/{{cohort}}/logs/gdc_plan.log",
    message:
        "Planning the download of cohort {wildcards.cohort} to {params.data_dir} (files, bytes, free space)"
    params:
        **settings("cohort", "data_dir", margin="gdc.space_margin"),
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


def gdc_progress(wildcards):
    """The cohort's download progress (the plan's totals so far), which every gdc_file job updates."""
    return f"{RESULTS}/{wildcards.cohort}/gdc/progress.tsv"


# longer than 15 lines: it keeps its gdc_connections resource, as below
# resources in the rule: gdc_connections bounds the downloads at once (config gdc.connections); not a size
checkpoint gdc_file:
    input:
        plan=rules.gdc_plan.output.plan,
    output:
        record=f"{GDC_DIR}/records/{{file_id}}.tsv",
    log:
        f"{RESULTS}/{{cohort}}/logs/gdc_file/{{file_id}}.log",
    message:
        "Fetching {params.file[file_name]} of cohort {wildcards.cohort} to {params.data_dir}"
    params:
        file=gdc_file_info, data_dir=cohort_key("data_dir"), gdc=cohort_key("gdc"), progress=gdc_progress,
    resources:
        gdc_connections=1,
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/gdc_file.py"


checkpoint download:
    input:
        records=lambda wildcards: [gdc_record(wildcards.cohort, f) for f in gdc_files(wildcards.cohort).index],
        sample_sheet=rules.gdc_manifest.output.sample_sheet,
    output:
        table=f"{GDC_DIR}/download.tsv",
        sample_sheet=f"{GDC_DIR}/sample_sheet.tsv",
    log:
        f"{RESULTS}/{{cohort}}/logs/download.log",
    message:
        "Recording what became of every file of cohort {wildcards.cohort}"
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/gdc_download.py"
