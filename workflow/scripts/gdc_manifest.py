from pathlib import Path

from preprocessing.gdc import fetch_cohort_metadata
from preprocessing.inventory import read_manifest
from preprocessing.io import job_log

with job_log(snakemake.log[0]):
    p = snakemake.params
    only = set(read_manifest(p.only_manifest)["id"]) if p.only_manifest else None
    written = fetch_cohort_metadata(p.project, list(p.kinds), Path(snakemake.output.manifest).parent, p.base_url,
                                    p.page_size, p.max_cases, only)
    assert written == {k: str(Path(snakemake.output[k])) for k in written}, written
