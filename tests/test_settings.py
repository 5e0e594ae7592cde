"""Config defaults in one place (the schemas' `default:`s, preprocessing.settings.schema_defaults) and
job resources in one place (the profiles)."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from preprocessing.settings import CONFIG_SCHEMA, schema_defaults

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "workflow" / "schemas"
RULES = REPO / "workflow" / "rules"
PROFILES = REPO / "workflow" / "profiles"
# what the smallest valid config must give (the schema's `required:`)
MINIMAL = {"results": "results", "seed": 0, "tissue": {}, "tiling": {"target_mpp": 0.5, "patch_size": 256},
           "features": {"encoder": "demo-cnn"}, "splits": {}, "train": {}}
# config.yaml keys that select data rather than set a default: its values are an example
SELECTIONS = {("cohort_files",), ("cohorts",)}


def leaves(d: dict, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict) and v and prefix + (k,) != ("train", "model"):
            yield from leaves(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def get(d: dict, path):
    for k in path:
        d = d[k]
    return d


def test_schema_defaults_are_what_validation_fills_in():
    defaults = schema_defaults()
    schema = yaml.safe_load(CONFIG_SCHEMA.read_text())
    assert defaults["train"]["epochs"] == schema["properties"]["train"]["properties"]["epochs"]["default"] == 30
    config = copy.deepcopy(MINIMAL)
    validate(config, str(CONFIG_SCHEMA), set_default=True)
    assert config["train"]["epochs"] == defaults["train"]["epochs"]
    assert config == defaults  # every default, nested ones (gdc, evaluate, viewer) included, and nothing else
    assert defaults["gdc"] == {"data_root": "data/gdc", "connections": 4, "token_file": None}
    assert "device" not in defaults["train"]  # no default in the schema: TrainConfig's applies


def test_schema_defaults_is_a_fresh_copy():
    first = schema_defaults()
    first["train"]["models"].append("x")
    first["evaluate"]["bootstrap"] = 1
    assert "x" not in schema_defaults()["train"]["models"] and schema_defaults()["evaluate"]["bootstrap"] == 1000
    assert schema_defaults(CONFIG_SCHEMA) == schema_defaults()


def test_config_yaml_sets_the_schema_defaults():
    """config/config.yaml, the config every run starts from, gives each key it sets its schema default
    (so that leaving a key out of it, or of a user's config, behaves as today); its cohort selection aside."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    defaults = schema_defaults()
    differ = {p: (v, get(defaults, p)) for p, v in leaves(config) if p not in SELECTIONS and v != get(defaults, p)}
    assert not differ, differ


def test_python_constants_match_the_cohort_schema():
    from preprocessing.gdc import DEFAULT_CNV_WORKFLOWS, DEFAULT_SLIDE_CODES

    cohort = yaml.safe_load((SCHEMAS / "cohort.schema.yaml").read_text())
    gdc, local = cohort["then"]["properties"], cohort["else"]["properties"]
    assert gdc["cnv_workflows"]["default"] == local["cnv_workflows"]["default"] == list(DEFAULT_CNV_WORKFLOWS)
    assert gdc["slide_sample_codes"]["default"] == list(DEFAULT_SLIDE_CODES)
    c = {"source": "gdc", "project": "TCGA-BRCA", "gdc": {"page_size": 10}}
    validate(c, str(SCHEMAS / "cohort.schema.yaml"), set_default=True)
    assert c["gdc"]["page_size"] == 10 and c["gdc"]["base_url"] == "https://api.gdc.cancer.gov"
    assert c["kinds"] == ["slides", "rna"] and c["endpoint"] == "OS"
    local_cohort = {"clinical_table": "c.tsv"}
    validate(local_cohort, str(SCHEMAS / "cohort.schema.yaml"), set_default=True)
    assert local_cohort["source"] == "local" and "gdc" not in local_cohort


def rule_names() -> set[str]:
    names = set()
    for smk in RULES.glob("*.smk"):
        names |= set(re.findall(r"^\s*(?:rule|checkpoint)\s+(\w+)\s*:", smk.read_text(), re.M))
    return names


def profile(name: str) -> dict:
    from snakemake.profiles import ProfileConfigFileParser

    with open(PROFILES / name / "config.yaml") as f:
        entries = ProfileConfigFileParser().parse(f)
    out = {}
    for e in entries.get("set-resources", []):
        key, value = e.split("=", 1)
        rule, res = key.split(":")
        out.setdefault(rule, {})[res] = value
    out["*"] = dict(e.split("=", 1) for e in entries.get("default-resources", []))
    return out


@pytest.mark.parametrize("name", ["default", "slurm"])
def test_profiles_size_the_jobs(name):
    """Memory and run time are set in the profiles, grow with each retry, and name only real rules."""
    res = profile(name)
    assert set(res) - {"*"} <= rule_names(), set(res) - {"*"} - rule_names()
    assert "mem_mb" in res["*"] and "runtime" in res["*"]
    train = res["train"]  # train asks for more memory (and time) on retry
    assert eval(train["mem_mb"], {"attempt": 2}) == 2 * eval(train["mem_mb"], {"attempt": 1}) > 0
    assert eval(train["runtime"], {"attempt": 2}) > eval(train["runtime"], {"attempt": 1})


def test_rules_name_no_memory_or_run_time():
    """No rule names mem_mb / runtime, not even those generated per cohort (they take the profiles'
    default-resources); gdc_file keeps its gdc_connections, the bound on parallel downloads."""
    sizes = {smk.name: len(re.findall(r"^\s*(?:mem_mb|runtime)\s*=", smk.read_text(), re.M))
             for smk in RULES.glob("*.smk")}
    assert "omics.smk" in sizes and not any(sizes.values()), sizes
    assert re.search(r"^\s*gdc_connections=1", (RULES / "download.smk").read_text(), re.M)


def test_python_defaults_are_the_schema_defaults():
    """TrainConfig (the pipeline's train rule and `healnet cv` alike) and the GDC client take their
    defaults from the schema, or agree with it."""
    import dataclasses
    import inspect

    from healnet.train_config import HEALNET_DEFAULTS, TrainConfig
    from preprocessing import gdc

    train = schema_defaults()["train"]
    config = TrainConfig()
    for field in dataclasses.fields(TrainConfig):
        if field.name in train and field.name != "model":  # model: overrides of HEALNET_DEFAULTS, below
            value = getattr(config, field.name)
            assert (list(value) if isinstance(value, tuple) else value) == train[field.name], field.name
    assert HEALNET_DEFAULTS == train["model"]
    from healnet.model import HEALNet  # the model's own defaults are the same size, so a bare HEALNet(...) is it

    params = inspect.signature(HEALNet).parameters
    assert {k: params[k].default for k in train["model"]} == train["model"]
    cohort = yaml.safe_load((SCHEMAS / "cohort.schema.yaml").read_text())
    client = cohort["then"]["properties"]["gdc"]["properties"]
    for function in (gdc.download, gdc.download_file):
        params = inspect.signature(function).parameters
        assert params["backoff"].default == client["backoff_s"]["default"]
        assert params["timeout"].default == client["timeout_s"]["default"]
        assert params["retries"].default == client["retries"]["default"]
