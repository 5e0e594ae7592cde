# Omics, one rule (and one omics/{name}.parquet) per modality, clinical -> survival, and splits.
#
# GDC cohorts (sample sheet + manifest): rna (STAR counts), cnv (gene-level copy number) and
# mutations (masked somatic MAF). Any cohort may instead (or also) give plain tables:
#   omics_tables: {name: path}   -> omics/{name}.parquet (replaces the GDC rule of that name)
#   clinical_table: path         -> clinical.parquet (case_id, time, event; replaces `clinical`)
#   porpoise_table: path         -> tables/{rna,cnv,mutations}.parquet and tables/clinical.tsv (rule
#                                   porpoise_<cohort>), which common.smk makes the two keys above
# Optional GDC survival source: `cdr:` a TCGA-CDR table and `endpoint:` OS | DSS | DFI | PFI.
import re

from preprocessing.omics import cnv_files_of, maf_files_of


def omics_tables(cohort):
    """The cohort's `omics_tables` (name -> path), names checked."""
    c = config["cohorts"][cohort]
    tables = dict(c.get("omics_tables") or {})
    for name in tables:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", str(name)):
            raise ValueError(f"cohort {cohort}: omics table name {name!r} must be letters, digits and _")
        if name == "rna_counts" and c.get("sample_sheet"):
            raise ValueError(f"cohort {cohort}: omics table name 'rna_counts' is taken by the GDC rna rule")
    return tables


def omics_outputs(cohort):
    """Every omics/{name}.parquet of a cohort, by modality name: the GDC ones, then the tables."""
    out = {}
    if config["cohorts"][cohort].get("sample_sheet"):
        out.update({m: f"{RESULTS}/{cohort}/omics/{m}.parquet" for m in OMICS_RULES})
    out.update({n: f"{RESULTS}/{cohort}/omics/{n}.parquet" for n in omics_tables(cohort)})
    return out


def _cohorts_regex(names):
    """A wildcard constraint matching exactly these cohorts (nothing when empty)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def gdc_cohorts(modality):
    """Cohorts whose `modality` comes from GDC files: they have a sample sheet and no table of that name."""
    return _cohorts_regex([c for c in COHORTS if config["cohorts"][c].get("sample_sheet")
                           and modality not in omics_tables(c)])


def table_outputs(wildcards):
    """The omics tables' parquet outputs of the job's cohort."""
    return [f"{RESULTS}/{wildcards.cohort}/omics/{n}.parquet" for n in omics_tables(wildcards.cohort)]


def inventory_paths(select):
    """Input function: paths of the cohort's inventory files chosen by ``select`` (none without a sample sheet)."""
    def paths(wildcards):
        return select(inventory(wildcards.cohort))["path"].tolist()
    return paths


rule rna:
    input:
        files=rna_paths,
        sample_sheet=cohort_key("sample_sheet"),
        manifest=cohort_key("manifest"),
    output:
        matrix=f"{RESULTS}/{{cohort}}/omics/rna.parquet",
        counts=f"{RESULTS}/{{cohort}}/omics/rna_counts.parquet",
        genes=f"{RESULTS}/{{cohort}}/omics/rna_genes.tsv",
        set_aside=f"{RESULTS}/{{cohort}}/omics/rna_set_aside.tsv",
    wildcard_constraints:
        cohort=gdc_cohorts("rna"),
    log:
        f"{RESULTS}/{{cohort}}/logs/rna.log",
    message:
        "Collecting RNA (STAR counts: TPM and raw counts) of cohort {wildcards.cohort}"
    params:
        data_dir=cohort_key("data_dir"),
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/rna.py"


rule cnv:
    input:
        files=inventory_paths(cnv_files_of),
        sample_sheet=cohort_key("sample_sheet"),
        manifest=cohort_key("manifest"),
    output:
        matrix=f"{RESULTS}/{{cohort}}/omics/cnv.parquet",
        genes=f"{RESULTS}/{{cohort}}/omics/cnv_genes.tsv",
        set_aside=f"{RESULTS}/{{cohort}}/omics/cnv_set_aside.tsv",
        workflows=f"{RESULTS}/{{cohort}}/omics/cnv_workflows.tsv",  # the copy-number pipeline used per case
    wildcard_constraints:
        cohort=gdc_cohorts("cnv"),
    log:
        f"{RESULTS}/{{cohort}}/logs/cnv.log",
    message:
        "Collecting gene-level copy number of cohort {wildcards.cohort}"
    params:
        data_dir=cohort_key("data_dir"),
        cnv_workflows=cohort_key("cnv_workflows"),
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/cnv.py"


