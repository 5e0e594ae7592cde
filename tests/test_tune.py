"""healnet.tune: the in-fold Optuna search never reads the fold's test cases, is reproducible from
its seed, stays in its documented space, and train_fold records it (metrics "tuned")."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import healnet.train as train_module
from healnet import tune
from healnet.data import Cohort
from healnet.train import train_fold
from healnet.train_config import TrainConfig, config_from_dict

N, GENES = 60, 12


def omics_cohort(seed: int = 0) -> Cohort:
    """RNA-only cases whose risk scales the first 4 genes; 3/4 of the cases have an event."""
    rng = np.random.default_rng(seed)
    ids = [f"TCGA-TT-{i:04d}" for i in range(N)]
    risk = rng.standard_normal(N)
    t = 1000 * np.exp(-risk + 0.3 * rng.standard_normal(N))
    event = (rng.random(N) < 0.75).astype(int)
    time = np.maximum(1, np.round(np.where(event == 1, t, t * rng.uniform(0.5, 1, N))))
    genes = np.exp(rng.normal(3, 0.3, (N, GENES)))
    genes[:, :4] *= np.exp(risk)[:, None]
    rna = pd.DataFrame(genes, index=ids, columns=[f"G{j}" for j in range(GENES)])
    survival = pd.DataFrame({"time": time, "event": event}, index=pd.Index(ids, name="case_id"))
    return Cohort(survival=survival, omics={"rna": rna})


COHORT = omics_cohort()
IDS = COHORT.case_ids
SPLIT = {"train": IDS[:36], "val": IDS[36:48], "test": IDS[48:]}
CFG = TrainConfig(modalities=("rna",), batch_size=16, omic_top_k=8, prefetch=False, device="cpu", seed=0)
SPACE = dict(tune.SPACE)  # the documented space, before a test shortens the schedule


@pytest.fixture(autouse=True)
def _small(monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setitem(tune.SPACE, "epochs", ("categorical", (2, 3)))  # tiny schedules for the tests


def _in_space(name, value, space=SPACE) -> bool:
    kind, *spec = space[name]
    if kind == "categorical":
        return value in spec[0]
    return spec[0] <= value <= spec[1]


@pytest.mark.parametrize("early_stopping", ["none", "loss"])
def test_search_never_reads_the_test_cases(monkeypatch, early_stopping):
    calls, reads = [], []
    real_train_fold, real_prepare = train_module.train_fold, train_module.prepare_fold

    def spy_train_fold(cohort, split, cfg, out_dir=None, fold=0):
        calls.append((split, cfg))
        return real_train_fold(cohort, split, cfg, out_dir, fold)

    def spy_prepare(cohort, split, cfg):  # where the cases' data are read
        reads.append(split)
        return real_prepare(cohort, split, cfg)

    monkeypatch.setattr(train_module, "train_fold", spy_train_fold)
    monkeypatch.setattr(train_module, "prepare_fold", spy_prepare)
    cfg = replace(CFG, early_stopping=early_stopping, patience=1)
    result = tune.search(COHORT, SPLIT, cfg, trials=3, seed=0)
    test = set(SPLIT["test"])
    assert len(calls) == 3 and len(reads) == 3
    for split in [s for s, _ in calls] + reads:
        for part in ("train", "val", "test"):
            assert not test & set(split[part]), part
        assert set(split["test"]) == set(SPLIT["val"])  # scored on the validation cases
        assert not set(split["train"]) & set(SPLIT["val"])  # which never train
    for _, trial_cfg in calls:
        assert trial_cfg.tune_trials == 0 and trial_cfg.early_stopping == early_stopping
        if early_stopping == "loss":
            assert trial_cfg.patience == 1  # early stopping as the outer run does it
    if early_stopping == "none":  # the whole schedule, last epoch kept, as in the outer run
        assert all(r["epochs_run"] == r["epochs"] and r["best_epoch"] == r["epochs"] - 1 for r in result["trials"])
    assert result["n_val"] == len(SPLIT["val"]) and result["n_train"] == len(SPLIT["train"])
    assert max(r["c_index"] for r in result["trials"]) == result["best_c_index"]


def test_search_is_deterministic_for_a_seed():
    a = tune.search(COHORT, SPLIT, CFG, trials=3, seed=7)
    b = tune.search(COHORT, SPLIT, CFG, trials=3, seed=7)
    assert a["params"] == b["params"] and a["best_trial"] == b["best_trial"]
    assert a["trials"] == b["trials"]


def test_chosen_parameters_lie_in_the_documented_space(monkeypatch):
    """The real space (20-40 epochs) with train_fold stubbed: many trials, no training."""
    monkeypatch.setitem(tune.SPACE, "epochs", SPACE["epochs"])
    rng = np.random.default_rng(0)
    monkeypatch.setattr(train_module, "train_fold",
                        lambda *a, **k: {"c_index": float(rng.uniform(0.4, 0.8)), "best_epoch": 0, "epochs_run": 1})
    cfg = replace(CFG, model={"depth": 1})
    result = tune.search(COHORT, SPLIT, cfg, trials=15, seed=3)
    for row in result["trials"]:
        assert all(_in_space(k, row[k]) for k in SPACE)
    p = result["params"]
    assert set(p) == {"lr", "l1", "epochs", "model"}
    assert _in_space("lr", p["lr"]) and _in_space("l1", p["l1"]) and _in_space("epochs", p["epochs"])
    m = p["model"]
    assert m["depth"] == 1  # cfg.model is kept, the searched keys merged in
    assert _in_space("latent_dim", m["latent_dim"]) and _in_space("dropout", m["attn_dropout"])
    assert m["attn_dropout"] == m["ff_dropout"]
    best = result["trials"][result["best_trial"]]
    assert best["c_index"] == result["best_c_index"] == max(r["c_index"] for r in result["trials"])


def test_train_fold_records_the_search(tmp_path, monkeypatch):
    calls = []
    real = train_module.train_fold

    def spy(cohort, split, cfg, out_dir=None, fold=0):
        calls.append(cfg.tune_trials)
        return real(cohort, split, cfg, out_dir, fold)

    monkeypatch.setattr(train_module, "train_fold", spy)  # the search's calls (train_fold's own is direct)
    metrics = train_fold(COHORT, SPLIT, replace(CFG, tune_trials=2), tmp_path, fold=1)
    assert calls == [0, 0]  # two trials, no search inside them
    tuned = metrics["tuned"]
    assert len(tuned["trials"]) == 2 and tuned["params"]["epochs"] in (2, 3)
    assert metrics["epochs_run"] == tuned["params"]["epochs"]  # the outer run used the chosen schedule
    assert metrics["n_test"] == len(SPLIT["test"]) and not math.isnan(metrics["c_index"])
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["tuned"]["params"] == tuned["params"]
    config = torch.load(tmp_path / "model.pt", weights_only=False)["config"]
    assert config["tune_trials"] == 2 and config["lr"] == tuned["params"]["lr"]
    assert config["model"] == tuned["params"]["model"]


def test_search_needs_a_scorable_validation_split():
    censored = Cohort(survival=COHORT.survival.assign(event=0), omics=COHORT.omics)
    with pytest.raises(ValueError, match="comparable pair"):
        tune.search(censored, SPLIT, CFG, trials=1, seed=0)


def test_tune_trials_is_a_train_setting():
    import yaml
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    repo = Path(__file__).resolve().parents[1]
    schema = str(repo / "workflow" / "schemas" / "config.schema.yaml")
    config = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    config["train"]["tune_trials"] = 20
    validate(config, schema)
    assert config_from_dict(config["train"]).tune_trials == 20
    assert TrainConfig().tune_trials == 0  # off by default
    config["train"]["tune_trials"] = -1
    with pytest.raises(WorkflowError):
        validate(config, schema)
