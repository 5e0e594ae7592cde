# Reads each cohort's sample sheet and manifest, validates them and the config, and gives the
# other rules their inputs.
import os

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


def slide_mpp_override(wildcards):
    """µm/px for a slide whose metadata lacks it: the sample sheet's ``mpp`` column, else the cohort's."""
    slide = SLIDES[wildcards.cohort].loc[wildcards.slide]
    if "mpp" in slide and str(slide["mpp"]).strip() not in ("", "nan", "None"):
        return float(slide["mpp"])
    return cohort_config(wildcards).get("mpp_fallback")


def external_coords(wildcards):
    """An existing CLAM or TRIDENT coordinate file for the slide (config tiling.coords_from)."""
    pattern = config["tiling"].get("coords_pattern", "{slide}.h5")
    return os.path.join(config["tiling"]["coords_from"], pattern.format(slide=wildcards.slide))


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
