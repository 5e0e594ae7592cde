# Checkpoint gdc_file: fetch one file (or find it present) and write its record; a 401/403/404 or an
# md5 wrong every time is recorded as failed, other errors fail the job (Snakemake retries it).
from pathlib import Path

from preprocessing.gdc import fetch_record, write_progress
from preprocessing.io import job_log

with job_log(snakemake.log[0]) as log:
    f, g = snakemake.params.file, snakemake.params.gdc
    fetch_record(snakemake.wildcards.file_id, f["file_name"], f["md5"], f["size"], f["kind"],
                 snakemake.params.data_dir, snakemake.output.record, base_url=g["base_url"], retries=g["retries"],
                 backoff=g["backoff_s"], timeout=g["timeout_s"], verify_present_md5=g["verify_present_md5"],
                 token_file=g["token_file"], access=f["access"], progress_s=g["progress_s"])
    try:  # the plan's totals with this file done (informative: never fails the job)
        write_progress(snakemake.input.plan, Path(snakemake.output.record).parent, snakemake.params.progress)
    except (OSError, ValueError, KeyError) as e:
        log.warning("progress not updated: %s", e)
