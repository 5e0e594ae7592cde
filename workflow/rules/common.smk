# Reads each cohort's sample sheet and manifest, validates them and the config, and gives the
# other rules their inputs.
from snakemake.utils import validate

from preprocessing.inventory import read_inventory, rna_files_of, slides_of

validate(config, "../schemas/config.schema.yaml")

RESULTS = config["results"]
ENCODER = config["features"]["encoder"]
COHORTS = list(config["cohorts"])


def _inventory(cohort):
    c = config["cohorts"][cohort]
    files = read_inventory(c["sample_sheet"], c["manifest"], c["data_dir"])
    validate(files, "../schemas/sample_sheet.schema.yaml")
    return files


INVENTORY = {cohort: _inventory(cohort) for cohort in COHORTS}
SLIDES = {cohort: slides_of(files).set_index("slide_id") for cohort, files in INVENTORY.items()}


wildcard_constraints:
    cohort="|".join(COHORTS),
    fold=r"\d+",


def cohort_config(wildcards):
    return config["cohorts"][wildcards.cohort]


def slide_path(wildcards):
    return SLIDES[wildcards.cohort].loc[wildcards.slide, "path"]


def rna_paths(wildcards):
    return rna_files_of(INVENTORY[wildcards.cohort])["path"].tolist()


def cohort_slides(wildcards):
    return list(SLIDES[wildcards.cohort].index)


def per_slide(pattern):
    """Input function: ``pattern`` expanded over every slide of the job's cohort."""
    return lambda wildcards: expand(pattern, cohort=wildcards.cohort, slide=cohort_slides(wildcards), encoder=ENCODER)


def fold_outputs(pattern):
    return lambda wildcards: expand(pattern, cohort=wildcards.cohort, model=config["train"]["models"],
                                    fold=range(config["splits"]["n_folds"]))
