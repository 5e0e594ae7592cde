# Patch features (rule features, one job per slide) and, with `features.stain_norm`, the stain
# target they are normalised to (rule stain_target, once per cohort). The stain settings are
# params of rule features only when normalisation is on, so that a run without it keeps its
# params, and its finished stores, exactly as before the option existed. Rule features runs on
# one thread (the default): locally two slides encode side by side; profiles/slurm raises it (and
# num_workers).
STAIN = config["features"]  # its defaults: workflow/schemas/config.schema.yaml
STAIN_PARAMS = {} if STAIN["stain_norm"] is None else {
    "stain": {k: STAIN[k] for k in ("stain_norm", "stain_target", "stain_target_patches")}}
FEATURE_PARAMS = {**settings("features", "weights", "batch_size", "dtype"), "seed": config["seed"], **STAIN_PARAMS}


def stain_target_inputs(wildcards):
    """The cohort's slides and their patches (features.stain_target: cohort), else the reference image."""
    if STAIN["stain_target"] != "cohort":
        return {"slides": [], "patches": [], "reference": STAIN["stain_target"]}
    return {"slides": slide_paths(wildcards), "patches": per_slide(rules.tiling.output.h5)(wildcards), "reference": []}


rule stain_target:
    input:
        unpack(stain_target_inputs),
    output:
        multiext(f"{RESULTS}/{{cohort}}/stain/target", json=".json", png=".png"),
    log:
        f"{RESULTS}/{{cohort}}/logs/stain_target.log",
    message:
        "Fitting the {params.stain_norm} stain target of cohort {wildcards.cohort} on {params.stain_target}"
    params:
        **settings("features", "stain_norm", "stain_target", "stain_target_patches"), seed=config["seed"],
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/stain_target.py"


@per_job
def slide_case_id(wildcards):
    """The slide's case, from the cohort's inventory: stored in its feature store (attribute
    case_id), so that training groups the slide under it rather than guessing from the file name."""
    return str(_slide(wildcards.cohort, wildcards.slide)["case_id"])


def stain_target_of(wildcards):
    """The cohort's stain target, when features are stain-normalised (only then an input function: each
    one is called for every job while planning)."""
    return expand(rules.stain_target.output.json, cohort=wildcards.cohort)


STAIN_TARGET = [] if STAIN["stain_norm"] is None else stain_target_of


rule features:
    input:
        slide=slide_path, coords=rules.tiling.output.h5, stain_target=STAIN_TARGET,
    output:
        zarr=directory(f"{RESULTS}/{{cohort}}/features/{{encoder}}/{{slide}}.zarr"),
    log:
        f"{RESULTS}/{{cohort}}/logs/features/{{encoder}}/{{slide}}.log",
    message:
        "Encoding patches of {wildcards.slide} with {wildcards.encoder}"
    params:
        **FEATURE_PARAMS, case_id=slide_case_id,
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/features.py"


def indexed_files(wildcards, input):
    """Params function of rule feature_index: {column: {slide id: file}} for the slides whose stores are
    its inputs: their files (of a GDC cohort from its query: no wait for the others), tissue and patches."""
    ids = [os.path.basename(s)[:-len(".zarr")] for s in input.stores if s.endswith(".zarr")]
    files = {"slide": [_slide(wildcards.cohort, s)["path"] for s in ids]}
    for column, pattern in (("tissue", rules.tiling.output.tissue), ("patches", rules.tiling.output.h5)):
        files[column] = expand(pattern, cohort=wildcards.cohort, slide=ids)
    return {column: dict(zip(ids, paths)) for column, paths in files.items()}


# One row per slide of the cohort: its feature store, case and status, its file, tissue and patches.
# What the cohort-level jobs (train, qc, attention_maps, faithfulness, viewer) read, so that each of
# them has one input rather than up to three per slide (planning all of TCGA stays cheap). The
# tiling outputs are params: the job that wrote a slide's coordinates ran before its features.
rule feature_index:
    input:
        stores=per_slide(rules.features.output.zarr),
    output:
        table=f"{RESULTS}/{{cohort}}/features/{ENCODER}/index.tsv",
    log:
        f"{RESULTS}/{{cohort}}/logs/feature_index.log",
    message:
        "Listing the feature stores of cohort {wildcards.cohort}"
    params:
        files=indexed_files,
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/feature_index.py"
