from preprocessing.feature_store import slide_of, write_index
from preprocessing.io import job_log

with job_log(snakemake.log[0]):
    p = snakemake.params
    files = {"slide": dict(p.slide), **{k: {slide_of(f): f for f in getattr(p, k)} for k in ("tissue", "patches")}}
    write_index(list(snakemake.input.stores), snakemake.output.table, files)
