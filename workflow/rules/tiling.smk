# Tissue segmentation and patch coordinates of one slide, as one job. Segmentation takes seconds and
# tiling always needs it first: a job each would double the per-slide jobs Snakemake plans (all of
# TCGA: benchmarks/dag.py) and submits, to save seconds when only the tiling settings change. With
# tiling.coords_from, the coordinates come from existing CLAM/TRIDENT files instead of the grid.
TILING = {k: v for k, v in config["tiling"].items() if k not in ("coords_from", "coords_pattern")}
GRID = f"coordinates from {config['tiling']['coords_from']}" if config["tiling"]["coords_from"] else \
    f"{TILING['target_mpp']} µm/px patches"
TISSUE, PATCHES = f"{RESULTS}/{{cohort}}/tissue/{{slide}}", f"{RESULTS}/{{cohort}}/patches/{{slide}}"


rule tiling:
    input:
        slide=slide_path, coords=external_coords if config["tiling"]["coords_from"] else [],
    output:
        tissue=f"{TISSUE}.geojson", tissue_png=f"{TISSUE}.png", h5=f"{PATCHES}.h5", png=f"{PATCHES}.png",
    log:
        f"{RESULTS}/{{cohort}}/logs/tiling/{{slide}}.log",
    message:
        f"Segmenting tissue of {{wildcards.slide}}, then {GRID}"
    params:
        tissue=config["tissue"], tiling=TILING, mpp_fallback=slide_mpp_override,
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/tiling.py"