rule mutations:
    input:
        files=inventory_paths(maf_files_of),
        sample_sheet=cohort_key("sample_sheet"),
        manifest=cohort_key("manifest"),
    output:
        matrix=f"{RESULTS}/{{cohort}}/omics/mutations.parquet",
        set_aside=f"{RESULTS}/{{cohort}}/omics/mutations_set_aside.tsv",
    wildcard_constraints:
        cohort=gdc_cohorts("mutations"),
    log:
        f"{RESULTS}/{{cohort}}/logs/mutations.log",
    message:
        "Collecting non-silent somatic mutations (MAF) of cohort {wildcards.cohort}"
    params:
        data_dir=cohort_key("data_dir"),
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/mutations.py"


# One rule per (cohort, table): concrete outputs, so a table never competes with another cohort's rule.
for _cohort in COHORTS:
    for _name, _table in omics_tables(_cohort).items():

        rule:
            name:
                re.sub(r"\W", "_", f"tabular_omics_{_cohort}_{_name}")
            input:
                table=_table,
            output:
                matrix=f"{RESULTS}/{_cohort}/omics/{_name}.parquet",
            log:
                f"{RESULTS}/{_cohort}/logs/tabular_omics_{_name}.log",
            message:
                f"Validating omics table {_name} of cohort {_cohort}"
            resources:  # here, not in the profiles: they cannot name a generated rule
                mem_mb=lambda wc, attempt: 8000 * attempt,
                runtime=lambda wc, attempt: 30 * attempt,
            conda:
                "../../envs/pipeline.yaml"
            script:
                "../scripts/tabular_omics.py"


# One rule per cohort with a PORPOISE/MCAT table: its outputs are the modalities its header has.
for _cohort in COHORTS:
    if config["cohorts"][_cohort].get("porpoise_table"):

        rule:
            name:
                re.sub(r"\W", "_", f"porpoise_{_cohort}")
            input:
                table=config["cohorts"][_cohort]["porpoise_table"],
            output:
                **config["cohorts"][_cohort]["porpoise_outputs"],
                clinical=config["cohorts"][_cohort]["clinical_table"],
            log:
                f"{RESULTS}/{_cohort}/logs/porpoise.log",
            message:
                f"Splitting the PORPOISE table of cohort {_cohort} into omics and survival tables"
            resources:  # here, not in the profiles: they cannot name a generated rule
                mem_mb=lambda wc, attempt: 8000 * attempt,
                runtime=lambda wc, attempt: 30 * attempt,
            conda:
                "../../envs/pipeline.yaml"
            script:
                "../scripts/porpoise.py"


rule clinical:
    input:
        clinical=cohort_key("clinical"),
        sample_sheet=cohort_key("sample_sheet"),
        manifest=cohort_key("manifest"),
        cdr=cohort_key("cdr", []),
        tables=table_outputs,
    output:
        table=f"{RESULTS}/{{cohort}}/clinical.parquet",
    wildcard_constraints:
        cohort=_cohorts_regex([c for c in COHORTS if not config["cohorts"][c].get("clinical_table")]),
    log:
        f"{RESULTS}/{{cohort}}/logs/clinical.log",
    message:
        "Deriving survival ({params.endpoint}) of cohort {wildcards.cohort}"
    params:
        data_dir=cohort_key("data_dir"),
        endpoint=cohort_key("endpoint"),
        table_names=lambda wildcards: list(omics_tables(wildcards.cohort)),
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/clinical.py"


rule tabular_clinical:
    input:
        clinical_table=cohort_key("clinical_table"),
        omics=lambda wildcards: list(omics_outputs(wildcards.cohort).values()),
        sample_sheet=cohort_key("sample_sheet", []),
        manifest=cohort_key("manifest", []),
    output:
        table=f"{RESULTS}/{{cohort}}/clinical.parquet",
    wildcard_constraints:
        cohort=_cohorts_regex([c for c in COHORTS if config["cohorts"][c].get("clinical_table")]),
    log:
        f"{RESULTS}/{{cohort}}/logs/clinical.log",
    message:
        "Validating the clinical table of cohort {wildcards.cohort}"
    params:
        data_dir=cohort_key("data_dir", ""),
        endpoint=cohort_key("endpoint"),
        omics_names=lambda wildcards: list(omics_outputs(wildcards.cohort)),
    conda:
        "../../envs/pipeline.yaml"
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
        "Making {params.n_repeats} x {params.n_folds} patient-level folds for cohort {wildcards.cohort}"
    params:
        n_folds=config["splits"]["n_folds"],
        n_repeats=config["splits"]["n_repeats"],
        val_fraction=config["splits"]["val_fraction"],
        by_site=config["splits"]["stratify_by_site"],
        seed=config["seed"],
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/splits.py"
