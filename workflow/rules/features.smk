rule features:
    input:
        slide=slide_path,
        coords=rules.tiling.output.h5,
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
