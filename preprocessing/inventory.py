"""What a cohort has on disk: a GDC manifest plus sample sheet, read into one table of files.

The GDC portal's sample sheet maps each file to its case and sample; the manifest gives its
md5 and size. Files sit where gdc-client puts them: ``{data_dir}/{file_id}/{file_name}``.

Two sample-sheet layouts are read: the portal's before 2025 (``Sample Type``) and the one of
portal 2.4.0 (March 2025: ``Tissue Type``, ``Tumor Descriptor``, ``Specimen Type``,
``Preservation Method``). A sheet written by the GDC download step may also say, per file, that it
could not be fetched (``Download Status`` failed) or was not fetched on purpose (skipped, with
``Download Reason``): such files are left out of the table, since nothing can read them, and kept
in ``files.attrs`` (:func:`not_usable`) so that QC can name them.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .io import atomic_path
from .omics import CNV_TYPE, choose_aliquots, sample_type_code
from .settings import validate_rows

SAMPLE_SHEET_COLUMNS = {"File ID": "file_id", "File Name": "file_name", "Data Category": "data_category",
                        "Data Type": "data_type", "Project ID": "project_id", "Case ID": "case_id",
                        "Sample ID": "sample_id"}
#: the sample columns of each portal layout, and the names they get
LAYOUTS = {"pre-2025": {"Sample Type": "sample_type"},
           "2.4.0": {"Tissue Type": "tissue_type", "Tumor Descriptor": "tumor_descriptor",
                     "Specimen Type": "specimen_type", "Preservation Method": "preservation_method"}}
#: optional columns (written by the GDC query): a file's CNV pipeline and access, and what the
#: download step made of it
EXTRA_COLUMNS = {"Workflow Type": "workflow_type", "Access": "access", "Download Status": "download_status",
                 "Download Reason": "download_reason"}
MANIFEST_COLUMNS = ["id", "filename", "md5", "size", "state"]
SLIDE_TYPE = "Slide Image"
RNA_TYPE = "Gene Expression Quantification"
# the columns every inventory has (workflow/schemas/sample_sheet.schema.yaml requires them)
INVENTORY_COLUMNS = ["file_id", "file_name", "data_type", "case_id", "sample_id", "md5", "path"]
NOT_USABLE = ("failed", "skipped")  # Download Status values of files that are not on disk
#: GDC gene-level copy-number pipelines (``analysis.workflow_type``), and tokens of their file names
CNV_WORKFLOWS = {"ASCAT3": "ascat3", "ASCAT2": "ascat2", "ABSOLUTE LiftOver": "absolute_liftover",
                 "AscatNGS": "ascatngs"}


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


def _derived_sample_type(row: pd.Series) -> str:
    """The pre-2025 ``Sample Type`` wording for a 2.4.0 row (tissue type, tumour descriptor, specimen)."""
    tissue, descriptor = str(row.get("tissue_type", "")).strip(), str(row.get("tumor_descriptor", "")).strip()
    if tissue.lower() == "tumor":
        return {"primary": "Primary Tumor", "metastatic": "Metastatic",
                "recurrence": "Recurrent Tumor"}.get(descriptor.lower(), f"{descriptor} Tumor".strip())
    if tissue.lower() == "normal":
        blood = "blood" in str(row.get("specimen_type", "")).lower()
        return "Blood Derived Normal" if blood else "Solid Tissue Normal"
    return tissue


def read_sample_sheet(path: str | os.PathLike) -> pd.DataFrame:
    """A portal sample sheet of either layout, columns renamed (``file_id``, ``sample_type``, …).

    The 2.4.0 layout's sample columns are kept and ``sample_type`` is derived from them (per
    listed sample: ``Tumor`` + ``Primary`` is ``Primary Tumor``). A sheet with neither layout's
    sample columns is an error naming both.
    """
    table = _read_tsv(path, list(SAMPLE_SHEET_COLUMNS))
    layouts = [name for name, cols in LAYOUTS.items() if set(cols) <= set(table.columns)]
    if not layouts:
        wanted = " or ".join(", ".join(cols) for cols in LAYOUTS.values())
        raise ValueError(f"{path}: missing the sample column(s) of either portal layout ({wanted}); "
                         f"found {', '.join(table.columns)}")
    renames = {**SAMPLE_SHEET_COLUMNS, **EXTRA_COLUMNS, **{k: v for lay in layouts for k, v in LAYOUTS[lay].items()}}
    table = table.rename(columns=renames)
    if "sample_type" not in table.columns:  # 2.4.0 only: one derived type per listed sample
        cols = list(LAYOUTS["2.4.0"].values())
        split = {c: table[c].str.split(",") for c in cols}
        table["sample_type"] = [", ".join(_derived_sample_type(pd.Series({c: (split[c][i][k] if k < len(split[c][i])
                                                                                  else "") for c in cols}))
                                          for k in range(len(split["tissue_type"][i])))
                                for i in range(len(table))]
    return table


def read_inventory(sample_sheet: str | os.PathLike, manifest: str | os.PathLike, data_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per file: ids, case, sample, data type, md5 and its path under ``data_dir``.

    Case and sample ids that list several values (``a, b``) keep the first; files in the sample
    sheet but not in the manifest are an error, since their integrity cannot be checked. Files the
    sheet marks failed or skipped (``Download Status``) are not in the table but in
    ``attrs["not_usable"]`` (see :func:`not_usable`), with ``download_status`` and ``download_reason``
    (no such attribute for a sheet without that column).
    """
    sheet = read_sample_sheet(sample_sheet)
    downloaded = "download_status" in sheet.columns  # written by the GDC download step
    status = sheet["download_status"].str.strip().str.lower() if downloaded else pd.Series("", index=sheet.index)
    unusable, sheet = sheet[status.isin(NOT_USABLE)], sheet[~status.isin(NOT_USABLE)]
    man = read_manifest(manifest).rename(columns={"id": "file_id", "filename": "manifest_file_name"})
    files = sheet.merge(man, on="file_id", how="left", validate="one_to_one")
    absent = files[files["md5"].isna()]
    if len(absent):
        raise ValueError(f"{manifest}: {len(absent)} file(s) of {sample_sheet} are not in the manifest, e.g. {absent['file_id'].iloc[0]}")
    files, unusable = (_first_ids(t, data_dir) for t in (files, unusable))
    if downloaded:  # plain records: pandas carries attrs through its operations and compares them
        files.attrs["not_usable"] = unusable.to_dict("records")
    return files


