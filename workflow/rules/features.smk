# Patch features (rule features, one job per slide) and, with `features.stain_norm`, the stain
# target they are normalised to (rule stain_target, once per cohort). The stain settings are
# params of rule features only when normalisation is on, so that a run without it keeps its
# params, and its finished stores, exactly as before the option existed.
STAIN = {"stain_norm": None, "stain_target": "cohort", "stain_target_patches": 64, **config["features"]}
STAIN_PARAMS = {} if STAIN["stain_norm"] is None else {
    "stain": {k: STAIN[k] for k in ("stain_norm", "stain_target", "stain_target_patches")}}


rule stain_target:
    input:
        slides=lambda wildcards: [] if STAIN["stain_target"] != "cohort" else
            [slides(wildcards.cohort).loc[s, "path"] for s in cohort_slides(wildcards)],
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
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/stain_target.py"


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
        weights=config["features"].get("weights"),
        batch_size=config["features"].get("batch_size", 64),
        dtype=config["features"].get("dtype", "float16"),
        seed=config["seed"],
        **STAIN_PARAMS,
    threads: 1  # locally two slides encode side by side; profiles/slurm raises it
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
        # num_workers (DataLoader readers) defaults to 0 on a CPU and cores - 1 (≤ 8) with a GPU;
        # a profile can set it: set-resources: features: num_workers: 7
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/features.py"
