"""GDC client against a local stand-in server: queries, clinical TSV, manifest, resumable download;
and, per point of the GDC layer: data types and access, CNV pipelines, tokens, the plan and free
space, files verified once and progress, faults kept to the file, unsafe records refused, stale
manifest ids, the slide policy, and the stand-in answering ``fields`` / ``expand`` / unknown fields
as the GDC does."""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from preprocessing import gdc
from preprocessing.gdc import api, transfer
from preprocessing.clinical import overall_survival, read_gdc_clinical
from preprocessing.inventory import cnv_workflow_table, not_usable, read_inventory, slides_of
from gdc_standin import (RNA_FIELDS, SLIDE_FIELDS, GDCStandin, cnv_hit, file_hit, star_counts_hits)

FAST = dict(retries=3, backoff=0.01, timeout=10)


def _uuid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def _files(n: int, seed: int = 0, size: int = 200_000, project: str = "TCGA-BRCA") -> list[dict]:
    """``n`` slide hits with random bytes of ``size`` (± a little) bytes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        case = f"TCGA-A{i % 10}-{1000 + i}"
        fid = _uuid(rng)
        out.append(file_hit(fid, f"{case}-01Z-00-DX1.{fid.upper()}.svs", rng.bytes(size + i * 1000), project,
                            case, "Slide Image", **SLIDE_FIELDS))
    return out


def _manifest(files: list[dict]) -> pd.DataFrame:
    return pd.DataFrame({"id": [f["file_id"] for f in files], "filename": [f["file_name"] for f in files],
                         "md5": [f["md5sum"] for f in files], "size": [f["file_size"] for f in files],
                         "state": "released"})


def _check_all(files: list[dict], out) -> None:
    """Every file under its final name with the stand-in's bytes (md5 by hashlib), no partial left."""
    for f in files:
        p = out / f["file_id"] / f["file_name"]
        assert hashlib.md5(p.read_bytes()).hexdigest() == hashlib.md5(f["content"]).hexdigest()
    assert not list(out.rglob("*.partial"))


def test_filters_are_gdc_filter_json():
    def field(flt, name):
        return next(f["content"]["value"] for f in flt["content"] if f["content"]["field"] == name)

    assert gdc.file_filters("TCGA-BRCA", "slides") == {"op": "and", "content": [
        {"op": "in", "content": {"field": "cases.project.project_id", "value": ["TCGA-BRCA"]}},
        {"op": "in", "content": {"field": "data_type", "value": ["Slide Image"]}},
        {"op": "in", "content": {"field": "data_format", "value": ["SVS"]}},
        {"op": "in", "content": {"field": "experimental_strategy", "value": ["Diagnostic Slide"]}},
        {"op": "in", "content": {"field": "access", "value": ["open"]}}]}
    for kind, data_type in (("rna", "Gene Expression Quantification"), ("cnv", "Gene Level Copy Number"),
                            ("mutations", "Masked Somatic Mutation")):  # every kind: its data type, open only
        flt = gdc.file_filters("TCGA-UCEC", kind)
        assert field(flt, "data_type") == [data_type] and field(flt, "access") == ["open"]
    assert field(gdc.file_filters("X", "rna"), "analysis.workflow_type") == ["STAR - Counts"]
    assert field(gdc.file_filters("X", "cnv"), "analysis.workflow_type") == ["ASCAT3", "ASCAT2", "ABSOLUTE LiftOver"]
    assert field(gdc.file_filters("X", "cnv", cnv_workflows=["AscatNGS"]), "analysis.workflow_type") == ["AscatNGS"]
    assert field(gdc.file_filters("X", "slides", access=["open", "controlled"]), "access") == ["open", "controlled"]
    with pytest.raises(ValueError, match="unknown data kind 'proteins'"):
        gdc.file_filters("X", "proteins")
    with pytest.raises(ValueError, match="unknown access"):
        gdc.file_filters("X", "rna", access=["secret"])


