# Zoomable viewer of the slides in the attention report (healnet/viewer.py): DeepZoom tiles and one
# static OpenSeadragon page per cohort, results/{cohort}/viewer/index.html. OpenSeadragon comes from
# npm (`npm ci`, run by `make install`); config viewer.enabled: false leaves the viewer out of `all`.


def viewer_targets():
    """The viewer of every cohort, for `rule all`: none when disabled or without attention maps."""
    if not config["viewer"]["enabled"] or not attention_targets():
        return []
    return expand(rules.viewer.output.folder, cohort=COHORTS)


# longer than 15 lines: the heatmaps, the attention model's folds, the slides' index, OpenSeadragon
rule viewer:
    input:
        heatmaps=rules.attention_maps.output.heatmaps,
        attention=attention_fold_outputs("attention"), predictions=attention_fold_outputs("predictions"),
        index=rules.feature_index.output.table,  # each slide's file, tissue and patches
        openseadragon=os.path.join(workflow.basedir, config["viewer"]["openseadragon"], "openseadragon.min.js"),
    output:
        folder=directory(f"{RESULTS}/{{cohort}}/viewer"),  # index.html, tiles/, data/, openseadragon/
    log:
        f"{RESULTS}/{{cohort}}/logs/viewer.log",
    message:
        "Writing DeepZoom tiles and the slide viewer of cohort {wildcards.cohort}"
    params:
        **settings("viewer", "tile_size", "quality"),
        **settings("evaluate", "attention_model"),
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/viewer.py"
