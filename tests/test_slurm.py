"""The demo DAG through workflow/profiles/slurm on a real single-node SLURM cluster (tests/slurm_cluster.py).

The cluster is installed (Debian packages) when missing and started in a temporary folder; the test
skips, with the reason, where that is impossible, except when HEALNET_REQUIRE_SLURM=1 (.ci/run sets
it), where it fails. Only what this machine cannot give is overridden on the command line: memory and
CPUs (the profile asks for TCGA-sized jobs on GPU nodes) and the first status check (5 s, not 40 s).
Partitions (cpu, gpu), the GPU request and retries come from the profile;
the cluster has both partitions and two fake GPUs (GRES) on its node.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from generators.demo import generate_cohort
from tiny_dag import write_tiny_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slurm_cluster import ClusterUnavailable, SlurmCluster  # noqa: E402

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "workflow" / "profiles" / "slurm"
N_FOLDS = 3
FAKE_GPU_RULES = {"features", "train"}


@pytest.fixture(scope="module")
def cluster():
    c = SlurmCluster()
    try:
        c.start()
    except ClusterUnavailable as err:
        if os.environ.get("HEALNET_REQUIRE_SLURM") == "1":
            pytest.fail(f"SLURM cluster required (HEALNET_REQUIRE_SLURM=1) but unavailable: {err}")
        pytest.skip(f"no SLURM cluster: {err}")
    try:
        yield c
    finally:
        c.stop()  # every daemon by its PID, jobs cancelled first, even when the test failed
        assert not c.running()


def profile_overrides(mem_mb: int = 1000) -> list[str]:
    """The profile's own per-rule settings with memory and CPUs cut to this node (2 CPUs, a few GB).

    Given on the command line, --set-resources / --default-resources / --set-threads replace the
    profile's keys as a whole, so everything else they hold (partitions, GPUs) is carried over."""
    from snakemake.profiles import ProfileConfigFileParser

    with open(PROFILE / "config.yaml") as f:
        prof = ProfileConfigFileParser().parse(f)

    def cut(entry: str) -> str:
        key, value = entry.split("=", 1)
        name = key.rsplit(":", 1)[-1]
        if name == "mem_mb":
            return f"{key}={mem_mb}"
        if name in ("cpus_per_task", "num_workers"):
            return f"{key}=1"
        return entry

    return (["--default-resources", *map(cut, prof["default-resources"])]
            + ["--set-resources", *map(cut, prof["set-resources"])]
            + ["--set-threads", *[f"{e.split('=')[0]}=1" for e in prof["set-threads"]]])


def tiny_workdir(work: Path, n_cases: int, seed: int) -> dict:
    cohort = generate_cohort(work / "raw", n_cases=n_cases, seed=seed, slide_size=(1024, 768), n_genes=80,
                             workers=1)
    write_tiny_config(work, work / "raw", n_folds=N_FOLDS, batch_size=16, epochs=2, omic_top_k=16, patience=2)
    return cohort


def test_demo_dag_runs_through_the_slurm_profile(cluster, tmp_path, monkeypatch):
    work = tmp_path
    monkeypatch.setenv("HEALNET_SLURM_ACCOUNT", "healnet")  # the profile passes it as sbatch -A
    cohort = tiny_workdir(work, n_cases=8, seed=11)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work),
           "--configfile", str(work / "config.yaml"),
           "--workflow-profile", str(PROFILE),
           "--slurm-init-seconds-before-status-checks", "5",
           "--latency-wait", "5", "--jobs", "4", *profile_overrides()]
    t0 = time.monotonic()
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=work,
                         env={**cluster.env, "HEALNET_SLURM_ACCOUNT": "healnet"})
    elapsed = time.monotonic() - t0
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-6000:] + "\n" + cluster.log_tail("slurmctld", 1500)

    # the pipeline's outputs
    res = work / "results" / "tiny"
    metrics = pd.read_csv(res / "metrics.tsv", sep="\t")
    assert list(metrics["fold"]) == list(range(N_FOLDS))
    slides = pd.read_csv(res / "qc" / "slides.tsv", sep="\t")
    assert len(slides) == cohort["n_slides"]

    # every job Snakemake submitted is in SLURM's accounting, COMPLETED, and nothing else is
    ext_ids = set(re.findall(r"has been submitted with SLURM jobid (\d+)", log))
    acct = {row["JobID"]: row for row in cluster.sacct()}
    print(f"\n{len(ext_ids)} SLURM jobs in {elapsed:.0f} s; sacct:")
    for row in acct.values():
        print("  " + "|".join(row.values()))
    assert ext_ids and ext_ids == set(acct), (sorted(ext_ids), sorted(acct))
    assert all(row["State"] == "COMPLETED" and row["ExitCode"] == "0:0" for row in acct.values()), acct

    # one SLURM job per job of Snakemake's job stats (a slide's tissue, patches and features are one);
    # `all` runs on the submit host
    stats = re.search(r"Job stats:\n(.*?)\n\s*total\s+(\d+)", log, re.S)
    counts = {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", stats.group(1), re.M)}
    assert counts["features"] == cohort["n_slides"] and not {"tissue", "tiling"} & set(counts)
    expected = {r: n for r, n in counts.items() if r != "all"}
    by_rule: dict[str, list[dict]] = {}
    for jid, row in acct.items():
        rule = row["Comment"].removeprefix("rule_").split("_wildcards")[0]  # the plugin's --comment
        by_rule.setdefault(rule, []).append(row)
    assert {r: len(v) for r, v in by_rule.items()} == expected, acct
    assert all(row["Account"] == "healnet" for row in acct.values())
    # the GPU rules went to the profile's gpu partition with one GPU; the others to cpu without
    for rule, rows in by_rule.items():
        for row in rows:
            if rule in FAKE_GPU_RULES:
                assert row["Partition"] == "gpu" and "gres/gpu=1" in row["AllocTRES"], row
            else:
                assert row["Partition"] == "cpu" and "gres/gpu" not in row["AllocTRES"], row
