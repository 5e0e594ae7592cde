# Patch features (rule features, one job per slide) and, with `features.stain_norm`, the stain
# target they are normalised to (rule stain_target, once per cohort). The stain settings are
# params of rule features only when normalisation is on, so that a run without it keeps its
# params, and its finished stores, exactly as before the option existed.
STAIN = config["features"]  # its defaults: workflow/schemas/config.schema.yaml
STAIN_PARAMS = {} if STAIN["stain_norm"] is None else {
    "stain": {k: STAIN[k] for k in ("stain_norm", "stain_target", "stain_target_patches")}}


rule stain_target:
    input:
        slides=lambda wildcards: [] if STAIN["stain_target"] != "cohort" else slide_paths(wildcards),
        patches=lambda wildcards: [] if STAIN["stain_target"] != "cohort" else
            per_slide(rules.tiling.output.h5)(wildcards),
        reference=lambda wildcards: [] if STAIN["stain_target"] == "cohort" else STAIN["stain_target"],
    output:
        json=f"{RESULTS}/{{cohort}}/stain/target.json",
        png=f"{RESULTS}/{{cohort}}/stain/target.png",
    log:
        f"{RESULTS}/{{cohort}}/logs/stain_target.log",
    message:
        "Fitting the {params.method} stain target of cohort {wildcards.cohort} on {params.source}"
    params:
        method=STAIN["stain_norm"],
        source=STAIN["stain_target"],
        n_patches=STAIN["stain_target_patches"],
        seed=config["seed"],
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/stain_target.py"


def slide_case_id(wildcards):
    """The slide's case, from the cohort's inventory: stored in its feature store (attribute
    case_id), so that training groups the slide under it rather than guessing from the file name."""
    return str(_slide(wildcards.cohort, wildcards.slide)["case_id"])


rule features:
    input:
        slide=slide_path,
        coords=rules.tiling.output.h5,
        stain_target=lambda wildcards: [] if STAIN["stain_norm"] is None else
            expand(rules.stain_target.output.json, cohort=wildcards.cohort),
    output:
        zarr=directory(f"{RESULTS}/{{cohort}}/features/{{encoder}}/{{slide}}.zarr"),
    log:
        f"{RESULTS}/{{cohort}}/logs/features/{{encoder}}/{{slide}}.log",
    message:
        "Encoding patches of {wildcards.slide} with {wildcards.encoder}"
    params:
        weights=config["features"]["weights"],
        batch_size=config["features"]["batch_size"],
        dtype=config["features"]["dtype"],
        seed=config["seed"],
        case_id=slide_case_id,
        **STAIN_PARAMS,
    threads: 1  # locally two slides encode side by side; profiles/slurm raises it (and num_workers)
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/features.py"
