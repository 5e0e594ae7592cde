# Cross-validation summary (rule evaluate) and attention maps (rule attention_maps); the report
# (`snakemake --report`) shows their outputs with the captions in workflow/report/.
# Config block `evaluate:` (defaults in workflow/schemas/config.schema.yaml): attention_model, attention_cases,
# heatmap_px, reference_model (the model the others are compared with, paired), bootstrap (replicates),
# bootstrap_seed; attention faithfulness (rule faithfulness): faithfulness_models, faithfulness_cases,
# deletion_fractions, deletion_repeats, ig_steps.


def train_fold_outputs(name):
    """Input function: output ``name`` of rule train for every configured model and fold (none when
    rule train does not declare it)."""
    pattern = getattr(rules.train.output, name, None)
    return fold_outputs(pattern) if pattern is not None else (lambda wildcards: [])


def attention_fold_outputs(name):
    """Output ``name`` of rule train for the attention model's folds."""
    pattern = getattr(rules.train.output, name)
    model = config["evaluate"]["attention_model"]
    return lambda wildcards: expand(pattern, cohort=wildcards.cohort, model=model, fold=all_folds())


def attention_targets():
    """attention_maps (and faithfulness) outputs of every cohort, for `rule all`; none unless the
    attention model is among train.models and rule train writes attention.npz."""
    trained = config["evaluate"]["attention_model"] in config["train"]["models"]
    if not trained or not hasattr(rules.train.output, "attention"):
        return []
    faithfulness = [f"{RESULTS}/{{cohort}}/attention/faithfulness.tsv"] if faithfulness_models() else []
    return expand([f"{RESULTS}/{{cohort}}/attention/genes.tsv", *faithfulness], cohort=COHORTS)


def faithfulness_models():
    """The models of evaluate.faithfulness_models that are trained (train.models)."""
    return [m for m in config["evaluate"]["faithfulness_models"] if m in config["train"]["models"]]


def planted_truth(name):
    """Input function: the generated demo's truth file ``name`` (truth_tumour.npz: where each slide's
    tumour texture is; truth_genes.tsv: the planted genes), which preprocessing/demo.py writes beside
    the cohort's oracle.json; none for any other cohort."""
    def files(wildcards):
        oracle = cohort_key("oracle")(wildcards)
        path = os.path.join(os.path.dirname(oracle), name) if oracle else None
        return [path] if path and os.path.exists(path) else []
    return files


def gene_names_of(cohort):
    """omics/rna_genes.tsv (gene ids -> names) where the GDC `rna` rule writes it: a cohort with a
    sample sheet and no `rna` omics table; none for a cohort of tables only."""
    c = config["cohorts"][cohort]
    if not defined("rna") or not c.get("sample_sheet") or "rna" in omics_tables(cohort):
        return []
    return expand(rules.rna.output.genes, cohort=cohort)


rule evaluate:
    input:
        metrics=fold_outputs(rules.train.output.metrics),
        predictions=fold_outputs(rules.train.output.predictions),
        missing=train_fold_outputs("missing"),
        clinical=rules.clinical.output.table,
        splits=rules.splits.output.json,
    output:
        metrics=report(f"{RESULTS}/{{cohort}}/metrics.tsv", caption="../report/metrics.rst", category="Results",
                       labels={"cohort": "{cohort}", "table": "per fold"}),
        summary=report(f"{RESULTS}/{{cohort}}/metrics_summary.tsv", caption="../report/summary.rst",
                       category="Results", labels={"cohort": "{cohort}", "table": "summary"}),
        all_cases=report(f"{RESULTS}/{{cohort}}/metrics_all_cases.tsv", caption="../report/metrics_all_cases.rst",
                         category="Results", labels={"cohort": "{cohort}", "table": "per fold, all cases per model"}),
        # read by workflow/report/workflow.rst: the report's first page leads with it
        headline=report(f"{RESULTS}/{{cohort}}/headline.rst", caption="../report/headline.rst", category="Results",
                        labels={"cohort": "{cohort}", "table": "headline"}),
        km=report(f"{RESULTS}/{{cohort}}/km.png", caption="../report/km.rst", category="Results",
                  labels={"cohort": "{cohort}", "table": "Kaplan-Meier"}),
        missing=report(f"{RESULTS}/{{cohort}}/missing_modalities.tsv", caption="../report/missing.rst",
                       category="Results", labels={"cohort": "{cohort}", "table": "missing modalities"}),
        curves=report(f"{RESULTS}/{{cohort}}/missing_curves.tsv", caption="../report/missing_curves.rst",
                      category="Results", labels={"cohort": "{cohort}", "table": "missing-modality curves"}),
        ablations=report(f"{RESULTS}/{{cohort}}/ablations.tsv", caption="../report/ablations.rst", category="Results",
                         labels={"cohort": "{cohort}", "table": "ablations"}),
        curves_png=report(f"{RESULTS}/{{cohort}}/missing_curves.png", caption="../report/missing_curves.rst",
                          category="Results", labels={"cohort": "{cohort}", "table": "missing-modality curves (plot)"}),
    log:
        f"{RESULTS}/{{cohort}}/logs/evaluate.log",
    message:
        "Summarising cross-validation of cohort {wildcards.cohort}"
    params:
        oracle=cohort_key("oracle"),
        reference=config["evaluate"]["reference_model"],
        n_boot=config["evaluate"]["bootstrap"],
        seed=config["evaluate"]["bootstrap_seed"],
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/evaluate.py"


