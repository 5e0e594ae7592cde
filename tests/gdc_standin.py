"""A local stand-in for the GDC API (``files``, ``cases``, ``data/{id}``) with fault injection.

Runs an ``http.server.ThreadingHTTPServer`` on 127.0.0.1 at a random port in a thread. It answers
as the GDC documents (gdc-docs, API Users Guide):

- search endpoints evaluate the request's filter JSON (``and``/``or``/``in``/``=``; a field may
  carry the endpoint's prefix, ``files.data_type``) and page with ``from``/``size``;
- ``fields`` returns only the fields asked for (dotted paths into nested records), ``expand``
  whole groups (``demographic``); with neither, the top-level values. A field the GDC does not
  know, in ``filters``, ``fields`` or ``expand``, is refused with HTTP 400 and a message;
- ``data/{id}`` streams the file's bytes and honours ``Range: bytes=N-``. A file with
  ``access: controlled`` answers 403 without an ``X-Auth-Token`` header and 401 with a wrong one;
  an id the archive does not have (or one in ``gone``: listed by search, no longer served) 404.

Faults, per file id: drop the connection after N bytes (once), answer HTTP errors (n times),
send wrong bytes (n times), ignore the Range header. ``bytes_sent`` counts body bytes per file.
Helpers build hits as the archive has them (STAR - Counts writes open expression and controlled
splice-junction files; a case has copy number from several pipelines) and the portal's sample
sheet (before 2025 and 2.4.0 layouts) and clinical export (one TSV or per-entity TSVs).
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


# What the stand-in's ``_mapping`` knows: leaf fields, and the groups ``expand`` takes.
FIELDS = {
    "files": {"id", "file_id", "file_name", "md5sum", "file_size", "state", "access", "acl", "data_type",
              "data_category", "data_format", "experimental_strategy", "analysis.workflow_type", "cases.case_id",
              "cases.submitter_id", "cases.project.project_id", "cases.samples.submitter_id",
              "cases.samples.sample_type", "cases.samples.tissue_type", "cases.samples.tumor_descriptor",
              "cases.samples.specimen_type", "cases.samples.preservation_method"},
    "cases": {"id", "case_id", "submitter_id", "project.project_id", "demographic.vital_status",
              "demographic.days_to_death", "demographic.gender", "demographic.sex_at_birth",
              "demographic.age_at_index", "diagnoses.days_to_last_follow_up", "diagnoses.days_to_death",
              "follow_ups.days_to_follow_up"},
}
GROUPS = {"files": {"cases", "cases.samples", "cases.project", "analysis"},
          "cases": {"demographic", "diagnoses", "follow_ups", "project"}}


class Refused(Exception):
    """A query the GDC answers with 400."""


def _field(endpoint: str, field: str) -> str:
    """A field without its endpoint prefix (``files.data_type`` -> ``data_type``); unknown: refused."""
    bare = field.removeprefix(f"{endpoint}.")
    if bare not in FIELDS[endpoint]:
        raise Refused(f"Unrecognized field '{field}' for the {endpoint} endpoint")
    return bare


def matches(hit: dict, flt: dict | None, endpoint: str = "files") -> bool:
    """Whether a hit passes a GDC filter (the subset of ops the client uses)."""
    if not flt:
        return True
    op, content = flt["op"], flt["content"]
    if op == "and":
        return all([matches(hit, f, endpoint) for f in content])  # a list: every field is checked
    if op == "or":
        return any([matches(hit, f, endpoint) for f in content])
    if op in ("in", "="):
        wanted = content["value"] if isinstance(content["value"], list) else [content["value"]]
        field = _field(endpoint, content["field"])
        return bool(set(map(str, _values(hit, field.split(".")))) & set(map(str, wanted)))
    raise Refused(f"unsupported filter op {op!r}")


def project(obj, paths: list[list[str]]):
    """Only the given dotted paths of a (nested) record; a path that ends early keeps its whole value."""
    if isinstance(obj, list):
        return [project(o, paths) for o in obj]
    if not isinstance(obj, dict):
        return obj
    groups: dict[str, list[list[str]]] = {}
    for p in paths:
        groups.setdefault(p[0], []).append(p[1:])
    return {k: obj[k] if any(not r for r in rest) else project(obj[k], rest) for k, rest in groups.items() if k in obj}


def answer_fields(endpoint: str, hit: dict, fields: str | None, expand: str | None) -> dict:
    """A hit as the GDC returns it for ``fields`` / ``expand`` (comma separated); always with ``id``."""
    wanted = [f for f in (fields or "").split(",") if f]
    groups = [g for g in (expand or "").split(",") if g]
    for g in groups:
        if g not in GROUPS[endpoint]:
            raise Refused(f"Unrecognized expand group '{g}' for the {endpoint} endpoint")
    paths = [_field(endpoint, f).split(".") for f in wanted] + [g.split(".") for g in groups]
    if not paths:
        paths = [[k] for k, v in hit.items() if not isinstance(v, (dict, list))]
    return {"id": hit.get("id", hit.get("file_id", hit.get("case_id"))), **project(hit, paths)}


class GDCStandin:
    """``with GDCStandin(files, cases) as gdc: gdc.base_url`` — ``files`` are GDC file hits with
    an extra ``content`` (bytes) key; ``cases`` are case hits."""

    def __init__(self, files: list[dict], cases: list[dict], chunk: int = 65536, delay: float = 0.0):
        self.content = {f["file_id"]: f["content"] for f in files}
        self.access = {f["file_id"]: f.get("access", "open") for f in files}
        self.files = [{k: v for k, v in f.items() if k != "content"} for f in files]
        self.cases = cases
        self.chunk, self.delay = chunk, delay
        self.drop_after: dict[str, int] = {}  # file id -> bytes sent before the connection drops (once)
        self.errors: dict[str, list[int]] = {}  # file id -> status codes answered first, one per request
        self.corrupt: dict[str, int] = {}  # file id -> how many times wrong bytes are sent
        self.ignore_range: set[str] = set()
        self.gone: set[str] = set()  # file ids listed by search whose data answers 404
        self.token: str | None = None  # the token controlled files accept
        self.tokens_seen: list[str | None] = []  # X-Auth-Token of every data request
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
        try:
            hits = [x for x in (self.files if endpoint == "files" else self.cases)
                    if matches(x, q.get("filters"), endpoint)]
            if not hits:  # the fields are checked against the mapping even when nothing matches
                matches({}, q.get("filters"), endpoint)
            start, size = int(q.get("from", 0)), int(q.get("size", 10))
            page = [answer_fields(endpoint, x, q.get("fields"), q.get("expand")) for x in hits[start:start + size]]
            answer_fields(endpoint, {}, q.get("fields"), q.get("expand"))
        except Refused as e:
            return self._send(h, 400, {"message": str(e)})
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
        token = h.headers.get("X-Auth-Token")
        with self._lock:
            self.tokens_seen.append(token)
        if file_id not in self.content or file_id in self.gone:
            return self._send(h, 404, {"message": f"file {file_id} not found"})
        if self.access.get(file_id) == "controlled":
            if token is None:
                return self._send(h, 403, {"message": "You do not have access to the requested file"})
            if token != self.token:
                return self._send(h, 401, {"message": "Invalid or expired token"})
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


#: TCGA sample type code -> (pre-2025 Sample Type, Tissue Type, Tumor Descriptor, Specimen Type)
SAMPLE_TYPES = {"01": ("Primary Tumor", "Tumor", "Primary", "Solid Tissue"),
                "02": ("Recurrent Tumor", "Tumor", "Recurrence", "Solid Tissue"),
                "06": ("Metastatic", "Tumor", "Metastatic", "Solid Tissue"),
                "10": ("Blood Derived Normal", "Normal", "Not Applicable", "Peripheral Blood Components NOS"),
                "11": ("Solid Tissue Normal", "Normal", "Not Applicable", "Solid Tissue")}


def sample(barcode: str, preservation: str = "FFPE") -> dict:
    """A ``cases.samples`` record for a TCGA sample barcode (``TCGA-AA-0001-01A``), both vocabularies."""
    sample_type, tissue, descriptor, specimen = SAMPLE_TYPES[barcode.split("-")[3][:2]]
    return {"submitter_id": barcode, "sample_type": sample_type, "tissue_type": tissue,
            "tumor_descriptor": descriptor, "specimen_type": specimen, "preservation_method": preservation}


def file_hit(file_id: str, file_name: str, content: bytes, project: str, case: str, data_type: str,
             **extra) -> dict:
    """A GDC ``files`` hit for given bytes (md5 and size computed from them); open access unless
    ``access="controlled"``; one primary-tumour sample unless ``samples`` (barcodes) are given."""
    samples = extra.pop("samples", [f"{case}-01A"])
    return {"file_id": file_id, "id": file_id, "file_name": file_name, "content": content,
            "md5sum": hashlib.md5(content).hexdigest(), "file_size": len(content), "state": "released",
            "access": extra.pop("access", "open"), "acl": ["open"], "data_type": data_type,
            "data_category": extra.pop("data_category", ""),
            "cases": [{"submitter_id": case, "case_id": f"case-{case}", "project": {"project_id": project},
                       "samples": [sample(s) for s in samples]}], **extra}


SLIDE_FIELDS = dict(data_format="SVS", experimental_strategy="Diagnostic Slide", data_category="Biospecimen")
RNA_FIELDS = dict(data_format="TSV", experimental_strategy="RNA-Seq", data_category="Transcriptome Profiling",
                  analysis={"workflow_type": "STAR - Counts"})
CNV_FIELDS = dict(data_format="TSV", data_category="Copy Number Variation")
MAF_FIELDS = dict(data_format="MAF", data_category="Simple Nucleotide Variation",
                  analysis={"workflow_type": "Aliquot Ensemble Somatic Variant Merging and Masking"})
CNV_TOKENS = {"ASCAT3": "ascat3", "ASCAT2": "ascat2", "ABSOLUTE LiftOver": "absolute_liftover",
              "AscatNGS": "ascatngs"}


def star_counts_hits(file_id: str, junction_id: str, case: str, project: str, content: bytes) -> list[dict]:
    """The two files one STAR - Counts run leaves in the archive: open gene expression counts, and
    controlled splice junctions (same workflow type, another data type)."""
    return [file_hit(file_id, f"{file_id}.rna_seq.augmented_star_gene_counts.tsv", content, project, case,
                     "Gene Expression Quantification", **RNA_FIELDS),
            file_hit(junction_id, f"{junction_id}.rna_seq.star_splice_junctions.tsv.gz", b"junctions " + content[:64],
                     project, case, "Splice Junction Quantification", access="controlled", **RNA_FIELDS)]


def cnv_hit(file_id: str, case: str, project: str, workflow: str, content: bytes) -> dict:
    """A gene-level copy-number file of one pipeline (tumour and blood-normal samples, as the archive lists them)."""
    return file_hit(file_id, f"{project}.{file_id}.{CNV_TOKENS[workflow]}.gene_level_copy_number.v36.tsv", content,
                    project, case, "Gene Level Copy Number", samples=[f"{case}-10A", f"{case}-01A"],
                    analysis={"workflow_type": workflow}, **CNV_FIELDS)


def portal_sample_sheet(files: list[dict], layout: str = "2.4.0") -> pd.DataFrame:
    """The sample sheet the portal exports for these hits: ``pre-2025`` (``Sample Type``) or ``2.4.0``
    (``Tissue Type``, ``Tumor Descriptor``, ``Specimen Type``, ``Preservation Method``)."""
    rows = []
    for f in files:
        samples = [s for c in f["cases"] for s in c["samples"]]
        row = {"File ID": f["file_id"], "File Name": f["file_name"], "Data Category": f["data_category"],
               "Data Type": f["data_type"], "Project ID": f["cases"][0]["project"]["project_id"],
               "Case ID": ", ".join(c["submitter_id"] for c in f["cases"] for _ in c["samples"]),
               "Sample ID": ", ".join(s["submitter_id"] for s in samples)}
        cols = ({"Sample Type": "sample_type"} if layout == "pre-2025" else
                {"Tissue Type": "tissue_type", "Tumor Descriptor": "tumor_descriptor",
                 "Specimen Type": "specimen_type", "Preservation Method": "preservation_method"})
        row.update({col: ", ".join(s[k] for s in samples) for col, k in cols.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def portal_clinical(cases: list[dict], out: Path, layout: str = "per-entity") -> Path:
    """The portal's clinical export of these case hits: one ``clinical.tsv`` (``single``, the
    pre-2025 columns, ``gender``), or a folder of per-entity TSVs (``per-entity``: ``clinical.tsv``
    and ``follow_up.tsv`` with ``cases.`` / ``demographic.`` / ``follow_ups.`` prefixes,
    ``sex_at_birth``). Returns the file or folder."""
    def v(x):
        return "'--" if x is None else str(x)

    out.mkdir(parents=True, exist_ok=True)
    main, follow = [], []
    for c in cases:
        demo = c.get("demographic") or {}
        for d in c.get("diagnoses") or [{}]:
            if layout == "single":
                main.append({"case_id": c["case_id"], "case_submitter_id": c["submitter_id"],
                             "project_id": c["project"]["project_id"], "vital_status": v(demo.get("vital_status")),
                             "days_to_death": v(demo.get("days_to_death")),
                             "days_to_last_follow_up": v(d.get("days_to_last_follow_up")),
                             "gender": v(demo.get("sex_at_birth"))})
            else:
                main.append({"project.project_id": c["project"]["project_id"], "cases.case_id": c["case_id"],
                             "cases.submitter_id": c["submitter_id"],
                             "demographic.vital_status": v(demo.get("vital_status")),
                             "demographic.days_to_death": v(demo.get("days_to_death")),
                             "demographic.sex_at_birth": v(demo.get("sex_at_birth")),
                             "diagnoses.days_to_last_follow_up": v(d.get("days_to_last_follow_up"))})
        for f in c.get("follow_ups") or []:
            follow.append({"cases.case_id": c["case_id"], "cases.submitter_id": c["submitter_id"],
                           "follow_ups.days_to_follow_up": v(f.get("days_to_follow_up"))})
    if layout == "single":
        path = out / "clinical.tsv"
        pd.DataFrame(main).to_csv(path, sep="\t", index=False)
        return path
    pd.DataFrame(main).to_csv(out / "clinical.tsv", sep="\t", index=False)
    pd.DataFrame(follow, columns=["cases.case_id", "cases.submitter_id", "follow_ups.days_to_follow_up"]).to_csv(
        out / "follow_up.tsv", sep="\t", index=False)
    pd.DataFrame({"cases.submitter_id": [c["submitter_id"] for c in cases], "exposures.alcohol_history": "'--"}
                 ).to_csv(out / "exposure.tsv", sep="\t", index=False)
    return out


def hits_from_cohort(cohort_dir: str | Path, project: str) -> tuple[list[dict], list[dict]]:
    """File and case hits serving a generated cohort (:func:`generators.demo.generate_cohort`)."""
    d = Path(cohort_dir)
    sheet = pd.read_csv(d / "gdc_sample_sheet.tsv", sep="\t", dtype=str)
    extra = {"Slide Image": SLIDE_FIELDS, "Gene Expression Quantification": RNA_FIELDS,
             "Gene Level Copy Number": CNV_FIELDS, "Masked Somatic Mutation": MAF_FIELDS}
    files = []
    for r in sheet.to_dict("records"):
        fields = {"data_format": "TSV", **extra.get(r["Data Type"], {}), "data_category": r["Data Category"]}
        if r["Data Type"] == "Gene Level Copy Number":
            fields["analysis"] = {"workflow_type": next(w for w, t in CNV_TOKENS.items() if f".{t}." in r["File Name"])}
        hit = file_hit(r["File ID"], r["File Name"], (d / r["File ID"] / r["File Name"]).read_bytes(), project,
                       r["Case ID"].split(",")[0].strip(), r["Data Type"],
                       samples=[s.strip() for s in r["Sample ID"].split(",")], **fields)
        files.append(hit)
    clin = pd.read_csv(d / "clinical.tsv", sep="\t", dtype=str, keep_default_na=False)
    cases = []
    for case, g in clin.groupby("case_submitter_id"):
        first = g.iloc[0]
        val = (lambda v: None if v == "'--" else v)
        cases.append({"case_id": first["case_id"], "submitter_id": case, "project": {"project_id": project},
                      "demographic": {"vital_status": first["vital_status"],
                                      "days_to_death": val(first["days_to_death"]), "sex_at_birth": first["gender"]},
                      "diagnoses": [{"days_to_last_follow_up": val(v)} for v in g["days_to_last_follow_up"]],
                      "follow_ups": []})
    return files, cases
