# Checkpoint download: every file's record in download.tsv, and the sample sheet with each file's
# download status (ok / failed / skipped) that the later rules read.
from preprocessing.gdc import collect_downloads
from preprocessing.io import job_log

with job_log(snakemake.log[0]):
    collect_downloads(snakemake.input.sample_sheet, list(snakemake.input.records), snakemake.output.table,
                      snakemake.output.sample_sheet)
