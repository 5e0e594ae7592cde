"""GDC client against a local stand-in server: queries, clinical TSV, manifest, resumable download."""
from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid

import numpy as np
import pandas as pd
import pytest

from preprocessing import gdc
from preprocessing.clinical import overall_survival, read_gdc_clinical
from preprocessing.inventory import read_inventory
from gdc_standin import RNA_FIELDS, SLIDE_FIELDS, GDCStandin, file_hit

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
    assert gdc.file_filters("TCGA-BRCA", "slides") == {"op": "and", "content": [
        {"op": "in", "content": {"field": "cases.project.project_id", "value": ["TCGA-BRCA"]}},
        {"op": "in", "content": {"field": "data_format", "value": ["SVS"]}},
        {"op": "in", "content": {"field": "experimental_strategy", "value": ["Diagnostic Slide"]}}]}
    assert gdc.file_filters("TCGA-UCEC", "rna")["content"][1] == {
        "op": "in", "content": {"field": "analysis.workflow_type", "value": ["STAR - Counts"]}}
    assert gdc.file_filters("X", "mutations")["content"][1:] == [
        {"op": "in", "content": {"field": "data_type", "value": ["Masked Somatic Mutation"]}},
        {"op": "in", "content": {"field": "data_format", "value": ["MAF"]}}]
    with pytest.raises(ValueError, match="unknown data kind 'proteins'"):
        gdc.file_filters("X", "proteins")


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
    assert set(gdc.FILE_FIELDS) <= set(queries[0][1]["fields"].split(","))
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
