# Rule gdc_manifest: query the GDC for the cohort's files and clinical data.
from pathlib import Path

from preprocessing.gdc import fetch_cohort_metadata
from preprocessing.inventory import read_manifest
from preprocessing.io import job_log

with job_log(snakemake.log[0]):
    p = snakemake.params
    only = read_manifest(p.only_manifest) if p.only_manifest else None
    written = fetch_cohort_metadata(p.project, list(p.kinds), Path(snakemake.output.manifest).parent, p.base_url,
                                    p.page_size, p.max_cases, only, access=list(p.access),
                                    cnv_workflows=list(p.cnv_workflows),
                                    slide_codes=list(p.slide_codes) if p.slide_codes else None)
    assert written == {k: str(Path(snakemake.output[k])) for k in written}, written
