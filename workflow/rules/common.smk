# Reads the cohorts (inline `cohorts:` blocks and one YAML file per cohort in `cohort_files:`),
# validates them and the config, and gives the other rules their inputs. A cohort with
# `source: gdc` learns its files at run time from the `gdc_manifest` checkpoint; each file is then
# fetched by its own `gdc_file` checkpoint job (download.smk), so that a slide's jobs start as soon
# as it arrived, and a file that could not be fetched leaves only itself out.
# A `porpoise_table:` (a PORPOISE/MCAT *_all_clean.csv[.zip]) stands for the cohort's rna, cnv and
# mutations `omics_tables` and its `clinical_table`, which rule porpoise_<cohort> writes under tables/.
import inspect
import os
import re
import sys
from pathlib import Path

# jsonschema loads every optional format checker it finds: rfc3987-syntax (installed with the Jupyter
# packages some dependencies bring) compiles a grammar for ~3 s at import, per Snakemake process, for
# the "iri" format that no schema here uses. Without it, jsonschema skips that checker by design.
sys.modules.setdefault("rfc3987_syntax", None)

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.io import checkpoint_target
from snakemake.logging import logger
from snakemake.utils import validate

from preprocessing.gdc import download_plan, free_bytes, plan_summary, space_needed, token_source
from preprocessing.inventory import read_checked_inventory, read_inventory, rna_files_of, slides_of
from preprocessing.tabular import porpoise_modalities

# Defaults live in the schemas only: validating fills in every key left out (set_default), the
# optional sections gdc:, evaluate: and viewer: included (a `gdc:` left empty in YAML is null: dropped first).
if config.get("gdc", {}) is None:
    del config["gdc"]
validate(config, "../schemas/config.schema.yaml", set_default=True)
# absolute, because GDC cohorts validate their sample sheet later, from an input function
SCHEMAS = Path(workflow.current_basedir.get_path_or_uri(secret_free=True)).parent / "schemas"
# the order of a GDC cohort's `gdc:` settings, as before (they are a param of its gdc_file jobs)
GDC_KEYS = list(yaml.safe_load((SCHEMAS / "cohort.schema.yaml").read_text())["then"]["properties"]["gdc"]["properties"])

RESULTS = config["results"]
ENCODER = config["features"]["encoder"]
GDC = config["gdc"]  # all GDC cohorts: where files go, downloads at once, the token file
# the omics modalities that GDC files give, one rule each (omics.smk); rule train reads their matrices
OMICS_RULES = ("rna", "cnv", "mutations")


def _load_cohorts():
    """name -> cohort settings; a GDC cohort's manifest, clinical TSV and queried sample sheet are the
    `gdc_manifest` checkpoint's outputs, its `sample_sheet` (with each file's download status) the
    `download` checkpoint's; its files go to `data_dir` (default {gdc.data_root}/{cohort}, outside results/)."""
    found = {name: (dict(c), f"config cohorts.{name}") for name, c in (config.get("cohorts") or {}).items()}
    for path in config.get("cohort_files") or []:
        if not os.path.isfile(path):
            raise WorkflowError(f"{path}: cohort file not found (listed in config cohort_files)")
        c = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(c, dict):
            raise WorkflowError(f"{path}: a cohort file must be a YAML mapping")
        name = str(c.pop("name", Path(path).stem))
        if name in found:
            raise WorkflowError(f"{path}: cohort {name!r} is already defined in {found[name][1]}")
        found[name] = (c, path)
    if not found:
        raise WorkflowError("no cohort: give `cohorts:` blocks or `cohort_files:` in the config")
    cohorts = {}
    for name, (c, source) in found.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise WorkflowError(f"{source}: cohort name {name!r} must be letters, digits, '_', '.', '-'")
        try:
            validate(c, str(SCHEMAS / "cohort.schema.yaml"), set_default=True)  # fills in source, gdc, kinds...
        except WorkflowError as e:
            raise WorkflowError(f"{source}: invalid cohort {name!r}: {e}") from None
        if c["source"] == "gdc":
            meta = f"{RESULTS}/{name}/gdc"
            c["gdc"] = {k: c["gdc"][k] for k in GDC_KEYS}
            c["gdc"]["token_file"] = c["gdc"]["token_file"] or GDC["token_file"]
            c["given_manifest"] = c["manifest"]
            c.update(query_sheet=f"{meta}/gdc_sample_sheet.tsv", sample_sheet=f"{meta}/sample_sheet.tsv",
                     manifest=f"{meta}/gdc_manifest.txt", clinical=f"{meta}/clinical.tsv",
                     downloaded=f"{meta}/download.tsv", records=f"{meta}/records")
            c["data_dir"] = c.get("data_dir") or f"{GDC['data_root']}/{name}"
            if "controlled" in c["gdc"]["access"] and token_source(c["gdc"]["token_file"]) is None:
                raise WorkflowError(f"{source}: cohort {name!r} asks for controlled data (gdc.access) but no GDC "
                                    "token is given: set gdc.token_file, or the GDC_TOKEN_FILE environment variable")
        if c.get("porpoise_table"):
            _porpoise_tables(name, c, source)
        cohorts[name] = c
    return cohorts


