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
    tumour texture is; truth_genes.tsv: the planted genes), which generators/demo.py writes beside
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


# longer than 15 lines: nine report outputs, one per table or figure of the report
rule evaluate:
    input:
        metrics=fold_outputs(rules.train.output.metrics), predictions=fold_outputs(rules.train.output.predictions),
        missing=train_fold_outputs("missing"), clinical=rules.clinical.output.table, splits=rules.splits.output.json,
    output:
        metrics=result("metrics.tsv", caption="../report/metrics.rst", table="per fold"),
        summary=result("metrics_summary.tsv", caption="../report/summary.rst", table="summary"),
        all_cases=result("metrics_all_cases.tsv", caption="../report/metrics_all_cases.rst", table="per fold, all cases per model"),
        # read by workflow/report/workflow.rst: the report's first page leads with it
        headline=result("headline.rst", caption="../report/headline.rst", table="headline"),
        km=result("km.png", caption="../report/km.rst", table="Kaplan-Meier"),
        missing=result("missing_modalities.tsv", caption="../report/missing.rst", table="missing modalities"),
        curves=result("missing_curves.tsv", caption="../report/missing_curves.rst", table="missing-modality curves"),
        ablations=result("ablations.tsv", caption="../report/ablations.rst", table="ablations"),
        curves_png=result("missing_curves.png", caption="../report/missing_curves.rst", table="missing-modality curves (plot)"),
    log:
        f"{RESULTS}/{{cohort}}/logs/evaluate.log",
    message:
        "Summarising cross-validation of cohort {wildcards.cohort}"
    params:
        oracle=cohort_key("oracle"), **settings("evaluate", "reference_model", "bootstrap", "bootstrap_seed"),
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/evaluate.py"


# longer than 15 lines: the attention model's folds, the slides' index, gene names, the demo's truth
rule attention_maps:
    input:
        attention=attention_fold_outputs("attention"), predictions=attention_fold_outputs("predictions"),
        index=rules.feature_index.output.table,  # each slide's file and patches
        genes=lambda wildcards: gene_names_of(wildcards.cohort),
        truth_tumour=planted_truth("truth_tumour.npz"),  # the demo's: outlined on the heatmaps
    output:
        heatmaps=result("attention/heatmaps", caption="../report/attention.rst", patterns=["{name}.png"],
                        **{"case and slide": "{name}"}),
        genes=result("attention/genes.tsv", caption="../report/genes.rst", table="gene ranking"),
    log:
        f"{RESULTS}/{{cohort}}/logs/attention_maps.log",
    message:
        "Mapping {params.attention_model} attention of cohort {wildcards.cohort} onto slides and genes"
    params:
        **settings("evaluate", "attention_model", "attention_cases", "heatmap_px"),
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


# longer than 15 lines: the models' folds, their omics, features, slides and patches, the demo's truth
rule faithfulness:
    input:
        unpack(faithfulness_omics),
        checkpoints=faithfulness_fold_outputs("checkpoint"), predictions=faithfulness_fold_outputs("predictions"),
        attention=faithfulness_fold_outputs("attention"), clinical=rules.clinical.output.table,
        features=rules.feature_index.output.table,  # each slide's store and patches
        truth_tumour=planted_truth("truth_tumour.npz"), truth_genes=planted_truth("truth_genes.tsv"),
    output:
        table=result("attention/faithfulness.tsv", caption="../report/faithfulness.rst", table="faithfulness"),
        png=result("attention/faithfulness.png", caption="../report/faithfulness.rst", table="faithfulness (plot)"),
        folds=f"{RESULTS}/{{cohort}}/attention/faithfulness_folds.tsv",
        curves=f"{RESULTS}/{{cohort}}/attention/deletion_curves.tsv",
    log:
        f"{RESULTS}/{{cohort}}/logs/faithfulness.log",
    message:
        "Testing the attention of {params.models} on cohort {wildcards.cohort}: deletion curves, Integrated Gradients"
    params:
        models=faithfulness_models(), omics=lambda wildcards: sorted(faithfulness_omics(wildcards)),
        seed=config["seed"],
        **settings("evaluate", "faithfulness_cases", "deletion_fractions", "deletion_repeats", "ig_steps"),
    threads: 2
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/faithfulness.py"


# longer than 15 lines: it reads what every stage made of each slide and case
rule qc:
    input:
        index=rules.feature_index.output.table, clinical=rules.clinical.output.table,
        omics=omics_files, splits=rules.splits.output.json, inventory=inventory_table,  # none: a cohort of tables
    output:
        slides=result("qc/slides.tsv", caption="../report/qc.rst"),
        cases=result("qc/cases.tsv", caption="../report/qc.rst"),
    log:
        f"{RESULTS}/{{cohort}}/logs/qc.log",
    message:
        "Accounting for every slide and case of cohort {wildcards.cohort}"
    params:
        modalities=config["train"]["modalities"],
    conda:
        "../../envs/pipeline.yaml"
    script:
        "../scripts/qc.py"