def read_checked_inventory(sample_sheet: str | os.PathLike, manifest: str | os.PathLike, data_dir: str | os.PathLike,
                           schema: str | os.PathLike) -> pd.DataFrame:
    """:func:`read_inventory`, validated against the workflow's sample-sheet schema (a JSON-schema
    YAML file): how planning (rules/common.smk) and rule inventory both read a cohort, so that the
    table a job writes is the one the DAG was planned from."""
    files = read_inventory(sample_sheet, manifest, data_dir)
    validate_rows(files, schema, source=f"{sample_sheet} (with {manifest})")
    return files


def not_usable(files: pd.DataFrame) -> pd.DataFrame | None:
    """The files of an inventory the download step failed or skipped (see :func:`read_inventory`);
    None for an inventory of a sheet without ``Download Status``."""
    rows = files.attrs.get("not_usable")
    if rows is None:
        return None
    table = pd.DataFrame(rows)
    return table.reindex(columns=list(dict.fromkeys([*files.columns, *table.columns, "download_status",
                                                       "download_reason"])))


def write_inventory_table(files: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write an inventory (:func:`read_inventory`) to ``path`` as Parquet, atomically: its dtypes, empty
    cells and NaN come back as they were, and so do the files the download step failed or skipped
    (``attrs["not_usable"]``, :func:`not_usable`), which travel in the file's metadata."""
    with atomic_path(path) as tmp:
        files.reset_index(drop=True).to_parquet(tmp, index=False)


def read_inventory_table(path: str | os.PathLike) -> pd.DataFrame:
    """The inventory :func:`write_inventory_table` wrote to ``path`` (rule inventory's table); a file
    that is not one is an error naming it."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: file not found (an inventory table, written by rule inventory)")
    try:
        files = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises its own error types for a damaged or foreign file
        raise ValueError(f"{path}: not an inventory table (Parquet, written by rule inventory): {e}") from None
    missing = [c for c in INVENTORY_COLUMNS if c not in files.columns]
    if missing:
        raise ValueError(f"{path}: not an inventory table: no column {missing}")
    for col in files.columns[files.dtypes == object]:  # Parquet gives None where the frame had NaN
        files[col] = files[col].where(files[col].notna(), np.nan)
    return files


def _first_ids(files: pd.DataFrame, data_dir: str | os.PathLike) -> pd.DataFrame:
    """Multi-valued case / sample cells cut to their first value; ``path`` under ``data_dir``."""
    files = files.copy()
    for col in ("case_id", "sample_id", "sample_type"):
        files[col] = files[col].str.split(",").str[0].str.strip()
    files["path"] = [str(Path(data_dir) / fid / name) for fid, name in zip(files["file_id"], files["file_name"])]
    return files.reset_index(drop=True)


def slide_id(file_name: str) -> str:
    """A slide's id is its file name without the extension (``TCGA-…-DX1.<uuid>``)."""
    return file_name.rsplit(".", 1)[0]


def slides_of(files: pd.DataFrame, usable_only: bool = False) -> pd.DataFrame:
    """The slides of an inventory by slide id; with the slides the download step failed or skipped
    (:func:`not_usable`, with their ``download_status``) unless ``usable_only``."""
    parts = [files]
    unusable = not_usable(files)
    if not usable_only and unusable is not None and len(unusable):
        parts.append(unusable)
    both = pd.concat(parts, ignore_index=True) if len(parts) > 1 else files
    slides = both[both["data_type"] == SLIDE_TYPE].copy()
    slides["slide_id"] = slides["file_name"].map(slide_id)
    slides.attrs = {}
    return slides.sort_values("slide_id").reset_index(drop=True)


def rna_files_of(files: pd.DataFrame) -> pd.DataFrame:
    return files[files["data_type"] == RNA_TYPE].sort_values(["case_id", "sample_id", "file_id"]).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# which files a cohort uses


def sample_code(sample_id: str, sample_type: str = "") -> str:
    """The two-digit sample type of a TCGA sample barcode (``…-01A`` → ``01``); for other barcodes
    ``01`` when the sample type says primary tumour, else ``""``."""
    code = sample_type_code(str(sample_id))
    if code >= 0:
        return f"{code:02d}"
    return "01" if str(sample_type).strip().lower() == "primary tumor" else ""


def slide_policy(files: pd.DataFrame, sample_codes: list[str] | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Slides of the wanted sample types (``["01"]``: primary tumour) and every other file; and the
    slides left out, with ``download_status`` skipped and the reason. ``None`` keeps every slide."""
    if not sample_codes:
        return files, files.iloc[:0]
    codes = [sample_code(s.split(",")[0].strip(), t.split(",")[0]) for s, t in
             zip(files["sample_id"], files["sample_type"])]
    out = (files["data_type"] == SLIDE_TYPE) & ~pd.Series(codes, index=files.index).isin(list(sample_codes))
    wanted = " or ".join(sample_codes)
    reasons = [f"slide policy: sample type {c or '?'} ({t.split(',')[0].strip() or 'unknown'}); "
               f"only {wanted} is used" for c, t in zip(codes, files["sample_type"])]
    skipped = files[out].assign(download_status="skipped", download_reason=pd.Series(reasons, index=files.index)[out])
    return files[~out], skipped


def cnv_workflow_of(file_name: str) -> str:
    """The CNV pipeline named in a GDC gene-level copy-number file name (``….ascat3.gene_level…``),
    for sheets without a ``Workflow Type`` column; ``""`` when none is."""
    name = file_name.lower()
    for workflow, token in CNV_WORKFLOWS.items():
        if f".{token}." in name or (token == "ascatngs" and ".wgs.ascat" in name):
            return workflow
    return ""


def prefer_cnv_workflow(files: pd.DataFrame, order: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per case, only the copy-number files of the first pipeline in ``order`` the case has.

    TCGA cases often have gene-level copy number from several pipelines (ASCAT2, ASCAT3, ABSOLUTE
    LiftOver, AscatNGS); mixing them across cases mixes methods. Files of other pipelines, or of
    pipelines not in ``order``, are returned apart with the reason. Other data types pass through.
    ``workflow_type`` is filled from the file name where the sheet had none.
    """
    files = files.copy()
    if "workflow_type" not in files.columns:
        files["workflow_type"] = ""
    cnv = files["data_type"] == CNV_TYPE
    missing = cnv & (files["workflow_type"].fillna("") == "")
    files.loc[missing, "workflow_type"] = files.loc[missing, "file_name"].map(cnv_workflow_of)
    rank = {w: i for i, w in enumerate(order)}
    ranks = files["workflow_type"].map(lambda w: rank.get(w, len(order)))
    case = files["case_id"].str.split(",").str[0].str.strip()
    best = ranks[cnv].groupby(case[cnv]).min()
    keep = ~cnv | ((ranks < len(order)) & (ranks == case.map(best)))
    if not (files.loc[cnv, "workflow_type"] != "").any():
        keep = pd.Series(True, index=files.index)  # no pipeline known at all (e.g. a hand-made sheet): keep all
    dropped = files[~keep].copy()
    dropped["reason"] = [f"CNV pipeline {w or 'unknown'} "
                         + (f"not in cnv_workflows {order}" if rank.get(w) is None else "not preferred for this case")
                         for w in dropped["workflow_type"]]
    return files[keep], dropped


def cnv_workflow_table(files: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Per copy-number file: its case, sample, pipeline, and whether it is the one used for the case
    (``used``) or why not. ``files`` are copy-number files with their tumour sample ids; the choice
    is :func:`prefer_cnv_workflow`, then one aliquot per case (:func:`preprocessing.omics.choose_aliquots`)."""
    preferred, other = prefer_cnv_workflow(files, order)
    chosen, aside = choose_aliquots(preferred)
    cols = ["case_id", "sample_id", "file_id", "file_name", "workflow_type", "status", "reason"]
    table = pd.concat([chosen.assign(status="used", reason=""), aside.assign(status="set aside"),
                       other.assign(status="set aside")], ignore_index=True)
    return table.reindex(columns=cols).sort_values(["case_id", "status", "file_id"], ascending=[True, False, True])