def test_query_reads_every_page_and_only_matching_files():
    rng = np.random.default_rng(101)
    wanted = _files(13, seed=1)  # BRCA diagnostic slides
    rna = [file_hit(_uuid(rng), f"r{i}.tsv", b"x" * 10, "TCGA-BRCA", f"TCGA-B{i}-0001",
                    "Gene Expression Quantification", **RNA_FIELDS) for i in range(4)]
    cnv = [file_hit(_uuid(rng), "c.tsv", b"c", "TCGA-BRCA", "TCGA-C1-0001", "Gene Level Copy Number",
                    data_format="TSV")]
    noise = (_files(3, seed=2, project="TCGA-LUAD")  # other project
             + [file_hit(_uuid(rng), "t.svs", b"t", "TCGA-BRCA", "TCGA-T1-0001", "Slide Image", data_format="SVS",
                         experimental_strategy="Tissue Slide")]  # frozen section, not diagnostic
             + [file_hit(_uuid(rng), "h.tsv", b"h", "TCGA-BRCA", "TCGA-H1-0001", "Gene Expression Quantification",
                         analysis={"workflow_type": "HTSeq - Counts"})])
    with GDCStandin(wanted + rna + cnv + noise, []) as server:
        table = gdc.query_files("TCGA-BRCA", ["slides", "rna"], server.base_url, page_size=5)
        queries = list(server.queries)
    assert sorted(table["file_id"]) == sorted(f["file_id"] for f in wanted + rna)
    assert set(table.loc[table["kind"] == "rna", "file_id"]) == {f["file_id"] for f in rna}
    # 13 slides in pages of 5 (0, 5, 10), 4 RNA files in one page
    assert [(e, q["from"]) for e, q in queries] == [("files", 0), ("files", 5), ("files", 10), ("files", 0)]
    assert all(q["size"] == 5 for _, q in queries)
    assert set(api.FILE_FIELDS) <= set(queries[0][1]["fields"].split(","))
    row = table.set_index("file_id").loc[wanted[4]["file_id"]]
    assert (row["md5sum"], row["file_size"]) == (wanted[4]["md5sum"], len(wanted[4]["content"]))
    assert (row["case_id"], row["sample_id"], row["sample_type"]) == ("TCGA-A4-1004", "TCGA-A4-1004-01A",
                                                                      "Primary Tumor")


def test_clinical_tsv_keeps_the_latest_follow_up(tmp_path):
    cases = [
        {"submitter_id": "TCGA-AA-0001", "case_id": "c1", "demographic": {"vital_status": "Alive"},
         "diagnoses": [{"days_to_last_follow_up": 100}], "follow_ups": [{"days_to_follow_up": 250},
                                                                        {"days_to_follow_up": 30}]},
        {"submitter_id": "TCGA-AA-0002", "case_id": "c2",
         "demographic": {"vital_status": "Dead", "days_to_death": 400},
         "diagnoses": [{"days_to_last_follow_up": None}], "follow_ups": []},
        {"submitter_id": "TCGA-AA-0003", "case_id": "c3", "demographic": {"vital_status": "Alive"},
         "diagnoses": [], "follow_ups": [{"days_to_follow_up": None}]},
        {"submitter_id": "TCGA-AA-0004", "case_id": "c4", "demographic": {},
         "diagnoses": [{"days_to_last_follow_up": 90, "days_to_death": 120}]},
    ]
    for c in cases:
        c["project"] = {"project_id": "TCGA-BRCA"}
    other = {**cases[0], "submitter_id": "TCGA-ZZ-0001", "project": {"project_id": "TCGA-LUAD"}}
    with GDCStandin([], cases + [other]) as server:
        table = gdc.query_clinical("TCGA-BRCA", server.base_url, page_size=3)
        (endpoint, q), = [x for x in server.queries if x[0] == "cases"][:1]
    assert set(q["expand"].split(",")) == {"demographic", "diagnoses", "follow_ups"}
    gdc.write_clinical(table, tmp_path / "clinical.tsv")
    text = (tmp_path / "clinical.tsv").read_text()
    assert "'--" in text and "nan" not in text
    surv = overall_survival(read_gdc_clinical(tmp_path / "clinical.tsv")).set_index("case_id")
    assert list(surv.index) == ["TCGA-AA-0001", "TCGA-AA-0002", "TCGA-AA-0003", "TCGA-AA-0004"]
    assert surv.loc["TCGA-AA-0001", ["time", "event"]].tolist() == [250, 0]
    assert surv.loc["TCGA-AA-0002", ["time", "event"]].tolist() == [400, 1]
    assert surv.loc["TCGA-AA-0003", "status"] == "excluded"  # no time at all
    assert surv.loc["TCGA-AA-0004", "status"] == "excluded"  # no vital status


def test_manifest_and_sample_sheet_are_read_by_the_inventory(tmp_path):
    files = _files(5, seed=3)
    with GDCStandin(files, []) as server:
        table = gdc.query_files("TCGA-BRCA", ["slides"], server.base_url, page_size=2)
    gdc.write_manifest(table, tmp_path / "m.txt")
    gdc.write_sample_sheet(table, tmp_path / "s.tsv")
    assert (tmp_path / "m.txt").read_text().splitlines()[0].split("\t") == ["id", "filename", "md5", "size", "state"]
    inv = read_inventory(tmp_path / "s.tsv", tmp_path / "m.txt", tmp_path / "data").set_index("file_id")
    for f in files:
        r = inv.loc[f["file_id"]]
        assert r["md5"] == hashlib.md5(f["content"]).hexdigest() and int(r["size"]) == len(f["content"])
        assert r["path"] == str(tmp_path / "data" / f["file_id"] / f["file_name"])
        assert r["data_type"] == "Slide Image" and r["case_id"] == f["cases"][0]["submitter_id"]