def _porpoise_tables(name, c, source):
    """Point the cohort's omics_tables (one per modality the table's header has) and clinical_table
    at what rule porpoise_<cohort> writes from its `porpoise_table`."""
    path = c["porpoise_table"]
    if c.get("clinical_table"):
        raise WorkflowError(f"{source}: cohort {name!r} gives both porpoise_table and clinical_table; "
                            "the PORPOISE table holds the survival")
    try:
        modalities = porpoise_modalities(path)
    except (OSError, ValueError) as e:
        raise WorkflowError(f"{source}: cohort {name!r}: porpoise_table {e}") from None
    if not modalities:
        raise WorkflowError(f"{source}: cohort {name!r}: porpoise_table {path} has no *_rnaseq, *_cnv "
                            "or *_mut column")
    tables = dict(c.get("omics_tables") or {})
    clash = sorted(set(tables) & set(modalities))
    if clash:
        raise WorkflowError(f"{source}: cohort {name!r}: omics_tables {clash} are also in its porpoise_table")
    out = f"{RESULTS}/{name}/tables"
    c["porpoise_outputs"] = {m: f"{out}/{m}.parquet" for m in modalities}
    c["omics_tables"] = {**c["porpoise_outputs"], **tables}
    c["clinical_table"] = f"{out}/clinical.tsv"


COHORT_CONFIG = _load_cohorts()
config["cohorts"] = COHORT_CONFIG  # every cohort, file-defined and resolved, for rules that read the config
COHORTS = list(COHORT_CONFIG)
GDC_COHORTS = [c for c in COHORTS if COHORT_CONFIG[c]["source"] == "gdc"]


def _read_inventory(cohort):
    c = COHORT_CONFIG[cohort]
    return read_checked_inventory(c["sample_sheet"], c["manifest"], c["data_dir"], SCHEMAS / "sample_sheet.schema.yaml")


class _Inventories(dict):
    """cohort -> its files. Cohorts with a given sample sheet are read at once, as before; a GDC
    cohort on first access, which waits (Snakemake re-plans) until its `download` checkpoint ran.
    Cohorts without a sample sheet (tables only) have none: ``get`` gives None, ``[]`` a KeyError."""

    def get(self, cohort, default=None):
        return self[cohort] if cohort in GDC_COHORTS or cohort in self else default

    def __missing__(self, cohort):
        if cohort not in GDC_COHORTS:
            raise KeyError(cohort)
        checkpoints.download.get(cohort=cohort)  # needs gdc_manifest first: both join the DAG here
        checkpoints.gdc_manifest.get(cohort=cohort)
        files = self[cohort] = _read_inventory(cohort)
        return files


INVENTORY = _Inventories({c: _read_inventory(c) for c in COHORTS
                          if c not in GDC_COHORTS and COHORT_CONFIG[c].get("sample_sheet")})
SLIDES = {}


if GDC_COHORTS and "gdc_connections" not in workflow.global_resources:  # --resources gdc_connections=N wins
    # bounds the gdc_file jobs (resources: gdc_connections=1) running at once, locally or on SLURM
    getattr(workflow, "register_resource", workflow.global_resources.__setitem__)("gdc_connections",
                                                                                 int(GDC["connections"]))
GDC_FILES, GDC_SLIDES, GDC_STATES = {}, {}, {}


def gdc_files(cohort):
    """A GDC cohort's files as queried, by file id: all of them to be fetched. Waits for (joins the
    DAG with) its `gdc_manifest` checkpoint; prints the download plan the first time."""
    if cohort not in GDC_FILES:
        checkpoints.gdc_manifest.get(cohort=cohort)
        c = COHORT_CONFIG[cohort]
        files = read_inventory(c["query_sheet"], c["manifest"], c["data_dir"])
        plan = download_plan(files)
        logger.info(f"cohort {cohort}: " + plan_summary(plan, c["data_dir"], free_bytes(c["data_dir"]),
                                                         space_needed(plan, c["gdc"]["space_margin"])))
        GDC_FILES[cohort] = files.set_index("file_id", drop=False)
        GDC_SLIDES[cohort] = slides_of(files, usable_only=True).set_index("slide_id")
    return GDC_FILES[cohort]


