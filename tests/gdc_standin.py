"""A local stand-in for the GDC API (``files``, ``cases``, ``data/{id}``) with fault injection.

Runs an ``http.server.ThreadingHTTPServer`` on 127.0.0.1 at a random port in a thread. Search
endpoints evaluate the request's filter JSON (``and``/``or``/``in``/``=``) against their hits and
page with ``from``/``size``; ``data/{id}`` streams the file's bytes and honours ``Range: bytes=N-``.
Faults, per file id: drop the connection after N bytes (once), answer HTTP errors (n times),
send wrong bytes (n times), ignore the Range header. ``bytes_sent`` counts body bytes per file.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pandas as pd


def _values(obj, path: list[str]) -> list:
    """Every value at a dotted path, descending through lists."""
    if isinstance(obj, list):
        return [v for item in obj for v in _values(item, path)]
    if not path:
        return [obj]
    if not isinstance(obj, dict) or path[0] not in obj:
        return []
    return _values(obj[path[0]], path[1:])


def matches(hit: dict, flt: dict | None) -> bool:
    """Whether a hit passes a GDC filter (the subset of ops the client uses)."""
    if not flt:
        return True
    op, content = flt["op"], flt["content"]
    if op == "and":
        return all(matches(hit, f) for f in content)
    if op == "or":
        return any(matches(hit, f) for f in content)
    if op in ("in", "="):
        wanted = content["value"] if isinstance(content["value"], list) else [content["value"]]
        return bool(set(map(str, _values(hit, content["field"].split(".")))) & set(map(str, wanted)))
    raise ValueError(f"stand-in: unsupported filter op {op!r}")


class GDCStandin:
    """``with GDCStandin(files, cases) as gdc: gdc.base_url`` — ``files`` are GDC file hits with
    an extra ``content`` (bytes) key; ``cases`` are case hits."""

    def __init__(self, files: list[dict], cases: list[dict], chunk: int = 65536, delay: float = 0.0):
        self.content = {f["file_id"]: f["content"] for f in files}
        self.files = [{k: v for k, v in f.items() if k != "content"} for f in files]
        self.cases = cases
        self.chunk, self.delay = chunk, delay
        self.drop_after: dict[str, int] = {}  # file id -> bytes sent before the connection drops (once)
        self.errors: dict[str, list[int]] = {}  # file id -> status codes answered first, one per request
        self.corrupt: dict[str, int] = {}  # file id -> how many times wrong bytes are sent
        self.ignore_range: set[str] = set()
        self.bytes_sent: Counter = Counter()
        self.ranges: dict[str, list[str | None]] = {}
        self.queries: list[tuple[str, dict]] = []
        self.active = self.max_active = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "GDCStandin":
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                parts = url.path.strip("/").split("/")
                if parts[0] == "data" and len(parts) == 2:
                    standin._data(self, parts[1])
                else:
                    q = {k: v[0] for k, v in parse_qs(url.query).items()}
                    if "filters" in q:
                        q["filters"] = json.loads(q["filters"])
                    standin._search(self, parts[0], q)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                standin._search(self, urlparse(self.path).path.strip("/"), body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- search endpoints ----------------------------------------------------------------------
    def _search(self, h: BaseHTTPRequestHandler, endpoint: str, q: dict) -> None:
        if endpoint not in ("files", "cases"):
            return self._send(h, 404, {"message": f"no endpoint {endpoint}"})
        self.queries.append((endpoint, q))
        hits = [x for x in (self.files if endpoint == "files" else self.cases) if matches(x, q.get("filters"))]
        start, size = int(q.get("from", 0)), int(q.get("size", 10))
        page = hits[start:start + size]
        self._send(h, 200, {"data": {"hits": page, "pagination": {
            "count": len(page), "total": len(hits), "size": size, "from": start,
            "page": start // size + 1, "pages": -(-len(hits) // size)}}, "warnings": {}})

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, code: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    # -- data endpoint -------------------------------------------------------------------------
    def _data(self, h: BaseHTTPRequestHandler, file_id: str) -> None:
        if file_id not in self.content:
            return self._send(h, 404, {"message": f"file {file_id} not found"})
        rng = h.headers.get("Range")
        with self._lock:
            self.ranges.setdefault(file_id, []).append(rng)
            codes = self.errors.get(file_id) or []
            if codes:
                code = codes.pop(0)
                return self._send(h, code, {"message": "injected error"})
            body = self.content[file_id]
            if self.corrupt.get(file_id, 0) > 0:
                self.corrupt[file_id] -= 1
                body = bytes(b ^ 0xFF for b in body[:16]) + body[16:]
            drop = self.drop_after.pop(file_id, None)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        done = False
        try:
            start = 0
            if rng and file_id not in self.ignore_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    h.send_response(416)
                    h.send_header("Content-Range", f"bytes */{len(body)}")
                    h.send_header("Content-Length", "0")
                    h.end_headers()
                    return
                h.send_response(206)
                h.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                h.send_response(200)
            h.send_header("Content-Type", "application/octet-stream")
            h.send_header("Content-Length", str(len(body) - start))
            h.end_headers()
            pos, done = start, False
            while pos < len(body):
                if self.delay:
                    time.sleep(self.delay)
                end = min(pos + self.chunk, len(body))
                if drop is not None and end > drop:
                    end = max(drop, pos)
                last = end >= len(body) or (drop is not None and end >= drop)
                with self._lock:
                    self.bytes_sent[file_id] += end - pos
                    if last:  # counted as finished before the client can see its last byte
                        self.active -= 1
                        done = True
                h.wfile.write(body[pos:end])
                h.wfile.flush()
                pos = end
                if drop is not None and pos >= drop:
                    h.close_connection = True  # the rest never comes
                    return
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True
        finally:
            if not done:
                with self._lock:
                    self.active -= 1


def file_hit(file_id: str, file_name: str, content: bytes, project: str, case: str, data_type: str,
             **extra) -> dict:
    """A GDC ``files`` hit for given bytes (md5 and size computed from them)."""
    return {"file_id": file_id, "id": file_id, "file_name": file_name, "content": content,
            "md5sum": hashlib.md5(content).hexdigest(), "file_size": len(content), "state": "released",
            "data_type": data_type, "data_category": extra.pop("data_category", ""),
            "cases": [{"submitter_id": case, "project": {"project_id": project},
                       "samples": [{"submitter_id": f"{case}-01A", "sample_type": "Primary Tumor"}]}], **extra}


SLIDE_FIELDS = dict(data_format="SVS", experimental_strategy="Diagnostic Slide", data_category="Biospecimen")
RNA_FIELDS = dict(data_format="TSV", experimental_strategy="RNA-Seq", data_category="Transcriptome Profiling",
                  analysis={"workflow_type": "STAR - Counts"})


def hits_from_cohort(cohort_dir: str | Path, project: str) -> tuple[list[dict], list[dict]]:
    """File and case hits serving a generated cohort (:func:`preprocessing.demo.generate_cohort`)."""
    d = Path(cohort_dir)
    sheet = pd.read_csv(d / "gdc_sample_sheet.tsv", sep="\t", dtype=str)
    extra = {"Slide Image": SLIDE_FIELDS, "Gene Expression Quantification": RNA_FIELDS,
             "Masked Somatic Mutation": {"data_format": "MAF"}}
    files = []
    for r in sheet.to_dict("records"):
        hit = file_hit(r["File ID"], r["File Name"], (d / r["File ID"] / r["File Name"]).read_bytes(), project,
                       r["Case ID"].split(",")[0].strip(), r["Data Type"],
                       **{"data_format": "TSV", **extra.get(r["Data Type"], {}), "data_category": r["Data Category"]})
        hit["cases"][0]["samples"] = [{"submitter_id": s.strip(), "sample_type": t.strip()} for s, t in
                                      zip(r["Sample ID"].split(","), r["Sample Type"].split(","))]
        files.append(hit)
    clin = pd.read_csv(d / "clinical.tsv", sep="\t", dtype=str, keep_default_na=False)
    cases = []
    for case, g in clin.groupby("case_submitter_id"):
        first = g.iloc[0]
        val = (lambda v: None if v == "'--" else v)
        cases.append({"case_id": first["case_id"], "submitter_id": case, "project": {"project_id": project},
                      "demographic": {"vital_status": first["vital_status"],
                                      "days_to_death": val(first["days_to_death"]), "gender": first["gender"]},
                      "diagnoses": [{"days_to_last_follow_up": val(v)} for v in g["days_to_last_follow_up"]],
                      "follow_ups": []})
    return files, cases
