rule tiling:
    input:
        tissue=rules.tissue.output.geojson,
    output:
        h5=f"{RESULTS}/{{cohort}}/patches/{{slide}}.h5",
    log:
        f"{RESULTS}/{{cohort}}/logs/tiling/{{slide}}.log",
    message:
        "Tiling {wildcards.slide} at {params.tiling[target_mpp]} µm/px"
    params:
        tiling=config["tiling"],
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/tiling.py"
