"""The rule files read like the Snakemake catalogue's: every rule at most 15 lines and no `resources:`,
unless a comment right above the rule says why; and rule inventory's table (preprocessing.inventory
write_inventory_table / read_inventory_table) gives back the inventory it was written from."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from preprocessing.inventory import (RNA_TYPE, SLIDE_TYPE, not_usable, read_inventory, read_inventory_table,
                                     rna_files_of, slides_of, write_inventory_table)

REPO = Path(__file__).resolve().parents[1]
RULE_FILES = sorted((REPO / "workflow" / "rules").glob("*.smk")) + [REPO / "Snakefile"]
MAX_LINES = 15
LONGER = "# longer than 15 lines:"
RESOURCES = "# resources in the rule:"


def rules() -> list[dict]:
    """Every rule and checkpoint (generated ones, ``rule:`` with ``name:``, too): where it is, its
    lines from the header to the last non-blank line of its body, and the comment lines right above it."""
    found = []
    for path in RULE_FILES:
        lines = path.read_text().split("\n")
        for i, line in enumerate(lines):
            m = re.match(r"\s*(?:rule|checkpoint)(?: (\w+))?:", line)
            if not m:
                continue
            indent = len(line) - len(line.lstrip())
            j = i + 1
            while j < len(lines) and (lines[j].strip() == "" or len(lines[j]) - len(lines[j].lstrip()) > indent):
                j += 1
            while lines[j - 1].strip() == "":
                j -= 1
            above, k = [], i - 1
            while k >= 0 and lines[k].strip().startswith("#"):
                above.insert(0, lines[k].strip())
                k -= 1
            name = m.group(1) or next((lines[n + 1].strip() for n in range(i, j) if lines[n].strip() == "name:"), "?")
            found.append({"where": f"{path.name}:{i + 1} {name}", "lines": lines[i:j], "above": above})
    return found


def _reason(rule: dict, prefix: str) -> str | None:
    """The reason a comment above the rule gives after ``prefix``; None when there is no such comment."""
    line = next((c for c in rule["above"] if c.startswith(prefix)), None)
    return None if line is None else line[len(prefix):].strip()


def test_rules_are_found():
    names = {r["where"].split()[-1] for r in rules()}
    assert {"inventory", "rna", "evaluate", "qc", "gdc_manifest", "all"} <= names, names
    assert any("tabular_omics" in n for n in names) and any("porpoise" in n for n in names)


def test_rules_are_at_most_15_lines_unless_documented():
    too_long, stale = [], []
    for rule in rules():
        reason = _reason(rule, LONGER)
        if len(rule["lines"]) > MAX_LINES and not reason:
            too_long.append(f"{rule['where']}: {len(rule['lines'])} lines")
        if reason is not None and len(rule["lines"]) <= MAX_LINES:
            stale.append(f"{rule['where']}: {len(rule['lines'])} lines, yet documented as longer")
    assert not too_long, f"rules over {MAX_LINES} lines without a '{LONGER} <why>' comment above: {too_long}"
    assert not stale, stale


def test_no_resources_in_rules_unless_documented():
    undocumented = [rule["where"] for rule in rules()
                    if any(re.match(r"\s*resources\s*:", line) for line in rule["lines"][1:])
                    and not _reason(rule, RESOURCES)]
    assert not undocumented, f"resources: belong in the profiles (or a '{RESOURCES} <why>' comment): {undocumented}"


def test_messages_are_one_line():
    def indent(line: str) -> int:
        return len(line) - len(line.lstrip())

    for rule in rules():
        lines = rule["lines"]
        for n, line in enumerate(lines):
            if line.strip() == "message:":
                assert n + 2 >= len(lines) or indent(lines[n + 2]) < indent(lines[n + 1]), rule["where"]


# ---------------------------------------------------------------------------------------------
# the inventory table


SHEET_COLUMNS = ["File ID", "File Name", "Data Category", "Data Type", "Project ID", "Case ID", "Sample ID",
                 "Sample Type", "mpp", "Download Status", "Download Reason"]


@pytest.fixture
def inventory(tmp_path) -> tuple[pd.DataFrame, Path, Path]:
    """read_inventory of a GDC-format sample sheet (with an ``mpp`` column, one cell empty, and the
    download step's status: one file failed, one skipped) and manifest written in ``tmp_path``."""
    sheet = pd.DataFrame([
        ["f1", "TCGA-AA-0001-01Z-00-DX1.X.svs", "Biospecimen", SLIDE_TYPE, "P", "TCGA-AA-0001", "TCGA-AA-0001-01A",
         "Primary Tumor", "0.25", "ok", ""],
        ["f2", "TCGA-AA-0002-01Z-00-DX1.Y.svs", "Biospecimen", SLIDE_TYPE, "P", "TCGA-AA-0002", "TCGA-AA-0002-01A",
         "Primary Tumor", "", "ok", ""],
        ["f3", "r3.tsv", "Transcriptome Profiling", RNA_TYPE, "P", "TCGA-AA-0002, TCGA-AA-0002",
         "TCGA-AA-0002-01A, TCGA-AA-0002-11A", "Primary Tumor, Solid Tissue Normal", "", "ok", ""],
        ["f4", "TCGA-AA-0003-01Z-00-DX1.Z.svs", "Biospecimen", SLIDE_TYPE, "P", "TCGA-AA-0003", "TCGA-AA-0003-01A",
         "Primary Tumor", "0.5", "failed", "HTTP 403: forbidden"],
        ["f5", "TCGA-AA-0004-06Z-00-DX1.W.svs", "Biospecimen", SLIDE_TYPE, "P", "TCGA-AA-0004", "TCGA-AA-0004-06A",
         "Metastatic", "", "skipped", "slide policy: sample type 06"],
    ], columns=SHEET_COLUMNS)
    manifest = pd.DataFrame({"id": ["f1", "f2", "f3", "f4"],
                             "filename": ["TCGA-AA-0001-01Z-00-DX1.X.svs", "TCGA-AA-0002-01Z-00-DX1.Y.svs", "r3.tsv",
                                          "TCGA-AA-0003-01Z-00-DX1.Z.svs"],
                             "md5": ["a" * 32, "b" * 32, "c" * 32, "d" * 32], "size": ["10", "20", "30", "40"],
                             "state": ["released"] * 4})
    sheet.to_csv(tmp_path / "sample_sheet.tsv", sep="\t", index=False)
    manifest.to_csv(tmp_path / "manifest.txt", sep="\t", index=False)
    files = read_inventory(tmp_path / "sample_sheet.tsv", tmp_path / "manifest.txt", tmp_path / "data")
    return files, tmp_path / "inventory.parquet", tmp_path


def _same(back: pd.DataFrame, files: pd.DataFrame) -> None:
    """Equal frames, and equal files set aside (attrs["not_usable"]), for each consumer alike."""
    pd.testing.assert_frame_equal(back, files)
    assert set(back.attrs) == set(files.attrs)
    if "not_usable" in files.attrs:
        assert len(back.attrs["not_usable"]) == len(files.attrs["not_usable"])
        pd.testing.assert_frame_equal(not_usable(back), not_usable(files))
    for usable_only in (False, True):
        pd.testing.assert_frame_equal(slides_of(back, usable_only=usable_only),
                                      slides_of(files, usable_only=usable_only))
    pd.testing.assert_frame_equal(rna_files_of(back), rna_files_of(files))


def test_inventory_table_round_trip(inventory):
    files, path, _ = inventory
    assert list(files["file_id"]) == ["f1", "f2", "f3"] and list(files["mpp"]) == ["0.25", "", ""]
    assert [r["file_id"] for r in files.attrs["not_usable"]] == ["f4", "f5"]
    write_inventory_table(files, path)
    back = read_inventory_table(path)
    _same(back, files)
    assert back.loc[1, "mpp"] == "" and back.loc[2, "sample_id"] == "TCGA-AA-0002-01A"
    assert not list(path.parent.glob(".inventory.parquet.tmp-*"))  # written atomically: no temporary left


def test_inventory_table_keeps_nan_apart_from_empty(inventory):
    files, path, _ = inventory
    files = files.copy()
    files.loc[1, "mpp"] = np.nan  # e.g. a frame built by hand: NaN, where the sheet gives ""
    files.attrs["not_usable"][1]["mpp"] = np.nan
    write_inventory_table(files, path)
    back = read_inventory_table(path)
    _same(back, files)
    assert pd.isna(back.loc[1, "mpp"]) and back.loc[2, "mpp"] == "" and back.loc[0, "mpp"] == "0.25"
    assert pd.isna(back.attrs["not_usable"][1]["mpp"]) and back.attrs["not_usable"][0]["mpp"] == "0.5"


def test_inventory_table_of_a_sheet_without_download_status_or_mpp(inventory):
    files, path, tmp_path = inventory
    sheet = pd.read_csv(tmp_path / "sample_sheet.tsv", sep="\t", dtype=str, keep_default_na=False)
    sheet.drop(columns=["mpp", "Download Status", "Download Reason"]).iloc[:3].to_csv(
        tmp_path / "plain.tsv", sep="\t", index=False)
    files = read_inventory(tmp_path / "plain.tsv", tmp_path / "manifest.txt", tmp_path / "data")
    assert not files.attrs and "mpp" not in files.columns
    write_inventory_table(files, path)
    _same(read_inventory_table(path), files)


def test_inventory_table_with_every_file_set_aside(inventory):
    """A GDC cohort whose every file failed: no file left, its path column float64 (pandas' dtype of
    an empty assignment); the table gives it back as it was."""
    files, path, tmp_path = inventory
    sheet = pd.read_csv(tmp_path / "sample_sheet.tsv", sep="\t", dtype=str, keep_default_na=False)
    sheet["Download Status"] = "failed"
    sheet.to_csv(tmp_path / "failed.tsv", sep="\t", index=False)
    files = read_inventory(tmp_path / "failed.tsv", tmp_path / "manifest.txt", tmp_path / "data")
    assert files.empty and len(files.attrs["not_usable"]) == 5
    write_inventory_table(files, path)
    _same(read_inventory_table(path), files)


@pytest.mark.parametrize("damage", ["truncated", "sample sheet", "another table"])
def test_damaged_inventory_table_is_an_error_naming_it(inventory, damage):
    files, path, tmp_path = inventory
    write_inventory_table(files, path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "sample sheet":
        path = tmp_path / "sample_sheet.tsv"
    else:
        files.drop(columns=["md5"]).to_parquet(path)
    with pytest.raises(ValueError, match="not an inventory table") as err:
        read_inventory_table(path)
    assert str(path) in str(err.value)


def test_missing_inventory_table_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.parquet"):
        read_inventory_table(tmp_path / "nowhere.parquet")