@pytest.mark.parametrize("fault", ["none", "drop", "http500x2", "http503", "corrupt_once", "drop_no_range"])
def test_download_survives_faults(tmp_path, fault):
    files = _files(3, seed=4)
    victim = files[1]["file_id"]
    with GDCStandin(files, [], chunk=16384) as server:
        if fault in ("drop", "drop_no_range"):
            server.drop_after[victim] = 70_000
        if fault == "drop_no_range":
            server.ignore_range.add(victim)
        if fault == "http500x2":
            server.errors[victim] = [500, 500]
        if fault == "http503":
            server.errors[victim] = [503]
        if fault == "corrupt_once":
            server.corrupt[victim] = 1
        report = gdc.download(_manifest(files), tmp_path, server.base_url, workers=2, **FAST).set_index("file_id")
        sent = dict(server.bytes_sent)
    _check_all(files, tmp_path)
    size = files[1]["file_size"]
    expected_sent = {"none": size, "drop": size, "http500x2": size, "http503": size, "corrupt_once": 2 * size,
                     "drop_no_range": 70_000 + size}[fault]
    assert sent[victim] == expected_sent
    assert report.loc[victim, "status"] == ("resumed" if fault == "drop" else "downloaded")
    assert report.loc[victim, "attempts"] == {"none": 1, "http500x2": 3}.get(fault, 2)


def test_resume_transfers_only_the_missing_bytes(tmp_path):
    files = _files(1, seed=5, size=300_000)
    f, n = files[0], 123_457
    partial = tmp_path / f["file_id"] / (f["file_name"] + ".partial")
    partial.parent.mkdir()
    partial.write_bytes(f["content"][:n])
    with GDCStandin(files, []) as server:
        report = gdc.download(_manifest(files), tmp_path, server.base_url, **FAST)
        assert server.ranges[f["file_id"]] == [f"bytes={n}-"]
        assert server.bytes_sent[f["file_id"]] == f["file_size"] - n
    assert report.loc[0, ["status", "resumed_from", "bytes_received"]].tolist() == ["resumed", n, f["file_size"] - n]
    _check_all(files, tmp_path)


def test_a_dropped_connection_resumes_where_it_stopped(tmp_path):
    files = _files(1, seed=6, size=250_000)
    fid, k = files[0]["file_id"], 100_000
    with GDCStandin(files, [], chunk=10_000) as server:
        server.drop_after[fid] = k
        report = gdc.download(_manifest(files), tmp_path, server.base_url, **FAST)
        assert server.ranges[fid] == [None, f"bytes={k}-"]
        assert server.bytes_sent[fid] == files[0]["file_size"]  # k, then exactly size - k
    assert report.loc[0, "resumed_from"] == k
    _check_all(files, tmp_path)


def test_wrong_bytes_every_time_is_a_clear_error(tmp_path):
    files = _files(2, seed=7)
    bad = files[0]
    with GDCStandin(files, []) as server:
        server.corrupt[bad["file_id"]] = 99
        with pytest.raises(gdc.GDCError) as err:
            gdc.download(_manifest(files), tmp_path, server.base_url, **FAST)
    msg = str(err.value)
    wrong = bytes(b ^ 0xFF for b in bad["content"][:16]) + bad["content"][16:]
    assert bad["file_id"] in msg and bad["md5sum"] in msg and hashlib.md5(wrong).hexdigest() in msg
    assert not (tmp_path / bad["file_id"] / bad["file_name"]).exists()
    assert not list(tmp_path.rglob("*.partial"))
    _check_all(files[1:], tmp_path)  # the other file still arrived


def test_persistent_server_errors_and_unknown_files_fail_clearly(tmp_path):
    files = _files(1, seed=8)
    fid = files[0]["file_id"]
    with GDCStandin(files, []) as server:
        server.errors[fid] = [503] * 10
        with pytest.raises(gdc.GDCError, match=f"{fid}.*failed after 4 tries: HTTP 503"):
            gdc.download(_manifest(files), tmp_path, server.base_url, **FAST)
        ghost = _manifest(_files(1, seed=9))
        with pytest.raises(gdc.GDCError, match="HTTP 404"):
            gdc.download(ghost, tmp_path, server.base_url, **FAST)
        assert server.ranges.get(ghost.loc[0, "id"]) is None  # 404 comes before the file table
    assert not (tmp_path / fid / files[0]["file_name"]).exists()


