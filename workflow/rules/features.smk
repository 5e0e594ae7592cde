# One job per slide (rule features): its tissue (GeoJSON, QC image), its patch coordinates at the
# target µm/px (or, with tiling.coords_from, those of existing CLAM/TRIDENT files) and their features.
# Segmentation and tiling take under a second of CPU per slide (benchmarks/segmentation.py): a job of
# their own bought little and doubled the jobs Snakemake plans (all of TCGA, benchmarks/dag.py, plans
# in 0.6 × the time with one job per slide). With `features.stain_norm`, the stain target they are
# normalised to (rule stain_target, once per cohort). The stain settings are params of rule features
# only when normalisation is on, so that a run without it keeps its params, and its finished stores,
# exactly as before the option existed. Rule features runs on one thread (the default): locally two
# slides encode side by side; profiles/slurm raises it (and num_workers).
TILING = {k: v for k, v in config["tiling"].items() if k not in ("coords_from", "coords_pattern")}
GRID = f"coordinates from {config['tiling']['coords_from']}" if config["tiling"]["coords_from"] else \
    f"{TILING['target_mpp']} µm/px patches"
TISSUE, PATCHES = f"{RESULTS}/{{cohort}}/tissue/{{slide}}", f"{RESULTS}/{{cohort}}/patches/{{slide}}"
EXTERNAL_COORDS = external_coords if config["tiling"]["coords_from"] else []
STORE = directory(f"{RESULTS}/{{cohort}}/features/{ENCODER}/{{slide}}.zarr")
STAIN = config["features"]  # its defaults: workflow/schemas/config.schema.yaml
STAIN_PARAMS = {} if STAIN["stain_norm"] is None else {
    "stain": {k: STAIN[k] for k in ("stain_norm", "stain_target", "stain_target_patches")}}
FEATURE_PARAMS = {"tissue": config["tissue"], "tiling": TILING, "encoder": ENCODER,
                  **settings("features", "weights", "batch_size", "dtype"), "seed": config["seed"], **STAIN_PARAMS}


def stain_target_inputs(wildcards):
    """The cohort's slides, and their CLAM/TRIDENT coordinates with tiling.coords_from
    (features.stain_target: cohort), else the reference image."""
    if STAIN["stain_target"] != "cohort":
        return {"slides": [], "coords": [], "reference": STAIN["stain_target"]}
    coords = [coords_file(s) for s in cohort_slides(wildcards)] if config["tiling"]["coords_from"] else []
    return {"slides": slide_paths(wildcards), "coords": coords, "reference": []}


def cohort_mpp_fallbacks(wildcards):
    """Params function of rule stain_target: each slide's µm/px where its metadata lacks it."""
    return [mpp_fallback(wildcards.cohort, s) for s in cohort_slides(wildcards)]


STAIN_TARGET_PARAMS = {**settings("features", "stain_norm", "stain_target", "stain_target_patches"),
                       "seed": config["seed"]}
if STAIN["stain_target"] == "cohort":  # fitted on patches of all its slides, before any slide's job tiled
    # it: the stain_target job tiles them itself with the same settings (the same coordinates), then drops them
    STAIN_TARGET_PARAMS.update(tissue=config["tissue"], tiling=TILING, mpp_fallbacks=cohort_mpp_fallbacks)


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
        **STAIN_TARGET_PARAMS,
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
        slide=slide_path, coords=EXTERNAL_COORDS, stain_target=STAIN_TARGET,
    output:
        tissue=f"{TISSUE}.geojson", tissue_png=f"{TISSUE}.png", h5=f"{PATCHES}.h5", png=f"{PATCHES}.png", zarr=STORE,
    log:
        f"{RESULTS}/{{cohort}}/logs/features/{ENCODER}/{{slide}}.log",
    message:
        f"Segmenting tissue of {{wildcards.slide}}, then {GRID}, encoded with {ENCODER}"
    params:
        **FEATURE_PARAMS, mpp_fallback=slide_mpp_override, case_id=slide_case_id,
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/features.py"


def indexed_files(wildcards, input):
    """Params function of rule feature_index: {column: {slide id: file}} for the slides whose stores are
    its inputs: their files (of a GDC cohort from its query: no wait for the others), tissue and patches."""
    ids = [os.path.basename(s)[:-len(".zarr")] for s in input.stores if s.endswith(".zarr")]
    files = {"slide": [_slide(wildcards.cohort, s)["path"] for s in ids]}
    for column, pattern in (("tissue", rules.features.output.tissue), ("patches", rules.features.output.h5)):
        files[column] = expand(pattern, cohort=wildcards.cohort, slide=ids)
    return {column: dict(zip(ids, paths)) for column, paths in files.items()}


# One row per slide of the cohort: its feature store, case and status, its file, tissue and patches.
# What the cohort-level jobs (train, qc, attention_maps, faithfulness, viewer) read, so that each of
# them has one input rather than up to three per slide (planning all of TCGA stays cheap). A slide's
# tissue and patches files are params: the job that wrote its store wrote them too.
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
