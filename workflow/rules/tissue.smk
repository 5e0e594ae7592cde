rule tissue:
    input:
        slide=slide_path,
    output:
        multiext(f"{RESULTS}/{{cohort}}/tissue/{{slide}}", geojson=".geojson", png=".png"),
    log:
        f"{RESULTS}/{{cohort}}/logs/tissue/{{slide}}.log",
    message:
        "Segmenting tissue of {wildcards.slide}"
    params:
        tissue=config["tissue"], mpp_fallback=slide_mpp_override,
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/tissue.py"
