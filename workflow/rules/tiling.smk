if config["tiling"]["coords_from"]:

    rule tiling:
        input:
            tissue=rules.tissue.output.geojson, tissue_png=rules.tissue.output.png, coords=external_coords,
        output:
            multiext(f"{RESULTS}/{{cohort}}/patches/{{slide}}", h5=".h5", png=".png"),
        log:
            f"{RESULTS}/{{cohort}}/logs/tiling/{{slide}}.log",
        message:
            "Taking patch coordinates of {wildcards.slide} from {input.coords}"
        conda:
            "../../envs/pipeline.yaml"
        script:
            "../scripts/import_coords.py"

else:

    rule tiling:
        input:
            tissue=rules.tissue.output.geojson, tissue_png=rules.tissue.output.png,
        output:
            multiext(f"{RESULTS}/{{cohort}}/patches/{{slide}}", h5=".h5", png=".png"),
        log:
            f"{RESULTS}/{{cohort}}/logs/tiling/{{slide}}.log",
        message:
            "Tiling {wildcards.slide} at {params.tiling[target_mpp]} µm/px"
        params:
            tiling={k: v for k, v in config["tiling"].items() if k not in ("coords_from", "coords_pattern")},
        conda:
            "../../envs/pipeline.yaml"
        script:
            "../scripts/tiling.py"
