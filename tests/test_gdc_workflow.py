"""A GDC cohort through Snakemake against the stand-in: the plan and one job per file after the
manifest step; a 403, a 404 and a wrong-md5 file kept to themselves; a data_dir without the space
stopping before any download; the token sent and never written."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from gdc_standin import SLIDE_FIELDS, GDCStandin, cnv_hit, file_hit, hits_from_cohort, star_counts_hits

from generators.demo import generate_cohort

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
PROJECT = "TCGA-GDCW"
TOKEN = "tok-3f1c9a7e-never-written-anywhere"
QC = ["results/gdcw/qc/slides.tsv", "results/gdcw/qc/cases.tsv"]


def snakemake(work: Path, *args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = SNAKEMAKE + ["-d", str(work), "--configfile", str(work / "config.yaml"), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def write_config(work: Path, base_url: str, **cohort) -> None:
    """A config with one GDC cohort `gdcw` served by the stand-in at ``base_url``."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "gdcw.yaml").write_text(yaml.safe_dump({
        "name": "gdcw", "source": "gdc", "project": PROJECT, "kinds": ["slides", "rna", "cnv"],
        "gdc": {"base_url": base_url, "page_size": 3, "retries": 1, "backoff_s": 0.01}, **cohort}))
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["cohorts"], cfg["cohort_files"] = {}, [str(work / "gdcw.yaml")]
    cfg["gdc"]["connections"] = 2
    cfg["splits"]["n_folds"] = 2
    cfg["features"]["batch_size"] = 16
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))


