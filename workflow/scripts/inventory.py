# Rule inventory: the cohort's sample sheet joined with its manifest, validated as when the workflow
# is planned (preprocessing.inventory.read_checked_inventory), in one table (write_inventory_table)
# for the rules that read it.
from pathlib import Path

from preprocessing.inventory import read_checked_inventory, write_inventory_table
from preprocessing.io import job_log

with job_log(snakemake.log[0]):
    schema = Path(snakemake.scriptdir).parent / "schemas" / "sample_sheet.schema.yaml"
    files = read_checked_inventory(snakemake.input.sample_sheet, snakemake.input.manifest,
                                   snakemake.params.data_dir, schema)
    write_inventory_table(files, snakemake.output.table)