rule attention_maps:
    input:
        attention=attention_fold_outputs("attention"),
        predictions=attention_fold_outputs("predictions"),
        patches=per_slide(rules.tiling.output.h5),
        slides=slide_paths,
        genes=lambda wildcards: gene_names_of(wildcards.cohort),
        truth_tumour=planted_truth("truth_tumour.npz"),  # the demo's: outlined on the heatmaps
    output:
        heatmaps=report(directory(f"{RESULTS}/{{cohort}}/attention/heatmaps"), patterns=["{name}.png"],
                        caption="../report/attention.rst", category="Attention",
                        labels={"cohort": "{cohort}", "case and slide": "{name}"}),
        genes=report(f"{RESULTS}/{{cohort}}/attention/genes.tsv", caption="../report/genes.rst",
                     category="Attention", labels={"cohort": "{cohort}", "table": "gene ranking"}),
    log:
        f"{RESULTS}/{{cohort}}/logs/attention_maps.log",
    message:
        "Mapping {params.model} attention of cohort {wildcards.cohort} onto slides and genes"
    params:
        model=config["evaluate"]["attention_model"],
        n_cases=config["evaluate"]["attention_cases"],
        heatmap_px=config["evaluate"]["heatmap_px"],
        slide_ids=cohort_slides,
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/report_attention.py"


def faithfulness_fold_outputs(name):
    """Output ``name`` of rule train for every fold of every model of faithfulness_models()."""
    pattern = getattr(rules.train.output, name)
    return lambda wildcards: expand(pattern, cohort=wildcards.cohort, model=faithfulness_models(), fold=all_folds())


# Does attention point at what drives the prediction (deletion curves against random removal and
# Integrated Gradients), and, on the generated demo, at what was planted (healnet/faithfulness.py)?
def faithfulness_omics(wildcards):
    """The omics matrices that the faithfulness models load."""
    return omics_inputs(wildcards.cohort, faithfulness_models())


rule faithfulness:
    input:
        unpack(faithfulness_omics),
        checkpoints=faithfulness_fold_outputs("checkpoint"),
        predictions=faithfulness_fold_outputs("predictions"),
        attention=faithfulness_fold_outputs("attention"),
        features=per_slide(rules.features.output.zarr),
        patches=per_slide(rules.tiling.output.h5),
        slides=slide_paths,  # of a GDC cohort: after its download checkpoint, which params.slide_ids needs
        clinical=rules.clinical.output.table,
        truth_tumour=planted_truth("truth_tumour.npz"),
        truth_genes=planted_truth("truth_genes.tsv"),
    output:
        table=report(f"{RESULTS}/{{cohort}}/attention/faithfulness.tsv", caption="../report/faithfulness.rst",
                     category="Attention", labels={"cohort": "{cohort}", "table": "faithfulness"}),
        png=report(f"{RESULTS}/{{cohort}}/attention/faithfulness.png", caption="../report/faithfulness.rst",
                   category="Attention", labels={"cohort": "{cohort}", "table": "faithfulness (plot)"}),
        folds=f"{RESULTS}/{{cohort}}/attention/faithfulness_folds.tsv",
        curves=f"{RESULTS}/{{cohort}}/attention/deletion_curves.tsv",
    log:
        f"{RESULTS}/{{cohort}}/logs/faithfulness.log",
    message:
        "Testing the attention of {params.models} on cohort {wildcards.cohort}: deletion curves, Integrated Gradients"
    params:
        models=faithfulness_models(),
        omics=lambda wildcards: sorted(faithfulness_omics(wildcards)),
        slide_ids=cohort_slides,
        max_cases=config["evaluate"]["faithfulness_cases"],
        fractions=config["evaluate"]["deletion_fractions"],
        n_random=config["evaluate"]["deletion_repeats"],
        ig_steps=config["evaluate"]["ig_steps"],
        seed=config["seed"],
    threads: 2
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/faithfulness.py"


rule qc:
    input:
        tissue=per_slide(rules.tissue.output.geojson),
        patches=per_slide(rules.tiling.output.h5),
        features=per_slide(rules.features.output.zarr),
        clinical=rules.clinical.output.table,
        omics=lambda wildcards: list(omics_outputs(wildcards.cohort).values()),
        splits=rules.splits.output.json,
        # none for a cohort of tables only (porpoise_table, or clinical_table + omics_tables): no slides
        sample_sheet=cohort_key("sample_sheet", []),
        manifest=cohort_key("manifest", []),
    output:
        slides=report(f"{RESULTS}/{{cohort}}/qc/slides.tsv", caption="../report/qc.rst", category="QC"),
        cases=report(f"{RESULTS}/{{cohort}}/qc/cases.tsv", caption="../report/qc.rst", category="QC"),
    log:
        f"{RESULTS}/{{cohort}}/logs/qc.log",
    message:
        "Accounting for every slide and case of cohort {wildcards.cohort}"
    params:
        data_dir=cohort_key("data_dir", ""),
        tissue_dir=output_dir(rules.tissue.output.geojson),
        patches_dir=output_dir(rules.tiling.output.h5),
        features_dir=output_dir(rules.features.output.zarr),
        omics_names=lambda wildcards: list(omics_outputs(wildcards.cohort)),
        modalities=config["train"]["modalities"],
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/qc.py"