def gdc_record(cohort, file_id):
    """What the `gdc_file` job of one file writes: its download record."""
    return f"{COHORT_CONFIG[cohort]['records']}/{file_id}.tsv"


def gdc_file_state(cohort, file_id):
    """ok / failed once the file's `gdc_file` checkpoint is done (in this run or an earlier one),
    None while it is still to run. Read from its record, once."""
    record = gdc_record(cohort, file_id)
    if record not in GDC_STATES:
        if record not in checkpoints.created_output:  # Snakemake's set of finished checkpoint outputs
            return None
        import pandas as pd

        status = pd.read_csv(record, sep="\t", dtype=str, keep_default_na=False)["status"].iloc[0]
        GDC_STATES[record] = "failed" if status == "failed" else "ok"
    return GDC_STATES[record]


def _gdc_per_slide(cohort, pattern):
    """``pattern`` for every slide of a GDC cohort fetched so far; the record (a checkpoint target,
    so the job is re-evaluated when it is written) of every slide still to fetch; nothing for a
    slide that could not be fetched."""
    gdc_files(cohort)
    slides = GDC_SLIDES[cohort]
    ready, pending = [], []
    for sid, fid in zip(slides.index, slides["file_id"]):
        state = gdc_file_state(cohort, fid)
        if state == "ok":
            ready.append(sid)
        elif state is None:
            pending.append(checkpoint_target(gdc_record(cohort, fid)))
    return expand(pattern, cohort=cohort, slide=ready, encoder=ENCODER) + pending


def inventory(cohort):
    """The cohort's files (empty for a cohort without a sample sheet)."""
    files = INVENTORY.get(cohort)
    return files if files is not None else _no_files()


def _no_files():
    import pandas as pd

    return pd.DataFrame(columns=["file_id", "file_name", "data_type", "case_id", "sample_id", "md5", "path"])


def slides(cohort):
    """The cohort's slides indexed by slide id (of a GDC cohort: those fetched, once all were tried)."""
    if cohort not in SLIDES:
        SLIDES[cohort] = slides_of(inventory(cohort), usable_only=True).set_index("slide_id")
    return SLIDES[cohort]


SLIDE_ROWS = {}  # cohort -> {slide id: its row as a dict}: a dict lookup per job, not a pandas one


def _slide(cohort, slide):
    """One slide's row; for a GDC cohort from its query, so that its jobs need not wait for the others."""
    if cohort not in SLIDE_ROWS:
        if cohort in GDC_COHORTS:
            gdc_files(cohort)
        table = GDC_SLIDES[cohort] if cohort in GDC_COHORTS else slides(cohort)
        SLIDE_ROWS[cohort] = table.to_dict("index")
    return SLIDE_ROWS[cohort][slide]


wildcard_constraints:
    cohort="|".join(re.escape(c) for c in COHORTS),
    fold=r"\d+",
    model=r"[a-z0-9][a-z0-9_-]*",  # rule train's: one architecture of healnet/zoo.py


def cohort_config(wildcards):
    return COHORT_CONFIG[wildcards.cohort]


def cohort_key(key, default=None):
    """Input / params function: the job's cohort's setting ``key`` ("gdc.page_size": nested), or
    ``default`` where it has none or null (e.g. [] for an optional input file). The defaults of the
    settings themselves are in workflow/schemas/cohort.schema.yaml."""
    def value(wildcards):
        found = COHORT_CONFIG[wildcards.cohort]
        for part in key.split("."):
            found = found.get(part)
            if found is None:
                return default
        return found
    return value


def settings(block, *keys, **named):
    """Params: settings of config block ``block`` ("evaluate", "features"; "cohort": the job's cohort's,
    functions of its wildcards as cohort_key gives), each under its own name (the last part of a dotted
    one: "gdc.access" -> access) or under the name given: ``params: **settings("evaluate", "bootstrap")``."""
    def value(key):
        if block == "cohort":
            return cohort_key(key)
        found = config[block]
        for part in key.split("."):
            found = found[part]
        return found
    return {**{key.rsplit(".", 1)[-1]: value(key) for key in keys}, **{name: value(key) for name, key in named.items()}}