def test_no_final_name_is_ever_partial_and_parallelism_is_bounded(tmp_path):
    files = _files(8, seed=10, size=120_000)
    expected = {f["file_name"]: hashlib.md5(f["content"]).hexdigest() for f in files}
    seen, bad, stop = set(), [], threading.Event()

    def watch() -> None:
        while True:
            done = stop.is_set()  # one more full look after the downloads ended
            for p in tmp_path.glob("*/*"):
                if p.name in expected:
                    seen.add(p.name)
                    if hashlib.md5(p.read_bytes()).hexdigest() != expected[p.name]:
                        bad.append(p.name)
            if done:
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    with GDCStandin(files, [], chunk=8192, delay=0.003) as server:
        server.drop_after[files[2]["file_id"]] = 50_000
        watcher.start()
        t0 = time.perf_counter()
        report = gdc.download(_manifest(files), tmp_path, server.base_url, workers=4, **FAST)
        elapsed = time.perf_counter() - t0
        stop.set()
        watcher.join()
        assert 2 <= server.max_active <= 4
    assert not bad and seen == set(expected)
    assert (report["status"] != "failed").all() and len(report) == 8
    _check_all(files, tmp_path)
    serial = sum(-(-f["file_size"] // 8192) for f in files) * 0.003  # the stand-in's sleep alone, one at a time
    assert elapsed < serial


def test_present_files_are_skipped_and_verify_local_names_missing_ones(tmp_path):
    files = _files(3, seed=11)
    with GDCStandin(files, []) as server:
        gdc.download(_manifest(files), tmp_path, server.base_url, **FAST)
        before = sum(server.bytes_sent.values())
        again = gdc.download(_manifest(files), tmp_path, server.base_url, **FAST)
        assert sum(server.bytes_sent.values()) == before
    assert (again["status"] == "already present").all()
    assert (gdc.verify_local(_manifest(files), tmp_path, check_md5=True)["status"] == "ok").all()
    gone = tmp_path / files[0]["file_id"] / files[0]["file_name"]
    gone.unlink()
    short = tmp_path / files[1]["file_id"] / files[1]["file_name"]
    short.write_bytes(files[1]["content"][:10])
    with pytest.raises(FileNotFoundError) as err:
        gdc.verify_local(_manifest(files), tmp_path)
    assert f"{gone}: missing" in str(err.value) and f"{short}: wrong size (10 bytes" in str(err.value)
    table = gdc.verify_local(_manifest(files), tmp_path, strict=False)
    assert table["status"].tolist()[0] == "missing" and table["status"].tolist()[2] == "ok"


def test_bad_manifest_row_names_the_file(tmp_path):
    m = tmp_path / "m.txt"
    m.write_text("id\tfilename\tmd5\tsize\tstate\nabc\tx.svs\tnot-an-md5\t10\treleased\n")
    with pytest.raises(ValueError, match=f"{m}: 1 row.*abc"):
        gdc.download(m, tmp_path, "http://127.0.0.1:9")


def test_cli_query_then_download(tmp_path, capsys):
    files = _files(4, seed=12)
    cases = [{"submitter_id": f["cases"][0]["submitter_id"], "case_id": str(i), "project": {"project_id": "TCGA-BRCA"},
              "demographic": {"vital_status": "Alive"}, "diagnoses": [{"days_to_last_follow_up": 10 * i}]}
             for i, f in enumerate(files)]
    with GDCStandin(files, cases) as server:
        assert gdc.main(["query", "--project", "TCGA-BRCA", "--kinds", "slides", "--out", str(tmp_path / "meta"),
                         "--base-url", server.base_url, "--page-size", "3"]) == 0
        assert gdc.main(["download", "--manifest", str(tmp_path / "meta" / "gdc_manifest.txt"), "--out",
                         str(tmp_path / "data"), "--base-url", server.base_url, "--backoff", "0.01"]) == 0
    _check_all(files, tmp_path / "data")
    assert gdc.main(["verify", "--manifest", str(tmp_path / "meta" / "gdc_manifest.txt"), "--data-dir",
                     str(tmp_path / "data"), "--md5"]) == 0
    assert gdc.main(["verify", "--manifest", str(tmp_path / "meta" / "gdc_manifest.txt"), "--data-dir",
                     str(tmp_path / "elsewhere")]) == 1
    assert "4 of 4 manifest file(s) not usable" in capsys.readouterr().err
    clinical = pd.read_csv(tmp_path / "meta" / "clinical.tsv", sep="\t")
    assert sorted(clinical["days_to_last_follow_up"]) == [0, 10, 20, 30]
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]
    assert os.path.getsize(tmp_path / "meta" / "gdc_sample_sheet.tsv") > 0


# ---------------------------------------------------------------------------------------------
# 1. every kind by data type and open access; one copy-number pipeline per case


def _star_counts(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [h for i in range(n) for h in star_counts_hits(_uuid(rng), _uuid(rng), f"TCGA-R{i}-0001", "TCGA-BLCA",
                                                          rng.bytes(500))]


def test_rna_query_takes_expression_files_not_the_controlled_junctions(tmp_path):
    hits = _star_counts(3, seed=20)
    with GDCStandin(hits, []) as server:
        table = gdc.query_files("TCGA-BLCA", ["rna"], server.base_url)
        report = gdc.download(_manifest([h for h in hits if h["file_id"] in set(table["file_id"])]), tmp_path,
                              server.base_url, **FAST)
        # what the workflow filter alone matches: the same run's splice junctions too, which answer 403
        only_workflow = {"op": "and", "content": [api._in("analysis.workflow_type", "STAR - Counts")]}
        both = list(api._hits("files", only_workflow, ["file_id", "access"], server.base_url, 10))
        junction = next(h for h in hits if h["access"] == "controlled")
        with pytest.raises(gdc.FileRefused, match="HTTP 403"):
            gdc.download_file(junction["file_id"], junction["file_name"], junction["md5sum"], junction["file_size"],
                              tmp_path, server.base_url, access="controlled", **FAST)
    assert len(table) == 3 and set(table["data_type"]) == {"Gene Expression Quantification"}
    assert set(table["access"]) == {"open"} and (report["status"] == "downloaded").all()
    assert len(both) == 6 and {h["access"] for h in both} == {"open", "controlled"}


def _cnv_archive(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    have = {"TCGA-C1-0001": ["ASCAT2", "ABSOLUTE LiftOver", "ASCAT3", "AscatNGS"],
            "TCGA-C2-0002": ["ABSOLUTE LiftOver", "ASCAT2"], "TCGA-C3-0003": ["ABSOLUTE LiftOver"],
            "TCGA-C4-0004": ["AscatNGS"]}
    return [cnv_hit(_uuid(rng), case, "TCGA-BLCA", w, rng.bytes(100)) for case, ws in have.items() for w in ws]


@pytest.mark.parametrize("order, expected", [
    (None, {"TCGA-C1-0001": "ASCAT3", "TCGA-C2-0002": "ASCAT2", "TCGA-C3-0003": "ABSOLUTE LiftOver"}),
    (["AscatNGS", "ASCAT2"], {"TCGA-C1-0001": "AscatNGS", "TCGA-C2-0002": "ASCAT2", "TCGA-C4-0004": "AscatNGS"}),
])
def test_copy_number_of_one_pipeline_per_case_recorded_in_the_sheet(tmp_path, order, expected):
    hits = _cnv_archive(21)
    with GDCStandin(hits, [{"submitter_id": "TCGA-C1-0001", "case_id": "c1", "project": {"project_id": "TCGA-BLCA"}}]
                    ) as server:
        paths = gdc.fetch_cohort_metadata("TCGA-BLCA", ["cnv"], tmp_path, server.base_url, cnv_workflows=order)
    files = read_inventory(paths["sample_sheet"], paths["manifest"], tmp_path)
    assert dict(zip(files["case_id"], files["workflow_type"])) == expected
    assert len(files) == len(expected)  # other pipelines' files are not fetched
    used = cnv_workflow_table(files.assign(sample_id=files["case_id"] + "-01A"), order or gdc.DEFAULT_CNV_WORKFLOWS)
    assert dict(zip(used.loc[used["status"] == "used", "case_id"], used.loc[used["status"] == "used",
                                                                            "workflow_type"])) == expected


# ---------------------------------------------------------------------------------------------
# 2. tokens


def _controlled(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    fid = _uuid(rng)
    return file_hit(fid, f"{fid}.wxs.aliquot.maf.gz", rng.bytes(3000), "TCGA-BRCA", "TCGA-T1-0001",
                    "Aligned Reads", access="controlled")


def test_token_goes_in_the_x_auth_token_header_and_errors_say_what_to_do(tmp_path, monkeypatch, caplog):
    f, secret = _controlled(22), "tok-9d2f-secret-value"
    token_file, wrong_file = tmp_path / "token.txt", tmp_path / "old-token.txt"
    token_file.write_text(secret + "\n")
    wrong_file.write_text("tok-expired")
    monkeypatch.delenv("GDC_TOKEN_FILE", raising=False)
    monkeypatch.delenv("GDC_TOKEN", raising=False)
    args = (f["file_id"], f["file_name"], f["md5sum"], f["file_size"])
    caplog.set_level(logging.DEBUG)
    with GDCStandin([f], []) as server:
        server.token = secret
        with pytest.raises(gdc.FileRefused) as none:
            gdc.download_file(*args, tmp_path / "a", server.base_url, access="controlled", **FAST)
        with pytest.raises(gdc.FileRefused) as wrong:
            gdc.download_file(*args, tmp_path / "b", server.base_url, access="controlled", token_file=wrong_file,
                              **FAST)
        row = gdc.download_file(*args, tmp_path / "c", server.base_url, access="controlled", token_file=token_file,
                                **FAST)
        monkeypatch.setenv("GDC_TOKEN_FILE", str(token_file))  # or named by the environment
        env_row = gdc.download_file(*args, tmp_path / "d", server.base_url, access="controlled", **FAST)
        seen = list(server.tokens_seen)
    assert row["status"] == env_row["status"] == "downloaded" and seen == [None, "tok-expired", secret, secret]
    assert "HTTP 403" in str(none.value) and f["file_id"] in str(none.value) and "access: controlled" in str(none.value)
    assert "gdc.token_file" in str(none.value) and "GDC_TOKEN_FILE" in str(none.value)
    assert "HTTP 401" in str(wrong.value) and str(wrong_file) in str(wrong.value) and "expired" in str(wrong.value)
    assert secret not in caplog.text and "tok-expired" not in caplog.text + str(wrong.value)
    with pytest.raises(gdc.GDCError, match="missing.txt: cannot be read"):
        gdc.read_token(tmp_path / "missing.txt")
    monkeypatch.delenv("GDC_TOKEN_FILE")
    monkeypatch.setenv("GDC_TOKEN", " tok-from-env ")
    assert gdc.read_token() == "tok-from-env" and gdc.token_source() == "$GDC_TOKEN"


# ---------------------------------------------------------------------------------------------
# 3. the plan and free space; 4. verified once, progress


def _inventory_of(files: list[dict], out: Path) -> pd.DataFrame:
    table = pd.DataFrame({"file_id": [f["file_id"] for f in files], "file_name": [f["file_name"] for f in files],
                          "data_type": [f["data_type"] for f in files],
                          "case_id": [f["cases"][0]["submitter_id"] for f in files],
                          "size": [str(f["file_size"]) for f in files]})
    table["path"] = [str(out / i / n) for i, n in zip(table["file_id"], table["file_name"])]
    return table


def test_plan_counts_kinds_present_bytes_and_stops_when_space_is_short(tmp_path, monkeypatch):
    slides, rna = _files(4, seed=23, size=10_000), _star_counts(2, seed=24)[::2]
    files, data = slides + rna, tmp_path / "data"
    present, partial = slides[0], slides[1]
    (data / present["file_id"]).mkdir(parents=True)
    (data / present["file_id"] / present["file_name"]).write_bytes(present["content"])
    (data / partial["file_id"]).mkdir()
    (data / partial["file_id"] / (partial["file_name"] + ".partial")).write_bytes(partial["content"][:4000])
    plan = gdc.download_plan(_inventory_of(files, data)).set_index("kind")
    total = sum(f["file_size"] for f in files)
    assert plan.loc["slides", ["files", "cases", "present_files"]].tolist() == [4, 4, 1]
    assert plan.loc["rna", "files"] == 2 and plan.loc["total", "bytes"] == total
    assert plan.loc["total", "to_fetch_bytes"] == total - present["file_size"] - 4000

    monkeypatch.setenv("HEALNET_GDC_FREE_BYTES", "1000")
    assert gdc.free_bytes(data / "not" / "there") == 1000
    with pytest.raises(gdc.GDCError) as short:
        gdc.write_plan(_inventory_of(files, data), data, tmp_path / "plan.tsv", margin=0.1)
    needed = gdc.space_needed(plan.reset_index(), 0.1)
    assert f"needs {gdc.human(needed)}" in str(short.value) and "only 1.00 kB is free" in str(short.value)
    assert "max_cases" in str(short.value) and not (tmp_path / "plan.tsv").exists()
    monkeypatch.setenv("HEALNET_GDC_FREE_BYTES", str(needed))
    gdc.write_plan(_inventory_of(files, data), data, tmp_path / "plan.tsv", margin=0.1)
    written = pd.read_csv(tmp_path / "plan.tsv", sep="\t").set_index("kind")
    assert written.loc["total", "needed_bytes"] == needed and written.loc["total", "free_bytes"] == needed
    summary = gdc.plan_summary(plan.reset_index(), data, 10, needed)
    assert "slides" in summary and "NOT ENOUGH" in summary and f"free at {data}: 10 B" in summary


def test_pilot_takes_the_first_cases(tmp_path):
    files = _files(6, seed=25)
    with GDCStandin(files, []) as server:
        paths = gdc.fetch_cohort_metadata("TCGA-BRCA", ["slides"], tmp_path, server.base_url, max_cases=2)
    cases = sorted(pd.read_csv(paths["sample_sheet"], sep="\t")["Case ID"])
    assert cases == sorted(f["cases"][0]["submitter_id"] for f in files)[:2]


def test_present_files_are_hashed_once_and_progress_is_logged(tmp_path, monkeypatch, caplog):
    files = _files(2, seed=26, size=300_000)
    hashed = []
    real = transfer.file_md5  # looked up in preprocessing.gdc.transfer, where the download runs
    monkeypatch.setattr(transfer, "file_md5", lambda p: hashed.append(Path(p).name) or real(p))
    f = files[0]
    args = (f["file_id"], f["file_name"], f["md5sum"], f["file_size"], tmp_path)
    caplog.set_level(logging.INFO, logger="preprocessing.gdc")
    with GDCStandin(files, [], chunk=50_000, delay=0.01) as server:
        gdc.download_file(*args, server.base_url, progress_s=0.0, **FAST)
        assert hashed == [f["file_name"] + ".partial"]  # the download's own check
        assert gdc.download_file(*args, server.base_url, **FAST)["status"] == "already present"
        assert len(hashed) == 1  # size, mtime and md5 remembered: not read again
        final = tmp_path / f["file_id"] / f["file_name"]
        os.utime(final, ns=(final.stat().st_atime_ns, final.stat().st_mtime_ns + 10**9))  # touched: read once more
        gdc.download_file(*args, server.base_url, **FAST)
        gdc.download_file(*args, server.base_url, **FAST)
        assert len(hashed) == 2
    progress = [r.getMessage() for r in caplog.records if "ETA" in r.getMessage()]
    assert progress and all("/s, ETA" in m and " of 300." in m for m in progress)


# ---------------------------------------------------------------------------------------------
# 5. faults kept to the file; unsafe records refused; stale manifest ids


def test_refused_vanished_and_corrupt_files_are_recorded_failed_and_the_rest_goes_on(tmp_path):
    files = _files(5, seed=27)
    forbidden, gone, corrupt, flaky = (f["file_id"] for f in files[:4])
    with GDCStandin(files, []) as server:
        server.errors[forbidden] = [403] * 10
        server.gone.add(gone)
        server.corrupt[corrupt] = 99
        server.errors[flaky] = [503] * 10
        rows = {}
        for f in files:
            args = (f["file_id"], f["file_name"], f["md5sum"], f["file_size"], "slides", tmp_path / "data",
                    tmp_path / "records" / f"{f['file_id']}.tsv")
            if f["file_id"] == flaky:  # the network, not the file: the job fails and is retried
                with pytest.raises(gdc.GDCError, match="failed after 4 tries: HTTP 503"):
                    gdc.fetch_record(*args, base_url=server.base_url, **FAST)
            else:
                rows[f["file_id"]] = gdc.fetch_record(*args, base_url=server.base_url, access="open", **FAST)
    assert rows[forbidden]["status"] == rows[gone]["status"] == rows[corrupt]["status"] == "failed"
    assert rows[forbidden]["reason"].startswith("HTTP 403") and rows[gone]["reason"].startswith("HTTP 404")
    assert rows[corrupt]["reason"].startswith("md5") and rows[files[4]["file_id"]]["status"] == "downloaded"
    assert not (tmp_path / "records" / f"{flaky}.tsv").exists()
    records = gdc.read_records(sorted((tmp_path / "records").glob("*.tsv"))).set_index("file_id")
    assert records.loc[gone, "reason"] == rows[gone]["reason"] and len(records) == 4

    # the sheet the later rules read marks them; the inventory leaves them out and keeps them for QC
    sheet = pd.DataFrame({"File ID": [f["file_id"] for f in files[:3] + files[4:]],
                          "File Name": [f["file_name"] for f in files[:3] + files[4:]],
                          "Data Category": "Biospecimen", "Data Type": "Slide Image", "Project ID": "TCGA-BRCA",
                          "Case ID": [f["cases"][0]["submitter_id"] for f in files[:3] + files[4:]],
                          "Sample ID": [f["cases"][0]["submitter_id"] + "-01A" for f in files[:3] + files[4:]],
                          "Sample Type": "Primary Tumor"})
    sheet.to_csv(tmp_path / "query.tsv", sep="\t", index=False)
    table = gdc.collect_downloads(tmp_path / "query.tsv", sorted((tmp_path / "records").glob("*.tsv")),
                                  tmp_path / "download.tsv", tmp_path / "sheet.tsv")
    gdc.write_manifest(pd.DataFrame({"file_id": [f["file_id"] for f in files],
                                     "file_name": [f["file_name"] for f in files],
                                     "md5sum": [f["md5sum"] for f in files],
                                     "file_size": [f["file_size"] for f in files], "state": "released"}),
                       tmp_path / "m.txt")
    inv = read_inventory(tmp_path / "sheet.tsv", tmp_path / "m.txt", tmp_path / "data")
    assert list(inv["file_id"]) == [files[4]["file_id"]] and len(table) == 4
    assert set(not_usable(inv)["file_id"]) == {forbidden, gone, corrupt}
    assert set(slides_of(inv)["download_status"]) == {"ok", "failed"} and len(slides_of(inv, usable_only=True)) == 1


@pytest.mark.parametrize("bad_id, bad_name", [("not-a-uuid", None), (None, "../../escaped.svs"),
                                              (None, "sub/dir.svs"), ("../" + "0" * 8, None)])
def test_unsafe_ids_and_names_are_refused_and_nothing_lands_outside(tmp_path, bad_id, bad_name):
    good = _files(1, seed=28)[0]
    evil = {**good, "file_id": bad_id or good["file_id"], "id": bad_id or good["file_id"],
            "file_name": bad_name or good["file_name"]}
    out = tmp_path / "deep" / "data"
    out.mkdir(parents=True)
    with GDCStandin([evil], []) as server:
        server.content[evil["file_id"]] = good["content"]
        with pytest.raises(gdc.UnsafeRecord, match="refused"):  # an API record
            gdc.query_files("TCGA-BRCA", ["slides"], server.base_url)
        with pytest.raises(gdc.UnsafeRecord, match="refused"):  # a manifest row
            gdc.download(_manifest([evil]), out, server.base_url, **FAST)
        with pytest.raises(gdc.UnsafeRecord, match="refused"):  # and the download itself
            gdc.download_file(evil["file_id"], evil["file_name"], evil["md5sum"], evil["file_size"], out,
                              server.base_url, **FAST)
        assert not server.bytes_sent
    assert [p for p in tmp_path.rglob("*") if p != out and p != out.parent] == []


def test_stale_manifest_ids_are_counted_and_listed(tmp_path, caplog):
    files, gone = _files(4, seed=29), _files(2, seed=30)
    caplog.set_level(logging.WARNING, logger="preprocessing.gdc")
    with GDCStandin(files, []) as server:
        paths = gdc.fetch_cohort_metadata("TCGA-BRCA", ["slides"], tmp_path, server.base_url,
                                          only_ids=_manifest(files[:3] + gone))
    assert sorted(pd.read_csv(paths["manifest"], sep="\t")["id"]) == sorted(f["file_id"] for f in files[:3])
    stale = pd.read_csv(paths["stale_ids"], sep="\t")
    assert sorted(stale["id"]) == sorted(f["file_id"] for f in gone) and list(stale.columns) == ["id", "filename"]
    assert "2 of 5 file id(s) of the given manifest are not among" in caplog.text


# ---------------------------------------------------------------------------------------------
# 6. slide policy; clinical sex


def test_only_primary_tumour_slides_are_fetched_the_others_counted(tmp_path):
    rng = np.random.default_rng(31)
    hits = []
    for code in ("01", "06", "02", "11"):
        fid = _uuid(rng)
        case = f"TCGA-P{code}-0001"
        hits.append(file_hit(fid, f"{case}-{code}Z-00-DX1.{fid.upper()}.svs", rng.bytes(50), "TCGA-BRCA", case,
                             "Slide Image", samples=[f"{case}-{code}A"], **SLIDE_FIELDS))
    with GDCStandin(hits, []) as server:
        paths = gdc.fetch_cohort_metadata("TCGA-BRCA", ["slides"], tmp_path, server.base_url)
        every = gdc.fetch_cohort_metadata("TCGA-BRCA", ["slides"], tmp_path / "all", server.base_url, slide_codes=None)
    assert list(pd.read_csv(paths["manifest"], sep="\t")["id"]) == [hits[0]["file_id"]]
    assert len(pd.read_csv(every["manifest"], sep="\t")) == 4
    slides = slides_of(read_inventory(paths["sample_sheet"], paths["manifest"], tmp_path)).set_index("file_id")
    skipped = slides[slides["download_status"] == "skipped"]
    assert len(slides) == 4 and len(skipped) == 3
    assert skipped.loc[hits[1]["file_id"], "download_reason"] == \
        "slide policy: sample type 06 (Metastatic); only 01 is used"


def test_clinical_row_reads_sex_at_birth_or_gender():
    new = gdc.clinical_row({"submitter_id": "A", "demographic": {"sex_at_birth": "female", "gender": "male"}})
    old = gdc.clinical_row({"submitter_id": "B", "demographic": {"gender": "male"}})
    assert (new["sex_at_birth"], old["sex_at_birth"]) == ("female", "male")


# ---------------------------------------------------------------------------------------------
# 7. the stand-in answers fields, expand and unknown fields as the GDC does


def test_stand_in_honours_fields_and_expand_and_refuses_unknown_fields():
    import requests

    rng = np.random.default_rng(32)
    hit = star_counts_hits(_uuid(rng), _uuid(rng), "TCGA-S1-0001", "TCGA-BRCA", b"abc")[0]
    case = {"submitter_id": "TCGA-S1-0001", "case_id": "c1", "project": {"project_id": "TCGA-BRCA"},
            "demographic": {"vital_status": "Alive", "sex_at_birth": "female"},
            "diagnoses": [{"days_to_last_follow_up": 5}]}
    with GDCStandin([hit], [case]) as server:
        def post(endpoint, **body):
            return requests.post(f"{server.base_url}/{endpoint}", json=body, timeout=10)

        got = post("files", fields="file_name,cases.samples.tissue_type").json()["data"]["hits"][0]
        assert got == {"id": hit["file_id"], "file_name": hit["file_name"],
                       "cases": [{"samples": [{"tissue_type": "Tumor"}]}]}
        case_hit = post("cases", fields="submitter_id", expand="demographic").json()["data"]["hits"][0]
        assert case_hit["demographic"] == case["demographic"] and "diagnoses" not in case_hit
        plain = post("files").json()["data"]["hits"][0]
        assert "cases" not in plain and plain["md5sum"] == hit["md5sum"]  # no fields: the top-level values
        for body in ({"fields": "file_name,cases.favourite_colour"}, {"expand": "aliquots"},
                     {"filters": {"op": "in", "content": {"field": "files.colour", "value": ["x"]}}}):
            refused = post("files", **body)
            assert refused.status_code == 400 and "Unrecognized" in refused.json()["message"]
        with pytest.raises(gdc.GDCError, match=r"HTTP 400\): Unrecognized field 'files.colour'"):
            list(api._hits("files", {"op": "in", "content": {"field": "files.colour", "value": ["x"]}},
                           ["file_id"], server.base_url, 10))
        assert post("files", filters={"op": "in", "content": {"field": "files.access", "value": ["open"]}}
                    ).json()["data"]["pagination"]["total"] == 1  # the endpoint prefix is accepted
