"""What a cohort has on disk: a GDC manifest plus sample sheet, read into one table of files.

The GDC portal's sample sheet maps each file to its case and sample; the manifest gives its
md5 and size. Files sit where gdc-client puts them: ``{data_dir}/{file_id}/{file_name}``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

SAMPLE_SHEET_COLUMNS = {"File ID": "file_id", "File Name": "file_name", "Data Category": "data_category",
                        "Data Type": "data_type", "Project ID": "project_id", "Case ID": "case_id",
                        "Sample ID": "sample_id", "Sample Type": "sample_type"}
MANIFEST_COLUMNS = ["id", "filename", "md5", "size", "state"]
SLIDE_TYPE = "Slide Image"
RNA_TYPE = "Gene Expression Quantification"


def _read_tsv(path: str | os.PathLike, required: list[str]) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(table.columns)}")
    return table


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """A GDC manifest (``id filename md5 size state``)."""
    return _read_tsv(path, MANIFEST_COLUMNS)


def read_inventory(sample_sheet: str | os.PathLike, manifest: str | os.PathLike, data_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per file: ids, case, sample, data type, md5 and its path under ``data_dir``.

    Case and sample ids that list several values (``a, b``) keep the first; files in the sample
    sheet but not in the manifest are an error, since their integrity cannot be checked.
    """
    sheet = _read_tsv(sample_sheet, list(SAMPLE_SHEET_COLUMNS)).rename(columns=SAMPLE_SHEET_COLUMNS)
    man = read_manifest(manifest).rename(columns={"id": "file_id", "filename": "manifest_file_name"})
    files = sheet.merge(man, on="file_id", how="left", validate="one_to_one")
    absent = files[files["md5"].isna()]
    if len(absent):
        raise ValueError(f"{manifest}: {len(absent)} file(s) of {sample_sheet} are not in the manifest, e.g. {absent['file_id'].iloc[0]}")
    for col in ("case_id", "sample_id", "sample_type"):
        files[col] = files[col].str.split(",").str[0].str.strip()
    files["path"] = [str(Path(data_dir) / fid / name) for fid, name in zip(files["file_id"], files["file_name"])]
    return files.reset_index(drop=True)


def slide_id(file_name: str) -> str:
    """A slide's id is its file name without the extension (``TCGA-…-DX1.<uuid>``)."""
    return file_name.rsplit(".", 1)[0]


def slides_of(files: pd.DataFrame) -> pd.DataFrame:
    slides = files[files["data_type"] == SLIDE_TYPE].copy()
    slides["slide_id"] = slides["file_name"].map(slide_id)
    return slides.sort_values("slide_id").reset_index(drop=True)


def rna_files_of(files: pd.DataFrame) -> pd.DataFrame:
    return files[files["data_type"] == RNA_TYPE].sort_values(["case_id", "sample_id", "file_id"]).reset_index(drop=True)
