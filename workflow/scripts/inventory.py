# Rule inventory: the cohort's sample sheet joined with its manifest (preprocessing.inventory.read_inventory),
# validated as when the workflow is planned, in one table (read_inventory_table) for the rules that read it.
from pathlib import Path

from snakemake.utils import validate

from preprocessing.inventory import read_inventory, write_inventory_table
from preprocessing.io import job_log

with job_log(snakemake.log[0]):
    files = read_inventory(snakemake.input.sample_sheet, snakemake.input.manifest, snakemake.params.data_dir)
    validate(files, str(Path(snakemake.scriptdir).parent / "schemas" / "sample_sheet.schema.yaml"))
    write_inventory_table(files, snakemake.output.table)
