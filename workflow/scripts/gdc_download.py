from preprocessing.gdc import download
from preprocessing.io import atomic_path, job_log

with job_log(snakemake.log[0]) as log:
    g = snakemake.params.gdc
    table = download(snakemake.input.manifest, snakemake.params.data_dir, g["base_url"], g["workers"], g["retries"],
                     g["backoff_s"], g["timeout_s"], g.get("verify_present_md5", True))
    log.info("%s", table["status"].value_counts().to_dict())
    with atomic_path(snakemake.output.table) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
