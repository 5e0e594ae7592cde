# Zoomable viewer of the slides in the attention report (healnet/viewer.py): DeepZoom tiles and one
# static OpenSeadragon page per cohort, results/{cohort}/viewer/index.html. OpenSeadragon comes from
# npm (`npm ci`, run by `make install`); config viewer.enabled: false leaves the viewer out of `all`.
VIEWER = {"enabled": True, "openseadragon": "node_modules/openseadragon/build/openseadragon", "tile_size": 254,
          "quality": 80, **(config.get("viewer") or {})}


def viewer_targets():
    """The viewer of every cohort, for `rule all`: none when disabled or without attention maps."""
    if not VIEWER["enabled"] or not attention_targets():
        return []
    return expand(rules.viewer.output.folder, cohort=COHORTS)


rule viewer:
    input:
        heatmaps=rules.attention_maps.output.heatmaps,
        attention=attention_fold_outputs("attention"),
        predictions=attention_fold_outputs("predictions"),
        tissue=per_slide(rules.tissue.output.geojson),
        patches=per_slide(rules.tiling.output.h5),
        slides=lambda wildcards: [slides(wildcards.cohort).loc[s, "path"] for s in cohort_slides(wildcards)],
        openseadragon=os.path.join(workflow.basedir, VIEWER["openseadragon"], "openseadragon.min.js"),
    output:
        folder=directory(f"{RESULTS}/{{cohort}}/viewer"),  # index.html, tiles/, data/, openseadragon/
    log:
        f"{RESULTS}/{{cohort}}/logs/viewer.log",
    message:
        "Writing DeepZoom tiles and the slide viewer of cohort {wildcards.cohort}"
    params:
        slide_ids=cohort_slides,
        model=EVALUATE["attention_model"],
        tile_size=VIEWER["tile_size"],
        quality=VIEWER["quality"],
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/viewer.py"