def result(name, caption, patterns=None, **labels):
    """A report() output: {RESULTS}/{cohort}/``name`` (a folder of the files matching ``patterns`` when
    given), with its caption (../report/….rst), category (QC for qc/…, Attention for attention/…, else
    Results) and labels: the cohort's, then those given (none at all when none is given). A label with
    spaces: ``**{"case and slide": "{name}"}``."""
    path = f"{RESULTS}/{{cohort}}/{name}"
    category = {"qc": "QC", "attention": "Attention"}.get(name.split("/")[0], "Results")
    return report(directory(path) if patterns else path, caption=caption, category=category,
                  labels={"cohort": "{cohort}", **labels} if labels else None, patterns=patterns or [])


def inventory_table(wildcards):
    """Input function: the cohort's inventory table (rule inventory); none for a cohort of tables only."""
    if not COHORT_CONFIG[wildcards.cohort].get("sample_sheet"):
        return []
    return expand(rules.inventory.output.table, cohort=wildcards.cohort)[0]


def defined(rule_name):
    """Whether the workflow defines rule ``rule_name`` (Snakemake's public Workflow.is_rule)."""
    return workflow.is_rule(rule_name)


def per_job(func):
    """An input or params function of a per-slide rule, with its signature stored: Snakemake inspects it
    (inspect.signature, ~15 µs) three times per job, a few % of planning all of TCGA (benchmarks/dag.py);
    inspect.signature returns a stored ``__signature__`` at once."""
    func.__signature__ = inspect.signature(func)
    return func


@per_job
def slide_path(wildcards):
    """The slide's file; of a GDC cohort once its `gdc_file` job fetched it (an error if it could not)."""
    row = _slide(wildcards.cohort, wildcards.slide)
    if wildcards.cohort in GDC_COHORTS:
        state = gdc_file_state(wildcards.cohort, row["file_id"])
        if state is None:
            checkpoints.gdc_file.get(cohort=wildcards.cohort, file_id=row["file_id"])
        elif state == "failed":
            raise WorkflowError(f"slide {wildcards.slide} could not be downloaded: see "
                                f"{gdc_record(wildcards.cohort, row['file_id'])}")
    return row["path"]


@per_job
def slide_mpp_override(wildcards):
    """µm/px for a slide whose metadata lacks it: the sample sheet's ``mpp`` column, else the cohort's."""
    return mpp_fallback(wildcards.cohort, wildcards.slide)


def mpp_fallback(cohort, slide_id):
    """What slide_mpp_override gives, for one slide named outright (rule stain_target asks for all)."""
    slide = _slide(cohort, slide_id)
    if "mpp" in slide and str(slide["mpp"]).strip() not in ("", "nan", "None"):
        return float(slide["mpp"])
    return COHORT_CONFIG[cohort].get("mpp_fallback")


def external_coords(wildcards):
    """An existing CLAM or TRIDENT coordinate file for the slide (config tiling.coords_from)."""
    return coords_file(wildcards.slide)


def coords_file(slide_id):
    """The CLAM or TRIDENT coordinate file of one slide, named outright."""
    pattern = config["tiling"]["coords_pattern"]
    return os.path.join(config["tiling"]["coords_from"], pattern.format(slide=slide_id))


def rna_paths(wildcards):
    return rna_files_of(inventory(wildcards.cohort))["path"].tolist()


def cohort_slides(wildcards):
    return list(slides(wildcards.cohort).index)


def slide_paths(wildcards):
    """Input function: the files of the cohort's slides (of a GDC cohort: once its download checkpoint ran)."""
    return slides(wildcards.cohort)["path"].tolist()


PER_SLIDE = {}  # (cohort, pattern) -> its expansion: several cohort jobs take the same per-slide list


def per_slide(pattern):
    """Input function: ``pattern`` expanded over every slide of the job's cohort (of a GDC cohort: as
    the slides arrive, see `_gdc_per_slide`)."""
    def paths(wildcards):
        if wildcards.cohort in GDC_COHORTS:
            return _gdc_per_slide(wildcards.cohort, pattern)
        key = (wildcards.cohort, pattern)
        if key not in PER_SLIDE:
            PER_SLIDE[key] = expand(pattern, cohort=wildcards.cohort, slide=cohort_slides(wildcards), encoder=ENCODER)
        return list(PER_SLIDE[key])
    return paths


def all_folds():
    """Every fold index: splits.n_repeats repeats of splits.n_folds folds, k = repeat * n_folds + fold."""
    return range(config["splits"]["n_folds"] * config["splits"]["n_repeats"])


def fold_outputs(pattern):
    return lambda wildcards: expand(pattern, cohort=wildcards.cohort, model=config["train"]["models"],
                                    fold=all_folds())
