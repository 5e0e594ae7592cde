"""preprocessing.tabular: omics and clinical data of any cohort as plain tables (TSV, CSV, parquet)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from preprocessing.tabular import (DAYS_PER_MONTH, porpoise_modalities, read_clinical_table, read_omics_table,
                                   read_porpoise_table, read_table, tabular_survival_table, write_omics_table,
                                   write_porpoise_tables, write_tabular_survival_table)

REPO = Path(__file__).resolve().parents[1]
IDS = ["TCGA-AA-0001", "TCGA-AA-0002", "TCGA-AA-0003", "TCGA-AA-0004"]
VALUES = np.array([[1.5, 0.0, np.nan], [2.0, -1.0, 3.0], [0.25, 4.0, 1.0], [7.0, 8.0, 9.0]])
OMICS = pd.DataFrame(VALUES, columns=["g1", "g2", "g3"]).assign(case_id=IDS)


def _save(df: pd.DataFrame, path: Path, index: bool = False) -> Path:
    name = path.name.removesuffix(".gz")
    if name.endswith(".parquet"):
        df.to_parquet(path, index=index)
    else:
        df.to_csv(path, sep="," if name.endswith(".csv") else "\t", index=index)
    return path


@pytest.mark.parametrize("layout", ["id_last.tsv", "id_first.csv", "id_first.tsv.gz", "column.parquet",
                                    "index.parquet", "first.txt"])
def test_read_table_formats_and_id_column(tmp_path, layout):
    df = OMICS
    if layout.startswith("id_first") or layout.startswith("first"):
        df = OMICS[["case_id", "g1", "g2", "g3"]]
    if layout == "first.txt":
        df = df.rename(columns={"case_id": "patient"})  # no case_id column: the first column is the id
    if layout == "index.parquet":
        _save(OMICS.set_index("case_id"), tmp_path / layout, index=True)
    else:
        _save(df, tmp_path / layout)
    table = read_omics_table(tmp_path / layout)
    assert table.index.name == "case_id" and list(table.index) == IDS
    assert list(table.columns) == ["g1", "g2", "g3"]
    np.testing.assert_array_equal(table.to_numpy(), VALUES)  # the NaN stays for in-fold imputation


def test_unknown_format_names_the_file(tmp_path):
    path = tmp_path / "omics.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(ValueError, match=r"omics\.xlsx: unknown table format"):
        read_table(path)
    with pytest.raises(FileNotFoundError, match=r"absent\.tsv"):
        read_table(tmp_path / "absent.tsv")


def test_omics_all_nan_columns_are_dropped_and_counted(tmp_path, caplog):
    df = OMICS.assign(empty1=np.nan, empty2=np.nan)
    path = _save(df, tmp_path / "prot.tsv")
    with caplog.at_level("WARNING"):
        table = write_omics_table(path, tmp_path / "omics" / "prot.parquet")
    assert list(table.columns) == ["g1", "g2", "g3"]
    assert "2 column(s) without any value dropped: empty1, empty2" in caplog.text
    back = pd.read_parquet(tmp_path / "omics" / "prot.parquet")
    pd.testing.assert_frame_equal(back, table, check_index_type=False, check_column_type=False)
    assert back.loc["TCGA-AA-0001"].isna().tolist() == [False, False, True]


def test_omics_bad_values_name_the_file_and_columns(tmp_path):
    text = OMICS.astype(object)
    text.loc[1, "g2"] = "high"
    with pytest.raises(ValueError, match=r"words\.tsv: non-numeric values in 1 column\(s\): g2"):
        read_omics_table(_save(text, tmp_path / "words.tsv"))
    with pytest.raises(ValueError, match=r"inf\.tsv: infinite values in 1 column\(s\): g1"):
        read_omics_table(_save(OMICS.assign(g1=[1, np.inf, 2, 3]), tmp_path / "inf.tsv"))
    with pytest.raises(ValueError, match=r"nothing\.tsv: no feature with a value"):
        read_omics_table(_save(OMICS[["case_id"]].assign(x=np.nan), tmp_path / "nothing.tsv"))
    missing_id = OMICS.astype(object)
    missing_id.loc[2, "case_id"] = ""
    with pytest.raises(ValueError, match=r"noid\.csv: 1 row\(s\) without a case id in column 'case_id' \(rows 4"):
        read_omics_table(_save(missing_id, tmp_path / "noid.csv"))


def test_omics_text_is_parsed_exactly_and_ids_stay_text(tmp_path):
    """Values as Python's float() reads their text (17 significant digits, exponents), case ids such
    as ``007`` as written, and True/False refused as words: in TSV and gzipped CSV alike."""
    rng = np.random.default_rng(3)
    values = rng.normal(size=(5, 40)) * 10.0 ** rng.integers(-9, 9, size=40)
    ids = ["007", "010", "1e3", "42", "TCGA-AA-0001"]
    df = pd.DataFrame(values, columns=[f"g{j}" for j in range(40)]).assign(case_id=ids)
    for name in ("exact.tsv", "exact.csv.gz"):
        path = _save(df, tmp_path / name)
        table = read_omics_table(path)
        assert list(table.index) == sorted(ids)
        text = pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",", dtype=str).set_index("case_id")
        expected = np.vectorize(float)(text.loc[table.index, table.columns].to_numpy())  # the oracle: float(str)
        assert np.array_equal(table.to_numpy(), expected)
    flags = OMICS.assign(g4=["True", "False", "True", "False"])
    with pytest.raises(ValueError, match=r"flags\.tsv: non-numeric values in 1 column\(s\): g4"):
        read_omics_table(_save(flags, tmp_path / "flags.tsv"))


CLINICAL = pd.DataFrame({"case_id": IDS, "time": [100.0, 250.5, -4.0, 30.0], "event": [1, 0, 1, 0]})


def test_clinical_table_by_hand(tmp_path):
    surv = read_clinical_table(_save(CLINICAL, tmp_path / "clin.csv"), endpoint="PFI").set_index("case_id")
    assert surv.loc[["TCGA-AA-0001", "TCGA-AA-0002", "TCGA-AA-0004"], ["time", "event"]].values.tolist() == [
        [100.0, 1], [250.5, 0], [30.0, 0]]
    assert surv["status"].tolist() == ["ok", "ok", "excluded", "ok"]
    assert surv.loc["TCGA-AA-0003", "reason"] == "negative survival time (-4 days)"
    assert set(surv["endpoint"]) == {"PFI"} and surv.loc["TCGA-AA-0001", "site"] == "AA"


def test_clinical_table_errors(tmp_path):
    with pytest.raises(ValueError, match=r"noevent\.tsv: missing clinical column\(s\) event"):
        read_clinical_table(_save(CLINICAL.drop(columns="event"), tmp_path / "noevent.tsv"))
    with pytest.raises(ValueError, match=r"events\.tsv: event must be 0 or 1; not so for 1 case\(s\): TCGA-AA-0002"):
        read_clinical_table(_save(CLINICAL.assign(event=[1, 2, 0, 0]), tmp_path / "events.tsv"))


def test_tabular_survival_table_accounts_for_every_case(tmp_path):
    omics = {"prot": tmp_path / "prot.parquet", "meth": tmp_path / "meth.parquet"}
    pd.DataFrame({"x": [1.0, 2.0]}, index=pd.Index(["TCGA-AA-0001", "TCGA-ZZ-0009"], name="case_id")).to_parquet(omics["prot"])
    pd.DataFrame({"y": [1.0]}, index=pd.Index(["TCGA-AA-0002"], name="case_id")).to_parquet(omics["meth"])
    slides = pd.Series({"TCGA-AA-0001": 2, "TCGA-AA-0003": 1})
    clinical = _save(CLINICAL, tmp_path / "clin.tsv")
    table = tabular_survival_table(clinical, omics, slides=slides).set_index("case_id")
    assert sorted(table.index) == sorted(IDS + ["TCGA-ZZ-0009"])
    assert table[["n_slide_files", "n_prot_files", "n_meth_files"]].to_dict("index") == {
        "TCGA-AA-0001": {"n_slide_files": 2, "n_prot_files": 1, "n_meth_files": 0},
        "TCGA-AA-0002": {"n_slide_files": 0, "n_prot_files": 0, "n_meth_files": 1},
        "TCGA-AA-0003": {"n_slide_files": 1, "n_prot_files": 0, "n_meth_files": 0},
        "TCGA-AA-0004": {"n_slide_files": 0, "n_prot_files": 0, "n_meth_files": 0},
        "TCGA-ZZ-0009": {"n_slide_files": 0, "n_prot_files": 1, "n_meth_files": 0}}
    assert table["status"].to_dict() == {"TCGA-AA-0001": "ok", "TCGA-AA-0002": "ok", "TCGA-AA-0003": "excluded",
                                         "TCGA-AA-0004": "excluded", "TCGA-ZZ-0009": "excluded"}
    assert table.loc["TCGA-AA-0003", "reason"] == "negative survival time (-4 days)"  # the first reason is kept
    assert table.loc["TCGA-AA-0004", "reason"] == "no modality (no slide, prot or meth data)"
    assert table.loc["TCGA-ZZ-0009", "reason"] == "no clinical record"
    out = tmp_path / "clinical.parquet"
    written = write_tabular_survival_table(clinical, omics, out, slides=slides)
    pd.testing.assert_frame_equal(pd.read_parquet(out), written, check_dtype=False)


def test_snakemake_tabular_rules(demo_cohort, demo_truth, tmp_path):
    """The tabular rules on the generated cohort: a proteome table and a clinical table replace the GDC ones."""
    raw = Path(demo_cohort["out_dir"])
    cases = demo_truth["case_submitter_id"].tolist()
    prot = pd.DataFrame({"case_id": cases[:5], "P1": np.arange(5.0), "empty": np.nan})
    _save(prot, tmp_path / "prot.csv")
    clinical = demo_truth[["case_submitter_id", "time", "event"]].rename(columns={"case_submitter_id": "case_id"})
    _save(clinical, tmp_path / "clin.tsv")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["cohort_files"] = []
    config["cohorts"] = {"byo": {"data_dir": str(raw), "sample_sheet": demo_cohort["sample_sheet"],
                                 "manifest": demo_cohort["manifest"], "clinical": demo_cohort["clinical"],
                                 "omics_tables": {"proteome": str(tmp_path / "prot.csv")},
                                 "clinical_table": str(tmp_path / "clin.tsv")}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    res = "results/byo"
    run = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                          "--configfile", str(tmp_path / "config.yaml"), "--cores", "1",
                          f"{res}/clinical.parquet", f"{res}/omics/proteome.parquet"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    proteome = pd.read_parquet(tmp_path / res / "omics" / "proteome.parquet")
    assert list(proteome.index) == sorted(cases[:5]) and list(proteome.columns) == ["P1"]
    table = pd.read_parquet(tmp_path / res / "clinical.parquet").set_index("case_id")
    assert sorted(table.index) == sorted(cases) and (table["status"] == "ok").all()
    assert table.loc[cases[:5], "n_proteome_files"].tolist() == [1] * 5
    np.testing.assert_array_equal(table.loc[cases, "time"], demo_truth["time"])


# ---------------------------------------------------------------------------------------------
# PORPOISE / MCAT tables


def porpoise_frame(n: int = 12, seed: int = 0) -> pd.DataFrame:
    """A PORPOISE-layout table: one row per slide (every third patient has two), an unnamed index,
    patient columns, then *_rnaseq (z-scores), *_cnv (-2..2) and *_mut (0/1) features."""
    rng = np.random.default_rng(seed)
    ids = [f"TCGA-AB-{i:04d}" for i in range(n)]
    patients = pd.DataFrame({"case_id": ids, "age": rng.integers(30, 80, n), "site": "AB",
                             "survival_months": np.round(rng.exponential(30, n), 2),
                             "censorship": (rng.random(n) < 0.6).astype(int), "is_female": rng.integers(0, 2, n),
                             "oncotree_code": "CCRCC", "train": 1,
                             **{f"G{j}_rnaseq": np.round(rng.normal(size=n), 4) for j in range(4)},
                             **{f"G{j}_cnv": rng.integers(-2, 3, n) for j in range(3)},
                             **{f"TP53_mut" if j == 0 else f"M{j}_mut": rng.integers(0, 2, n) for j in range(2)}})
    rows = patients.loc[np.repeat(np.arange(n), [2 if i % 3 == 0 else 1 for i in range(n)])].reset_index(drop=True)
    rows.insert(1, "slide_id", [f"{c}-01Z-00-DX{k}.svs" for k, c in enumerate(rows["case_id"])])
    return rows


@pytest.mark.parametrize("name", ["tcga_x_all_clean.csv.zip", "tcga_x_all_clean.csv"])
def test_porpoise_table_by_hand(tmp_path, name):
    frame = porpoise_frame()
    path = tmp_path / name
    frame.to_csv(path)  # with the unnamed index column, as published
    assert porpoise_modalities(path) == ["rna", "cnv", "mutations"]
    omics, clinical = read_porpoise_table(path)
    assert sorted(omics) == ["cnv", "mutations", "rna"]
    patients = frame.drop_duplicates("case_id").set_index("case_id").sort_index()
    assert list(omics["rna"].columns) == ["G0", "G1", "G2", "G3"] and list(omics["mutations"].columns) == ["TP53", "M1"]
    for m, suffix in (("rna", "_rnaseq"), ("cnv", "_cnv"), ("mutations", "_mut")):
        table = omics[m]
        assert table.index.name == "case_id" and list(table.index) == list(patients.index)  # one row per patient
        np.testing.assert_array_equal(table.to_numpy(), patients[[c + suffix for c in table.columns]].to_numpy())
    clin = clinical.set_index("case_id")
    assert list(clinical.columns) == read_clinical_table(_save(CLINICAL, tmp_path / "c.tsv")).columns.tolist()
    np.testing.assert_allclose(clin["time"], patients["survival_months"] * DAYS_PER_MONTH)
    assert (clin["event"] == 1 - patients["censorship"]).all() and (clin["status"] == "ok").all()
    assert DAYS_PER_MONTH == pytest.approx(365.25 / 12, abs=0.01)


def test_porpoise_table_with_one_modality(tmp_path):
    frame = porpoise_frame()
    frame = frame.drop(columns=[c for c in frame.columns if c.endswith(("_cnv", "_mut"))])
    frame.to_csv(tmp_path / "rna_only.csv", index=False)
    omics, _ = read_porpoise_table(tmp_path / "rna_only.csv")
    assert list(omics) == ["rna"]


def test_porpoise_table_errors_name_the_file(tmp_path):
    def bad(frame, name, message):
        frame.to_csv(tmp_path / name)
        with pytest.raises(ValueError, match=message):
            read_porpoise_table(tmp_path / name)

    frame = porpoise_frame()
    bad(frame.drop(columns="censorship"), "nocens.csv", r"nocens\.csv: missing column\(s\) censorship")
    bad(frame.drop(columns=[c for c in frame.columns if c.endswith(("_rnaseq", "_cnv", "_mut"))]), "nofeat.csv",
        r"nofeat\.csv: no feature column")
    clash = frame.copy()
    clash.loc[1, "G2_rnaseq"] += 1.0  # row 1 is the second slide of patient 0000
    bad(clash, "clash.csv", r"clash\.csv: rows of one patient disagree for 1 case\(s\): TCGA-AB-0000 "
                            r"\(in column\(s\) G2_rnaseq\)")
    words = frame.astype({"G1_cnv": object})
    words.loc[words["case_id"] == "TCGA-AB-0003", "G1_cnv"] = "amp"
    bad(words, "words.csv", r"words\.csv \(cnv\): non-numeric values in 1 column\(s\): G1")
    nan = frame.copy()
    nan.loc[nan["case_id"] == "TCGA-AB-0004", "survival_months"] = np.nan
    bad(nan, "nan.csv", r"nan\.csv: missing or non-numeric values in column\(s\) survival_months for 1 case\(s\): "
                        r"TCGA-AB-0004")
    bad(frame.assign(censorship=2), "cens2.csv", r"cens2\.csv: censorship must be 0 or 1")
    with pytest.raises(FileNotFoundError, match=r"absent\.csv"):
        read_porpoise_table(tmp_path / "absent.csv")


def test_write_porpoise_tables(tmp_path):
    path = tmp_path / "t.csv.zip"
    porpoise_frame().to_csv(path)
    outs = {m: tmp_path / "tables" / f"{m}.parquet" for m in ("rna", "cnv", "mutations")}
    omics = write_porpoise_tables(path, outs, tmp_path / "tables" / "clinical.tsv")
    for m, out in outs.items():  # the files the tabular rules then read as omics_tables
        pd.testing.assert_frame_equal(read_omics_table(out), omics[m], check_index_type=False)
    _, clinical = read_porpoise_table(path)
    pd.testing.assert_frame_equal(read_clinical_table(tmp_path / "tables" / "clinical.tsv"), clinical)
    with pytest.raises(ValueError, match="planned for"):
        write_porpoise_tables(path, {"rna": outs["rna"]}, tmp_path / "c.tsv")


def test_porpoise_cohort_plans_in_the_dag(tmp_path):
    """A cohort given only as `porpoise_table` plans its split, the tabular rules and training over
    n_folds × n_repeats folds; giving clinical_table too is an error naming the file."""
    porpoise_frame(n=20).to_csv(tmp_path / "kirc.csv.zip")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["cohort_files"] = []
    config["splits"].update(n_folds=2, n_repeats=3)
    config["train"].update(models=["healnet", "coxnet"], modalities=["rna", "cnv", "mutations"])
    cohort = tmp_path / "kirc.yaml"
    cohort.write_text(yaml.safe_dump({"porpoise_table": str(tmp_path / "kirc.csv.zip")}))
    config["cohort_files"] = [str(cohort)]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
           "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", "-n", "results/kirc/metrics.tsv",
           "--quiet", "rules"]
    dry = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    out = dry.stdout + dry.stderr
    for rule, count in (("porpoise_kirc", 1), ("tabular_omics_kirc_rna", 1), ("tabular_omics_kirc_mutations", 1),
                        ("tabular_clinical", 1), ("splits", 1), ("train", 2 * 2 * 3)):
        assert re.search(rf"^{rule}\s+{count}$", out, re.M), out
    cohort.write_text(yaml.safe_dump({"porpoise_table": str(tmp_path / "kirc.csv.zip"),
                                      "clinical_table": str(tmp_path / "c.tsv")}))
    dry = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert dry.returncode != 0 and f"{cohort}: cohort 'kirc' gives both porpoise_table and clinical_table" in (
        dry.stdout + dry.stderr)


def test_porpoise_cohort_runs_the_default_target_to_qc(tmp_path):
    """A cohort of tables only (`porpoise_table`: no sample sheet, manifest, data_dir or slides)
    plans the whole default target (qc and attention maps included) and runs to qc/cases.tsv
    (which needs no training): it accounts for every patient of the table, slides.tsv is empty,
    and each case's test fold is its fold of repeat 0."""
    import json

    n = 40
    porpoise_frame(n=n, seed=2).to_csv(tmp_path / "kirc.csv.zip")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["cohorts"] = {}
    config["splits"].update(n_folds=2, n_repeats=2)
    config["train"].update(models=["healnet"], modalities=["rna", "cnv", "mutations"], epochs=1, patience=1)
    config["train"]["model"].update(depth=1, num_latents=4, latent_dim=16, latent_heads=2)
    cohort = tmp_path / "kirc.yaml"
    cohort.write_text(yaml.safe_dump({"porpoise_table": str(tmp_path / "kirc.csv.zip")}))
    config["cohort_files"] = [str(cohort)]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
           "--configfile", str(tmp_path / "config.yaml"), "--cores", "1"]
    dry = subprocess.run(cmd + ["-n", "--quiet", "rules"], capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    out = dry.stdout + dry.stderr
    for rule, count in (("porpoise_kirc", 1), ("tabular_clinical", 1), ("splits", 1), ("train", 4),
                        ("evaluate", 1), ("attention_maps", 1), ("qc", 1), ("all", 1)):
        assert re.search(rf"^{rule}\s+{count}$", out, re.M), out

    run = subprocess.run(cmd + ["results/kirc/qc/cases.tsv", "--quiet"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    res = tmp_path / "results" / "kirc"
    cases = pd.read_csv(res / "qc" / "cases.tsv", sep="\t").set_index("case_id")
    assert sorted(cases.index) == [f"TCGA-AB-{i:04d}" for i in range(n)]
    assert (cases["status"] == "used").all() and (cases["n_slides_usable"] == 0).all()
    assert cases[["has_rna", "has_cnv", "has_mutations"]].all().all()
    slides = pd.read_csv(res / "qc" / "slides.tsv", sep="\t")
    assert slides.empty and "slide_id" in slides.columns
    folds = json.loads((res / "splits.json").read_text())["folds"]
    first = {c: f["fold_in_repeat"] for f in folds if f["repeat"] == 0 for c in f["test"]}
    assert cases["test_fold"].to_dict() == first
