"""HEALNet over a named set of modalities (``healnet-wsi-rna-cnv-mutations`` beside ``healnet``) and
the report's ablation table."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from generators.demo import generate_cohort
from healnet.headline import ablation_table
from healnet.names import named_modalities, requested_modalities
from healnet.zoo import ABLATION_CHANGES, model_modalities
from tiny_dag import write_tiny_config

REPO = Path(__file__).resolve().parents[1]


def test_a_named_set_loads_its_own_modalities_in_its_order():
    configured = ("wsi", "rna")
    assert named_modalities("healnet-wsi-rna-cnv-mutations") == ("wsi", "rna", "cnv", "mutations")
    assert named_modalities("healnet") is None and named_modalities("healnet_tied") is None
    assert requested_modalities("healnet-wsi-rna-cnv-mutations", configured) == ("wsi", "rna", "cnv", "mutations")
    assert requested_modalities("healnet_tied", configured) == configured
    assert requested_modalities("snn", configured) == configured
    loaded = ("wsi", "rna", "cnv", "mutations")
    assert model_modalities("healnet-cnv-rna", loaded) == ("cnv", "rna")  # the name's order
    assert model_modalities("healnet-rna", loaded) == ("rna",)
    with pytest.raises(ValueError, match="mutations"):
        model_modalities("healnet-wsi-mutations", configured)
    with pytest.raises(ValueError, match="repeat"):
        model_modalities("healnet-rna-rna", loaded)


def test_the_workflow_feeds_a_named_set_its_omics_and_the_default_model_only_the_configured(tmp_path):
    raw = tmp_path / "raw"
    generate_cohort(raw, n_cases=6, seed=3, slide_size=(512, 384), n_genes=40)
    write_tiny_config(tmp_path, raw, n_folds=2, batch_size=8, epochs=1)
    config = tmp_path / "config.yaml"
    settings = yaml.safe_load(config.read_text())
    settings["train"]["models"] = ["healnet", "healnet-wsi-rna-cnv-mutations"]
    config.write_text(yaml.safe_dump(settings))
    out = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                          "--configfile", str(config), "--dag", "--cores", "1"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    labels = dict(re.findall(r'^\s*(\d+)\[label = "([^"]*)"', out.stdout, flags=re.M))
    edges = re.findall(r"^\s*(\d+) -> (\d+)", out.stdout, flags=re.M)
    feeds = {}  # train job label -> the rules whose outputs it reads
    for src, dst in edges:
        if labels[dst].startswith("train\\n"):
            feeds.setdefault(labels[dst], set()).add(labels[src].split("\\n")[0])
    four = {k: v for k, v in feeds.items() if k.endswith("model: healnet-wsi-rna-cnv-mutations")}
    plain = {k: v for k, v in feeds.items() if k.endswith("model: healnet")}
    assert len(four) == len(plain) == 2  # one job per fold
    for rules in four.values():
        assert {"rna", "cnv", "mutations", "feature_index", "clinical", "splits"} <= rules
    for rules in plain.values():
        assert "rna" in rules and not {"cnv", "mutations"} & rules
    # training reads the cohort's store index, never one input per slide (cheap planning at TCGA scale)
    assert not any("features" in rules for rules in feeds.values())
    # and so do the other cohort-level jobs: every slide's store, file, tissue and patches through the index
    reads = {}
    for src, dst in edges:
        rule = labels[dst].split("\\n")[0]
        if rule in ("qc", "attention_maps", "faithfulness", "viewer"):
            reads.setdefault(rule, set()).add(labels[src].split("\\n")[0])
    assert {"qc", "attention_maps", "faithfulness"} <= set(reads), reads
    assert all("feature_index" in r and "features" not in r for r in reads.values()), reads


def test_ablation_table_takes_healnet_and_its_ablations_from_the_summary():
    rng = np.random.default_rng(0)
    models = ["abmil", "healnet", "healnet_tied", "healnet_noself", "snn"]
    summary = pd.DataFrame({"model": models, "n_test_cases": 40, "harrell_mean": rng.uniform(0.5, 0.9, 5),
                            "harrell_std": 0.05, "harrell_ci_low": 0.4, "harrell_ci_high": 0.95,
                            "delta_vs_reference": rng.normal(0, 0.05, 5), "delta_ci_low": -0.1,
                            "delta_ci_high": 0.1, "delta_p": rng.uniform(0, 1, 5)})
    table = ablation_table(summary)
    assert list(table["model"]) == ["healnet", "healnet_noself", "healnet_tied"]  # reference first, then ABLATIONS order
    assert table.loc[1, "change"] == ABLATION_CHANGES["healnet_noself"]
    by_model = summary.set_index("model")
    for row in table.itertuples():
        assert row.harrell_mean == by_model.loc[row.model, "harrell_mean"]
        assert row.delta_p == by_model.loc[row.model, "delta_p"]
    none_trained = ablation_table(summary[~summary["model"].isin(list(ABLATION_CHANGES))])
    assert none_trained.empty and "change" in none_trained.columns
