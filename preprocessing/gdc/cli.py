"""The command line, ``python -m preprocessing.gdc``: query a project, print its download plan,
download a manifest, verify files on disk."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..inventory import CNV_WORKFLOWS
from .auth import TOKEN_FILE_ENV
from .batch import download, verify_local
from .cohort import fetch_cohort_metadata
from .core import ACCESS, DEFAULT_CNV_WORKFLOWS, DEFAULT_SLIDE_CODES, GDC_API, KINDS, GDCError
from .plan import plan_of


def main(argv: list[str] | None = None) -> int:
    """CLI: ``query`` writes manifest + sample sheet + clinical TSV; ``plan`` prints sizes and free
    space; ``download`` fetches a manifest; ``verify`` checks files already on disk."""
    ap = argparse.ArgumentParser(prog="python -m preprocessing.gdc", description=main.__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("query", help="find a project's files and clinical data")
    q.add_argument("--project", required=True, help="e.g. TCGA-BRCA")
    q.add_argument("--kinds", nargs="+", default=["slides", "rna"], choices=list(KINDS))
    q.add_argument("--out", required=True, help="folder for gdc_manifest.txt, gdc_sample_sheet.tsv, clinical.tsv")
    q.add_argument("--max-cases", type=int, default=None)
    q.add_argument("--access", nargs="+", default=["open"], choices=list(ACCESS))
    q.add_argument("--cnv-workflows", nargs="+", default=DEFAULT_CNV_WORKFLOWS, choices=list(CNV_WORKFLOWS))
    q.add_argument("--slide-codes", nargs="+", default=DEFAULT_SLIDE_CODES,
                   help="sample types of the slides to fetch (01: primary tumour)")
    p = sub.add_parser("plan", help="files, bytes and free space of a queried cohort")
    p.add_argument("--meta", required=True, help="the folder `query` wrote")
    p.add_argument("--data-dir", required=True)
    d = sub.add_parser("download", help="fetch every file of a manifest to OUT/{id}/{filename}")
    d.add_argument("--manifest", required=True)
    d.add_argument("--out", required=True)
    d.add_argument("--workers", type=int, default=4)
    d.add_argument("--retries", type=int, default=5)
    d.add_argument("--backoff", type=float, default=2.0, help="seconds before the first retry, doubled each time")
    d.add_argument("--token-file", default=None, help=f"GDC token for controlled files (else ${TOKEN_FILE_ENV})")
    v = sub.add_parser("verify", help="check files already on disk against a manifest")
    v.add_argument("--manifest", required=True)
    v.add_argument("--data-dir", required=True)
    v.add_argument("--md5", action="store_true", help="also compare md5 sums (read once, then remembered)")
    for sp in (q, d):
        sp.add_argument("--base-url", default=GDC_API)
    q.add_argument("--page-size", type=int, default=500)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if a.cmd == "query":
            print(json.dumps(fetch_cohort_metadata(a.project, a.kinds, a.out, a.base_url, a.page_size,
                                                   a.max_cases, access=a.access, cnv_workflows=a.cnv_workflows,
                                                   slide_codes=a.slide_codes), indent=2))
        elif a.cmd == "plan":
            meta = Path(a.meta)
            print(plan_of(meta / "gdc_sample_sheet.tsv", meta / "gdc_manifest.txt", a.data_dir))
        elif a.cmd == "download":
            table = download(a.manifest, a.out, a.base_url, a.workers, a.retries, a.backoff, token_file=a.token_file)
            print(table.to_string(index=False))
        else:
            print(verify_local(a.manifest, a.data_dir, check_md5=a.md5).to_string(index=False))
    except (GDCError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
