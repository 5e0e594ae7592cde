"""Cohorts defined by one YAML file each (config `cohort_files`), and a GDC cohort against the stand-in."""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from gdc_standin import GDCStandin, hits_from_cohort

from generators.demo import generate_cohort
from preprocessing.clinical import overall_survival, read_gdc_clinical

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
COHORT = dict(n_cases=6, slide_size=(1024, 768), n_genes=80, workers=1)


def snakemake(work: Path, config: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = SNAKEMAKE + ["-d", str(work), "--configfile", str(config), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def local_cohort_file(path: Path, name: str, raw: Path) -> Path:
    path.write_text(yaml.safe_dump({"name": name, "data_dir": str(raw),
                                    "sample_sheet": str(raw / "gdc_sample_sheet.tsv"),
                                    "manifest": str(raw / "gdc_manifest.txt"), "clinical": str(raw / "clinical.tsv"),
                                    "oracle": str(raw / "oracle.json"), "mpp_fallback": None}))
    return path


def write_config(work: Path, name: str, cohort_files: list[Path]) -> Path:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["cohorts"], cfg["cohort_files"] = {}, [str(p) for p in cohort_files]
    cfg["splits"]["n_folds"] = 2
    # planning is what these tests check: two models train instead of the fourteen of the default run
    cfg["train"].update(epochs=2, omic_top_k=16, models=["healnet", "coxnet"])
    cfg["evaluate"]["faithfulness_models"] = ["healnet"]
    cfg["features"]["batch_size"] = 16
    path = work / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def planned(dry: subprocess.CompletedProcess) -> tuple[dict[str, int], set[str]]:
    """A dry run's job count per rule (its "Job stats" table) and the cohorts whose outputs it would write."""
    out = dry.stdout + dry.stderr
    stats = out.split("Job stats:", 1)[1].split("total", 1)[0] if "Job stats:" in out else ""
    counts = {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", stats, re.M)}
    reasons = "\n".join(re.findall(r"^Reason: (.*)$", out, re.M))
    return counts, set(re.findall(r"results/([^/\s]+)/", reasons))


def n_slides(raw: Path) -> int:
    sheet = pd.read_csv(raw / "gdc_sample_sheet.tsv", sep="\t")
    return int((sheet["Data Type"] == "Slide Image").sum())


@pytest.mark.slow
def test_adding_a_cohort_file_plans_only_that_cohort(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    generate_cohort(first, seed=5, **COHORT)
    generate_cohort(second, seed=7, **COHORT)
    demo_file = local_cohort_file(tmp_path / "demo.yaml", "demo", first)
    one = write_config(tmp_path, "one.yaml", [demo_file])
    run = snakemake(tmp_path, one)
    assert run.returncode == 0, run.stderr[-4000:]
    assert (tmp_path / "results" / "demo" / "metrics.tsv").is_file()

    # the second cohort is one more file (name from the file stem), nothing else changes
    second_file = local_cohort_file(tmp_path / "second.yaml", "second", second)
    cfg = yaml.safe_load(second_file.read_text())
    del cfg["name"]
    second_file.write_text(yaml.safe_dump(cfg))
    two = write_config(tmp_path, "two.yaml", [demo_file, second_file])
    dry = snakemake(tmp_path, two, "-n")
    assert dry.returncode == 0, dry.stderr[-4000:]
    counts, cohorts = planned(dry)
    assert cohorts == {"second"}
    assert "tiling" not in counts and counts["features"] == n_slides(second)
    assert counts["evaluate"] == counts["qc"] == counts["clinical"] == counts["splits"] == 1


def test_cohort_file_errors_name_the_file(tmp_path):
    raw = tmp_path / "raw"
    good = local_cohort_file(tmp_path / "a.yaml", "a", raw)
    missing = tmp_path / "nope.yaml"
    dry = snakemake(tmp_path, write_config(tmp_path, "c1.yaml", [good, missing]), "-n", timeout=300)
    assert dry.returncode != 0 and f"{missing}: cohort file not found" in dry.stdout + dry.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "b", "source": "gdc", "project": "TCGA-BRCA", "kinds": ["proteins"]}))
    dry = snakemake(tmp_path, write_config(tmp_path, "c2.yaml", [bad]), "-n", timeout=300)
    out = dry.stdout + dry.stderr
    assert dry.returncode != 0 and f"{bad}: invalid cohort 'b'" in out and "proteins" in out
    dup = local_cohort_file(tmp_path / "dup.yaml", "a", raw)
    dry = snakemake(tmp_path, write_config(tmp_path, "c3.yaml", [good, dup]), "-n", timeout=300)
    assert dry.returncode != 0 and f"{dup}: cohort 'a' is already defined in {good}" in dry.stdout + dry.stderr


def test_gdc_cohort_resolves_its_checkpoint_and_downloads(tmp_path):
    raw = tmp_path / "source"
    generate_cohort(raw, seed=7, **COHORT)
    files, cases = hits_from_cohort(raw, "TCGA-GDCT")
    slide = next(f for f in files if f["data_type"] == "Slide Image")
    with GDCStandin(files, cases) as server:
        server.drop_after[slide["file_id"]] = 10_000  # one connection lost mid-file: resumed
        cohort = tmp_path / "gdct.yaml"
        cohort.write_text(yaml.safe_dump({"name": "gdct", "source": "gdc", "project": "TCGA-GDCT",
                                          "kinds": ["slides", "rna"],
                                          "gdc": {"base_url": server.base_url, "page_size": 4, "workers": 2,
                                                  "retries": 2, "backoff_s": 0.01}}))
        config = write_config(tmp_path, "gdc.yaml", [cohort])
        run = snakemake(tmp_path, config, "results/gdct/gdc/download.tsv", timeout=300)  # fetch only
        assert run.returncode == 0, run.stderr[-4000:]
        n_queries, sent = len(server.queries), dict(server.bytes_sent)
        dry = snakemake(tmp_path, config, "-n", timeout=300)
        assert dry.returncode == 0, dry.stderr[-4000:]
        assert len(server.queries) == n_queries and dict(server.bytes_sent) == sent  # nothing fetched again

    gdc, data = tmp_path / "results" / "gdct" / "gdc", tmp_path / "data" / "gdc" / "gdct"  # files outside results/
    wanted = [f for f in files if f["data_type"] in ("Slide Image", "Gene Expression Quantification")]
    assert len(wanted) < len(files)  # the source also has copy-number / MAF files, not asked for
    for f in wanted:  # every file intact under its final name, md5 against the source bytes
        got = data / f["file_id"] / f["file_name"]
        assert hashlib.md5(got.read_bytes()).hexdigest() == hashlib.md5(f["content"]).hexdigest()
    assert not list(data.rglob("*.partial"))
    assert sent[slide["file_id"]] == slide["file_size"]  # 10 000 bytes, then exactly the rest
    report = pd.read_csv(gdc / "download.tsv", sep="\t").set_index("file_id")
    assert report.loc[slide["file_id"], ["status", "resumed_from"]].tolist() == ["resumed", 10_000]
    assert sorted(pd.read_csv(gdc / "gdc_manifest.txt", sep="\t")["id"]) == sorted(f["file_id"] for f in wanted)
    assert {p.parent.name for p in data.glob("*/*")} == {f["file_id"] for f in wanted}
    # survival from the clinical TSV the API answers gave = survival from the source export
    ours = overall_survival(read_gdc_clinical(gdc / "clinical.tsv")).set_index("case_id")
    truth = overall_survival(read_gdc_clinical(raw / "clinical.tsv")).set_index("case_id")
    pd.testing.assert_frame_equal(ours[["time", "event", "status"]], truth[["time", "event", "status"]])
    # the dry run now plans the discovered slides, and neither query nor download again
    counts, cohorts = planned(dry)
    assert cohorts == {"gdct"} and counts["features"] == n_slides(raw)
    assert "gdc_manifest" not in counts and "download" not in counts
