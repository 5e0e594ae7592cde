# HEALNet pipeline: TCGA slides + omics -> tissue -> patches -> features -> HEALNet cross-validation.
# Run: snakemake --workflow-profile workflow/profiles/default   (see README.md)
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/omics.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/viewer.smk"


rule all:
    input:
        expand(rules.evaluate.output.metrics, cohort=COHORTS),
        expand(rules.qc.output.slides, cohort=COHORTS),
        expand(rules.qc.output.cases, cohort=COHORTS),
        attention_targets(),
        viewer_targets(),
    default_target: True