def job_counts(out: str) -> dict[str, int]:
    stats = out.split("Job stats:", 1)[1].split("total", 1)[0] if "Job stats:" in out else ""
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", stats, re.M)}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """Four cases as the GDC has them: case 0 has no slide; beyond the generated files, an ASCAT2
    copy-number file beside an ASCAT3 one, a controlled splice-junction file, a metastatic slide."""
    raw = tmp_path_factory.mktemp("gdc_source")
    generate_cohort(raw, seed=11, n_cases=4, slide_size=(1024, 768), n_genes=60, workers=1, p_no_slide=0.25,
                    p_no_rna=0, p_two_slides=0, n_blank_slides=0, p_no_cnv=0, p_no_maf=0)
    files, cases = hits_from_cohort(raw, PROJECT)
    files = [f for f in files if f["data_type"] != "Masked Somatic Mutation"]
    rng = np.random.default_rng(0)
    ids = [f"{i:08x}-0000-4000-8000-{rng.integers(1 << 40):012x}" for i in range(4)]
    slides = [f for f in files if f["data_type"] == "Slide Image"]
    case = slides[0]["cases"][0]["submitter_id"]
    ascat3 = next(f for f in files if f["data_type"] == "Gene Level Copy Number"
                  and f["cases"][0]["submitter_id"] == case)
    extra = [cnv_hit(ids[0], case, PROJECT, "ASCAT2", b"ascat2 " + ascat3["content"]),
             star_counts_hits(ids[1], ids[2], case, PROJECT, b"x")[1],
             file_hit(ids[3], f"{case}-06Z-00-DX1.{ids[3].upper()}.svs", b"metastasis", PROJECT, case, "Slide Image",
                      samples=[f"{case}-06A"], **SLIDE_FIELDS)]
    return {"files": files + extra, "cases": cases, "ascat2": extra[0], "junction": extra[1], "metastasis": extra[2],
            "case": case}


def test_plan_jobs_faults_and_token(archive, tmp_path):
    files, work, token_file = archive["files"], tmp_path / "work", tmp_path / "secret" / "gdc-token.txt"
    token_file.parent.mkdir()
    token_file.write_text(TOKEN + "\n")
    slides = sorted((f for f in files if f["data_type"] == "Slide Image" and "-01Z-" in f["file_name"]),
                    key=lambda f: f["file_name"])
    rna = sorted((f for f in files if f["data_type"] == "Gene Expression Quantification" and f["access"] == "open"),
                 key=lambda f: f["file_name"])
    forbidden, broken = slides[0], slides[1]
    ok_slide = slides[2]
    gone = next(f for f in rna if f["cases"][0]["submitter_id"] == ok_slide["cases"][0]["submitter_id"])
    with GDCStandin(files, archive["cases"]) as server:
        server.errors[forbidden["file_id"]] = [403] * 20
        server.corrupt[broken["file_id"]] = 99
        server.gone.add(gone["file_id"])
        write_config(work, server.base_url)
        env = {"GDC_TOKEN_FILE": str(token_file)}
        run = snakemake(work, "results/gdcw/gdc/gdc_manifest.txt", env=env)
        assert run.returncode == 0, run.stderr[-3000:]
        manifest = pd.read_csv(work / "results/gdcw/gdc/gdc_manifest.txt", sep="\t")

        # after the manifest step a dry run lists one download job per file and prints the plan
        dry = snakemake(work, "-n", *QC, env=env)
        out = dry.stdout + dry.stderr
        assert dry.returncode == 0, out[-3000:]
        assert job_counts(out)["gdc_file"] == len(manifest) == 11  # 3 primary slides, 4 RNA, 4 ASCAT3 CNV
        assert "GDC download plan for data/gdc/gdcw" in out and re.search(r"slides\s+3 files\s+3 cases", out)
        assert re.search(r"free at data/gdc/gdcw: [\d.]+ [kMGT]?B; needed with margin", out)

        run = snakemake(work, *QC, env=env)
        assert run.returncode == 0, run.stderr[-4000:]
        assert re.search(r"Provided resources: .*gdc_connections\D+2\b", run.stdout + run.stderr)  # config gdc.connections
        # a slide's job starts as it arrives: each features job (tissue, patches, features) is planned once
        # its own gdc_file checkpoint has run (the input function waits for that one file), and no
        # features job waits for the cohort-wide download checkpoint
        drawn = snakemake(work, "--dag", "dot", *QC, env=env)
        assert drawn.returncode == 0 and "digraph" in drawn.stdout, drawn.stderr[-2000:]
        rule_of = {n: label.split("\\n")[0] for n, label in re.findall(r'(\d+)\[label = "([^"]+)"', drawn.stdout)}
        waits_for = {}
        for a, b in re.findall(r"(\d+) -> (\d+)", drawn.stdout):
            waits_for.setdefault(rule_of[b], set()).add(rule_of[a])
        assert "features" in rule_of.values() and "download" not in waits_for.get("features", set())
        again = snakemake(work, "-n", *QC, env=env)
        assert "Nothing to be done" in again.stdout + again.stderr
        assert TOKEN in server.tokens_seen  # sent as X-Auth-Token on data requests

    # what was (not) asked for: CNV of the preferred pipeline only, no controlled or metastatic file
    assert set(manifest["id"]).isdisjoint({archive["ascat2"]["file_id"], archive["junction"]["file_id"],
                                           archive["metastasis"]["file_id"]})
    data = work / "data" / "gdc" / "gdcw"  # outside results/
    assert {p.parent.name for p in data.glob("*/*") if not p.name.startswith(".")} == \
        set(manifest["id"]) - {forbidden["file_id"], broken["file_id"], gone["file_id"]}
    assert not list(data.rglob("*.partial"))

    download = pd.read_csv(work / "results/gdcw/gdc/download.tsv", sep="\t").set_index("file_id")
    assert download.loc[forbidden["file_id"], "reason"].startswith("HTTP 403")
    assert download.loc[gone["file_id"], "reason"].startswith("HTTP 404")
    assert "does not match the manifest" in download.loc[broken["file_id"], "reason"]
    assert (download.drop([forbidden["file_id"], broken["file_id"], gone["file_id"]])["status"] == "downloaded").all()

    slides_qc = pd.read_csv(work / QC[0], sep="\t").set_index("slide_id")
    reason = slides_qc["reason"].fillna("")
    assert slides_qc.loc[forbidden["file_name"][:-4], "status"] == "failed"
    assert reason[forbidden["file_name"][:-4]].startswith("download failed: HTTP 403")
    assert reason[broken["file_name"][:-4]].startswith("download failed: md5")
    assert slides_qc.loc[archive["metastasis"]["file_name"][:-4], "status"] == "skipped"
    assert reason[archive["metastasis"]["file_name"][:-4]].startswith("slide policy: sample type 06")
    assert slides_qc.loc[ok_slide["file_name"][:-4], "status"] == "ok"

    cases = pd.read_csv(work / QC[1], sep="\t").set_index("case_id")
    failed_notes = cases["download_failed"].fillna("")
    for f, code in ((forbidden, "HTTP 403"), (broken, "md5"), (gone, "HTTP 404")):
        assert f"{f['file_name']}: {code}" in failed_notes[f["cases"][0]["submitter_id"]]
    assert (cases["status"] == "used").all()  # every case still has a modality

    workflows = pd.read_csv(work / "results/gdcw/omics/cnv_workflows.tsv", sep="\t")
    assert set(workflows.loc[workflows["status"] == "used", "workflow_type"]) == {"ASCAT3"}
    sheet = pd.read_csv(work / "results/gdcw/gdc/sample_sheet.tsv", sep="\t", keep_default_na=False)
    assert set(sheet.loc[sheet["Data Type"] == "Gene Level Copy Number", "Workflow Type"]) == {"ASCAT3"}

    # the token is never written: not in results, logs, data, Snakemake's metadata
    leaked = [p for p in work.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert not leaked


def test_too_little_space_stops_before_downloading(archive, tmp_path):
    with GDCStandin(archive["files"], archive["cases"]) as server:
        write_config(tmp_path, server.base_url, max_cases=2)
        run = snakemake(tmp_path, "--show-failed-logs", "results/gdcw/gdc/download.tsv",
                        env={"HEALNET_GDC_FREE_BYTES": "5000"})
        sent = dict(server.bytes_sent)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert re.search(r"not enough space at data/gdc/gdcw: the download needs [\d.]+ [kM]B .* but only 5.00 kB is free",
                     out), out[-3000:]
    assert not sent and not (tmp_path / "data").exists()  # nothing was fetched
    plan = [line for line in out.splitlines() if "files" in line and "cases" in line]
    assert plan and "NOT ENOUGH" in out


def test_controlled_data_without_a_token_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.delenv("GDC_TOKEN_FILE", raising=False)
    monkeypatch.delenv("GDC_TOKEN", raising=False)
    write_config(tmp_path, "http://127.0.0.1:9", gdc={"access": ["open", "controlled"]})
    dry = snakemake(tmp_path, "-n")
    out = dry.stdout + dry.stderr
    assert dry.returncode != 0 and "asks for controlled data (gdc.access) but no GDC token is given" in out
