# Omics, one rule (and one omics/{name}.parquet) per modality, clinical -> survival, and splits.
#
# GDC cohorts (sample sheet + manifest, in one table by rule inventory): rna (STAR counts), cnv
# (gene-level copy number) and mutations (masked somatic MAF). Any cohort may instead (or also) give plain tables:
#   omics_tables: {name: path}   -> omics/{name}.parquet (replaces the GDC rule of that name)
#   clinical_table: path         -> clinical.parquet (case_id, time, event; replaces `clinical`)
#   porpoise_table: path         -> tables/{rna,cnv,mutations}.parquet and tables/clinical.tsv (rule
#                                   porpoise_<cohort>), which common.smk makes the two keys above
# Optional GDC survival source: `cdr:` a TCGA-CDR table and `endpoint:` OS | DSS | DFI | PFI.
import re

from preprocessing.omics import cnv_files_of, maf_files_of

OMICS = f"{RESULTS}/{{cohort}}/omics"  # one {name}.parquet per modality (and the GDC rules' gene lists)


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
    """Every omics/{name}.parquet of a cohort, by modality name: the GDC ones, then the tables. A file's
    stem is its modality's name: the clinical and qc scripts take the names from the paths."""
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


def omics_files(wildcards):
    """Input function: every omics/{name}.parquet of the job's cohort (see omics_outputs)."""
    return list(omics_outputs(wildcards.cohort).values())


def inventory_paths(select):
    """Input function: paths of the cohort's inventory files chosen by ``select`` (none without a sample sheet)."""
    def paths(wildcards):
        return select(inventory(wildcards.cohort))["path"].tolist()
    return paths


# One table of the cohort's files (its sample sheet joined with the manifest, paths under data_dir):
# what the rules below and qc read. A GDC cohort's sample sheet is its download checkpoint's.
rule inventory:
    input:
        sample_sheet=cohort_key("sample_sheet"), manifest=cohort_key("manifest"),
    output:
        table=f"{RESULTS}/{{cohort}}/inventory.parquet",
    log:
        f"{RESULTS}/{{cohort}}/logs/inventory.log",
    message:
        "Listing the files of cohort {wildcards.cohort} (its sample sheet joined with its manifest)"
    params:
        **settings("cohort", "data_dir"),
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/inventory.py"


# longer than 15 lines: four outputs and the cohorts it serves (wildcard_constraints)
rule rna:
    input:
        files=rna_paths, inventory=rules.inventory.output.table,
    output:
        multiext(f"{OMICS}/rna", matrix=".parquet", counts="_counts.parquet", genes="_genes.tsv",
                 set_aside="_set_aside.tsv"),
    wildcard_constraints:
        cohort=gdc_cohorts("rna"),
    log:
        f"{RESULTS}/{{cohort}}/logs/rna.log",
    message:
        "Collecting RNA (STAR counts: TPM and raw counts) of cohort {wildcards.cohort}"
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/rna.py"


# longer than 15 lines: four outputs, the cohorts it serves and the sample sheet (for tumour samples)
rule cnv:
    input:
        files=inventory_paths(cnv_files_of), inventory=rules.inventory.output.table,
        sample_sheet=cohort_key("sample_sheet"),  # its Sample ID cells: the tumour sample of a pair
    output:
        multiext(f"{OMICS}/cnv", matrix=".parquet", genes="_genes.tsv", set_aside="_set_aside.tsv",
                 workflows="_workflows.tsv"),  # workflows: the copy-number pipeline used per case
    wildcard_constraints:
        cohort=gdc_cohorts("cnv"),
    log:
        f"{RESULTS}/{{cohort}}/logs/cnv.log",
    message:
        "Collecting gene-level copy number of cohort {wildcards.cohort}"
    params:
        **settings("cohort", "cnv_workflows"),
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/cnv.py"


# longer than 15 lines: the cohorts it serves and the sample sheet (for tumour samples)
rule mutations:
    input:
        files=inventory_paths(maf_files_of), inventory=rules.inventory.output.table,
        sample_sheet=cohort_key("sample_sheet"),  # its Sample ID cells: the tumour sample of a pair
    output:
        multiext(f"{OMICS}/mutations", matrix=".parquet", set_aside="_set_aside.tsv"),
    wildcard_constraints:
        cohort=gdc_cohorts("mutations"),
    log:
        f"{RESULTS}/{{cohort}}/logs/mutations.log",
    message:
        "Collecting non-silent somatic mutations (MAF) of cohort {wildcards.cohort}"
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/mutations.py"


# One rule per (cohort, table): concrete outputs, so a table never competes with another cohort's rule.
for _cohort in COHORTS:
    for _name, _table in omics_tables(_cohort).items():

        # No profile can name a generated rule: it takes the default resources (1 000 cases × 20 000
        # genes: 0.8 GB, benchmarks/omics_table.py; a retry gets twice, then three times the default)
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
            conda:
                "../../envs/pipeline.yaml"
            script:
                "../scripts/tabular_omics.py"


# One rule per cohort with a PORPOISE/MCAT table: its outputs are the modalities its header has.
for _cohort in COHORTS:
    if config["cohorts"][_cohort].get("porpoise_table"):

        # longer than 15 lines: a generated rule's name:. No profile can name it: it takes the default
        # resources (the largest development cohort's table, LUAD: 0.2 GB and 4 s)
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
            conda:
                "../../envs/pipeline.yaml"
            script:
                "../scripts/porpoise.py"


# longer than 15 lines: four inputs, and the cohorts it serves (those without a clinical_table)
rule clinical:
    input:
        clinical=cohort_key("clinical"), inventory=rules.inventory.output.table,
        cdr=cohort_key("cdr", []), tables=table_outputs,
    output:
        table=f"{RESULTS}/{{cohort}}/clinical.parquet",
    wildcard_constraints:
        cohort=_cohorts_regex([c for c in COHORTS if not config["cohorts"][c].get("clinical_table")]),
    log:
        f"{RESULTS}/{{cohort}}/logs/clinical.log",
    message:
        "Deriving survival ({params.endpoint}) of cohort {wildcards.cohort}"
    params:
        **settings("cohort", "endpoint"),
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/clinical.py"


# longer than 15 lines: three inputs, and the cohorts it serves (those with a clinical_table)
rule tabular_clinical:
    input:
        clinical_table=cohort_key("clinical_table"), inventory=inventory_table,
        omics=omics_files,
    output:
        table=f"{RESULTS}/{{cohort}}/clinical.parquet",
    wildcard_constraints:
        cohort=_cohorts_regex([c for c in COHORTS if config["cohorts"][c].get("clinical_table")]),
    log:
        f"{RESULTS}/{{cohort}}/logs/clinical.log",
    message:
        "Validating the clinical table of cohort {wildcards.cohort}"
    params:
        **settings("cohort", "endpoint"),
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
        "Making {params.splits[n_repeats]} x {params.splits[n_folds]} patient-level folds for cohort {wildcards.cohort}"
    params:
        splits=config["splits"], seed=config["seed"],
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/splits.py"
