"""Behavioural tests of the synthetic cohort generator (generators.demo).

Each test checks the written files against something computed independently of the generator:
OpenSlide's reading of the slides, hashlib, pandas, sksurv, pixel colours."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import openslide
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sksurv.metrics import concordance_index_censored

from generators import demo
from generators.omics_files import SIGNAL_GENES
from preprocessing.truth import read_truth_tumour

TINY = dict(n_cases=8, slide_size=(1024, 768), n_genes=200, workers=1)
MPP = 0.5
STAR_HEADER = ("gene_id\tgene_name\tgene_type\tunstranded\tstranded_first\tstranded_second\t"
               "tpm_unstranded\tfpkm_unstranded\tfpkm_uq_unstranded")
SHEET_HEADER = "File ID\tFile Name\tData Category\tData Type\tProject ID\tCase ID\tSample ID\tSample Type"
SLIDE_NAME = re.compile(r"^TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}-01Z-00-DX[12]\."
                        r"[0-9A-F]{8}(-[0-9A-F]{4}){3}-[0-9A-F]{12}\.svs$")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> dict:
    return demo.generate_cohort(tmp_path_factory.mktemp("tiny"), seed=7, **TINY)


@pytest.fixture(scope="module")
def sheet(cohort) -> pd.DataFrame:
    return pd.read_csv(cohort["sample_sheet"], sep="\t")


@pytest.fixture(scope="module")
def truth(cohort) -> pd.DataFrame:
    return pd.read_csv(cohort["truth"], sep="\t")


def _path(cohort: dict, row) -> Path:
    return Path(cohort["out_dir"]) / row["File ID"] / row["File Name"]


def _slides(cohort, sheet) -> list[tuple[str, Path]]:
    rows = sheet[sheet["Data Type"] == "Slide Image"]
    return [(r["Case ID"], _path(cohort, r)) for _, r in rows.iterrows()]


def _is_glass(rgb: np.ndarray) -> np.ndarray:
    """Near-white, unsaturated pixels."""
    rgb = rgb.astype(int)
    return (rgb.min(-1) > 215) & (rgb.max(-1) - rgb.min(-1) < 20)


def _is_stain(rgb: np.ndarray) -> np.ndarray:
    """H&E-like pixels: pink/purple, i.e. green clearly the lowest channel."""
    rgb = rgb.astype(int)
    return (rgb[..., 1] < rgb[..., 0] - 15) & (rgb[..., 1] < rgb[..., 2] - 15)


def _level(slide: openslide.OpenSlide, level: int) -> np.ndarray:
    return np.asarray(slide.read_region((0, 0), level, slide.level_dimensions[level]).convert("RGB"))


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _all_md5(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): _md5(p) for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------- slides


def test_slides_are_aperio_pyramids(cohort, sheet):
    slides = _slides(cohort, sheet)
    assert len(slides) == cohort["n_slides"] > 0
    W, H = TINY["slide_size"]
    for _, path in slides:
        assert SLIDE_NAME.match(path.name), path.name
        with openslide.OpenSlide(path) as s:
            p = s.properties
            assert p["openslide.vendor"] == "aperio"
            assert float(p["openslide.mpp-x"]) == MPP and float(p["openslide.mpp-y"]) == MPP
            assert float(p["openslide.objective-power"]) == 20
            assert s.level_count >= 3
            assert s.dimensions == (W, H)
            assert np.allclose(s.level_downsamples[:3], (1, 4, 16), rtol=0.02)
            assert s.level_dimensions[1] == (W // 4, H // 4)
            thumb = np.asarray(s.associated_images["thumbnail"].convert("RGB"))
            assert thumb.shape[1] / thumb.shape[0] == pytest.approx(W / H, rel=0.02)
            assert (_is_glass(thumb) | _is_stain(thumb)).mean() > 0.97


def test_slide_pixels_are_tissue_or_glass(cohort, sheet, truth):
    blank_cases = set(truth.loc[truth.n_blank_slides > 0, "case_submitter_id"])
    checked = 0
    for case, path in _slides(cohort, sheet):
        if case in blank_cases:
            continue
        with openslide.OpenSlide(path) as s:
            low = _level(s, 2)
            glass, stain = _is_glass(low), _is_stain(low)
            assert (glass | stain).mean() > 0.97  # nothing but glass and H&E colours
            assert 0.22 < stain.mean() < 0.55  # tissue covers ~30-45 % of the slide
            # a level-0 read deep inside tissue is stained, one inside glass is near-white
            inner = np.argwhere(_erode(stain, 2))
            y, x = inner[len(inner) // 2] * 16
            tissue = np.asarray(s.read_region((int(x), int(y)), 0, (32, 32)).convert("RGB"))
            r, g, b = tissue.reshape(-1, 3).mean(0)
            assert g < r - 30 and g < b - 30 and g < 180
            y, x = np.argwhere(_erode(glass, 2))[0] * 16
            bg = np.asarray(s.read_region((int(x), int(y)), 0, (32, 32)).convert("RGB")).reshape(-1, 3)
            assert np.allclose(bg.mean(0), 240, atol=5) and bg.std(0).max() < 6
        checked += 1
    assert checked > 0


def _erode(mask: np.ndarray, r: int) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_erosion(mask, iterations=r)


def test_blank_slide_has_no_tissue(cohort, sheet, truth):
    blank_cases = set(truth.loc[truth.n_blank_slides > 0, "case_submitter_id"])
    assert len(blank_cases) == cohort["n_blank_slides"] == 1
    blanks = [p for case, p in _slides(cohort, sheet) if case in blank_cases]
    assert len(blanks) == 1
    with openslide.OpenSlide(blanks[0]) as s:
        for level in (0, 2):
            px = _level(s, level)
            assert _is_glass(px).all() and not _is_stain(px).any()
    # the blank slide belongs to a case that has RNA, so the case still has data
    blank_rows = sheet[sheet["Case ID"].isin(blank_cases)]
    assert (blank_rows["Data Type"] == "Gene Expression Quantification").any()


# ---------------------------------------------------------------------------------------------- GDC files


def test_manifest_matches_files(cohort):
    root = Path(cohort["out_dir"])
    text = Path(cohort["manifest"]).read_text()
    assert text.splitlines()[0] == "id\tfilename\tmd5\tsize\tstate"
    man = pd.read_csv(cohort["manifest"], sep="\t")
    assert len(man) == cohort["n_slides"] + cohort["n_rna"] + cohort["n_cnv"] + cohort["n_maf"]
    for r in man.itertuples():
        p = root / r.id / r.filename
        assert hashlib.md5(p.read_bytes()).hexdigest() == r.md5
        assert p.stat().st_size == r.size
    assert set(man.state) == {"released"}
    # every data file on disk is listed, and nothing half-written is left behind
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.parent != root}
    assert on_disk == {f"{r.id}/{r.filename}" for r in man.itertuples()}
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_sample_sheet(cohort, sheet):
    assert Path(cohort["sample_sheet"]).read_text().splitlines()[0] == SHEET_HEADER
    man = pd.read_csv(cohort["manifest"], sep="\t")
    assert sorted(sheet["File ID"]) == sorted(man["id"])
    kinds = set(zip(sheet["Data Category"], sheet["Data Type"]))
    assert kinds == {("Biospecimen", "Slide Image"),
                     ("Transcriptome Profiling", "Gene Expression Quantification"),
                     ("Copy Number Variation", "Gene Level Copy Number"),
                     ("Simple Nucleotide Variation", "Masked Somatic Mutation")}
    single = sheet[sheet["Data Type"].isin(["Slide Image", "Gene Expression Quantification"])]
    assert (single["Sample ID"] == single["Case ID"] + "-01A").all()
    assert set(single["Sample Type"]) == {"Primary Tumor"} and set(sheet["Project ID"]) == {"TCGA-DEMO"}
    # copy number and mutations come from a tumour/normal pair: the sheet lists both, as the GDC's does
    paired = sheet[~sheet.index.isin(single.index)]
    assert len(paired) > 0
    for _, r in paired.iterrows():
        case = r["Case ID"].split(", ")[0]
        assert r["Case ID"] == f"{case}, {case}"
        assert sorted(r["Sample ID"].split(", ")) == [f"{case}-01A", f"{case}-10A"]
        assert sorted(r["Sample Type"].split(", ")) == ["Blood Derived Normal", "Primary Tumor"]
    slides = sheet[sheet["Data Type"] == "Slide Image"]
    assert all(n.startswith(c + "-01Z-00-DX") for n, c in zip(slides["File Name"], slides["Case ID"]))


def test_star_counts_layout(cohort):
    assert len(cohort["rna"]) == cohort["n_rna"] > 0
    for f in cohort["rna"]:
        assert f.endswith(".rna_seq.augmented_star_gene_counts.tsv")
        lines = Path(f).read_text().split("\n")
        assert lines[0] == "# gene-model: GENCODE v36"
        assert lines[1] == STAR_HEADER
        for line, key in zip(lines[2:6], ("N_unmapped", "N_multimapping", "N_noFeature", "N_ambiguous")):
            fields = line.split("\t")
            assert fields[0] == key and len(fields) == 9
            assert fields[1] == fields[2] == "" and fields[6:] == ["", "", ""]
            assert all(v.isdigit() for v in fields[3:6])
        df = pd.read_csv(f, sep="\t", comment="#")
        assert list(df.columns) == STAR_HEADER.split("\t")
        genes = df[df.gene_id.str.startswith("ENSG")]
        assert len(df) == len(genes) + 4 and len(genes) == TINY["n_genes"]
        assert genes.gene_id.str.fullmatch(r"ENSG\d{11}\.\d+").all() and genes.gene_id.is_unique
        assert set(genes.gene_type) <= {"protein_coding", "lncRNA"}
        assert set(SIGNAL_GENES) <= set(genes.gene_name)
        assert abs(genes.tpm_unstranded.sum() - 1e6) <= 1
        assert (genes.unstranded == genes.stranded_first + genes.stranded_second).all()
        # TPM, FPKM and FPKM-UQ are all counts / length up to a per-file constant
        x = genes[genes.unstranded >= 50]
        for col in ("fpkm_unstranded", "fpkm_uq_unstranded"):
            ratio = x.tpm_unstranded / x[col]
            assert ratio.std() / ratio.mean() < 1e-3


CNV_HEADER = "gene_id\tgene_name\tchromosome\tstart\tend\tcopy_number\tmin_copy_number\tmax_copy_number"


def test_gene_level_copy_number_layout(cohort, truth):
    assert len(cohort["cnv"]) == cohort["n_cnv"] == truth.has_cnv.sum()
    assert 0 < cohort["n_cnv"] < TINY["n_cases"]  # some cases have none
    star = pd.read_csv(cohort["rna"][0], sep="\t", comment="#")
    for f in cohort["cnv"]:
        assert re.fullmatch(r"TCGA-DEMO\.[0-9a-f-]{36}\.ascat3\.gene_level_copy_number\.v36\.tsv", Path(f).name)
        assert Path(f).read_text().split("\n")[0] == CNV_HEADER
        df = pd.read_csv(f, sep="\t")
        assert list(df.gene_id) == list(star.gene_id[star.gene_id.str.startswith("ENSG")])  # same genes as STAR
        assert df.chromosome.str.fullmatch(r"chr(\d+|X)").all() and (df.end > df.start).all()
        cn = df.dropna(subset=["copy_number"])
        assert len(cn) > 0.9 * len(df) and (cn.copy_number % 1 == 0).all() and cn.copy_number.between(0, 4).all()
        assert ((cn.min_copy_number <= cn.copy_number) & (cn.copy_number <= cn.max_copy_number)).all()


def test_masked_somatic_mutation_layout(cohort, truth):
    import gzip

    assert len(cohort["maf"]) == cohort["n_maf"] == truth.has_maf.sum()
    assert 0 < cohort["n_maf"] < TINY["n_cases"]
    cases = set(truth.case_submitter_id)
    n_non_silent = []
    for f in cohort["maf"]:
        assert f.endswith(".wxs.aliquot_ensemble_masked.maf.gz")
        lines = gzip.decompress(Path(f).read_bytes()).decode().split("\n")
        assert lines[0] == "#version gdc-1.0.0" and all(x.startswith("#") for x in lines[:5])
        df = pd.read_csv(f, sep="\t", comment="#")
        assert {"Hugo_Symbol", "Variant_Classification", "Tumor_Sample_Barcode", "Chromosome"} <= set(df.columns)
        assert df.Tumor_Sample_Barcode.str.fullmatch(r"TCGA-\w\w-\w{4}-01A-11D-A00D-09").all()
        assert df.Tumor_Sample_Barcode.str[:12].isin(cases).all() and df.Tumor_Sample_Barcode.nunique() <= 1
        n_non_silent.append(int(df.Variant_Classification.isin(["Missense_Mutation", "Nonsense_Mutation",
                                                                 "Frame_Shift_Del", "Frame_Shift_Ins", "In_Frame_Del",
                                                                 "Splice_Site"]).sum()))
    assert 0 in n_non_silent and max(n_non_silent) > 0  # one case has only silent variants


def test_cnv_and_maf_leave_slides_rna_and_oracle_unchanged(cohort, tmp_path):
    """Copy number and mutations have their own random streams: without them, every other file is identical."""
    bare = demo.generate_cohort(tmp_path / "bare", seed=7, p_no_cnv=1.0, p_no_maf=1.0, **TINY)
    assert bare["n_cnv"] == bare["n_maf"] == 0
    assert bare["oracle_c_index"] == cohort["oracle_c_index"]
    for key in ("clinical", "oracle"):
        assert _md5(Path(bare[key])) == _md5(Path(cohort[key]))
    names = lambda paths: sorted(Path(p).name for p in paths)  # noqa: E731
    assert names(bare["slides"]) == names(cohort["slides"]) and names(bare["rna"]) == names(cohort["rna"])
    assert sorted(_md5(Path(p)) for p in bare["slides"] + bare["rna"]) == \
        sorted(_md5(Path(p)) for p in cohort["slides"] + cohort["rna"])


def test_clinical_export(cohort, truth):
    raw = pd.read_csv(cohort["clinical"], sep="\t", dtype=str, keep_default_na=False)
    for col in ("case_id", "case_submitter_id", "project_id", "age_at_index", "gender", "vital_status",
                "days_to_death", "days_to_last_follow_up", "ajcc_pathologic_stage", "treatment_type"):
        assert col in raw.columns
    assert not (raw == "").any().any()  # missing is always '--
    assert (raw == "'--").any().any()
    assert set(raw.vital_status) <= {"Alive", "Dead"}
    dead, alive = raw[raw.vital_status == "Dead"], raw[raw.vital_status == "Alive"]
    assert dead.days_to_death.str.fullmatch(r"\d+").all()
    assert (alive.days_to_death == "'--").all() and alive.days_to_last_follow_up.str.fullmatch(r"\d+").all()
    # cases on two rows differ only in the treatment
    assert raw.case_submitter_id.nunique() == TINY["n_cases"]
    dup = raw[raw.case_submitter_id.duplicated(keep=False)]
    assert len(dup) > 0
    for _, g in dup.groupby("case_submitter_id"):
        assert set(g.treatment_type) == {"Radiation Therapy, NOS", "Pharmaceutical Therapy, NOS"}
        assert len(g.drop(columns=["treatment_type", "treatment_or_therapy"]).drop_duplicates()) == 1
    # survival in the export agrees with the truth
    one = raw.drop_duplicates("case_submitter_id").set_index("case_submitter_id")
    t = truth.set_index("case_submitter_id").loc[one.index]
    assert ((one.vital_status == "Dead") == (t.event == 1)).all()
    obs = np.where(one.vital_status == "Dead", one.days_to_death, one.days_to_last_follow_up).astype(int)
    assert (obs == t.time.to_numpy()).all() and (obs >= 1).all()


def test_oracle_matches_truth(cohort, truth):
    oracle = json.loads(Path(cohort["oracle"]).read_text())
    c = concordance_index_censored(truth.event.astype(bool), truth.time.astype(float), truth.risk)[0]
    assert oracle["c_index"] == pytest.approx(c, abs=1e-12) == cohort["oracle_c_index"]
    assert oracle["n_cases"] == len(truth) == TINY["n_cases"]
    assert oracle["n_events"] == truth.event.sum() and oracle["seed"] == 7
    assert truth.tumour_fraction.between(0.05, 0.9).all()


def test_modalities(cohort, sheet, truth):
    slides = sheet[sheet["Data Type"] == "Slide Image"].groupby("Case ID").size()
    rna = sheet[sheet["Data Type"] == "Gene Expression Quantification"].groupby("Case ID").size()
    cases = truth.case_submitter_id
    n_slides = slides.reindex(cases, fill_value=0).to_numpy()
    n_rna = rna.reindex(cases, fill_value=0).to_numpy()
    assert ((n_slides > 0) | (n_rna > 0)).all()  # every case has at least one modality
    assert (n_slides == 0).any() and (n_rna == 0).any() and (n_slides == 2).any()
    assert n_rna.max() == 1
    assert (n_slides == truth.n_slides).all() and (n_rna == truth.has_rna).all()


# ---------------------------------------------------------------------------------------------- determinism


def test_deterministic(cohort, tmp_path):
    root = Path(cohort["out_dir"])
    ref = _all_md5(root)
    # same seed, other process count, via the CLI: byte-identical
    argv = ["--out", str(tmp_path / "again"), "--cases", "8", "--seed", "7",
            "--slide-size", "1024", "768", "--genes", "200", "--workers", "2"]
    assert demo.main(argv) == 0
    assert _all_md5(tmp_path / "again") == ref
    other = demo.generate_cohort(tmp_path / "other", seed=8, **TINY)
    other_md5 = _all_md5(Path(other["out_dir"]))
    assert other_md5.keys() != ref.keys()  # new UUIDs
    assert other_md5["clinical.tsv"] != ref["clinical.tsv"]


# ---------------------------------------------------------------------------------------------- planted signal


def test_signal_in_slides_and_rna(tmp_path):
    res = demo.generate_cohort(tmp_path, n_cases=30, seed=3, slide_size=(512, 384), n_genes=60,
                               n_blank_slides=0, workers=1)
    truth = pd.read_csv(res["truth"], sep="\t").set_index("case_submitter_id")
    sheet = pd.read_csv(res["sample_sheet"], sep="\t")
    dark, tf = [], []
    for _, r in sheet[sheet["Data Type"] == "Slide Image"].iterrows():
        with openslide.OpenSlide(_path(res, r)) as s:
            px = np.asarray(s.get_thumbnail((128, 128)).convert("RGB"))
        tissue = _is_stain(px)
        dark.append(255 - px[tissue].mean())
        tf.append(truth.loc[r["Case ID"], "tumour_fraction"])
    assert spearmanr(dark, tf)[0] > 0.7
    expr, sig = [], []
    for _, r in sheet[sheet["Data Type"] == "Gene Expression Quantification"].iterrows():
        df = pd.read_csv(_path(res, r), sep="\t", comment="#").set_index("gene_name")
        expr.append(np.log2(df.loc[list(SIGNAL_GENES), "tpm_unstranded"] + 1).mean())
        sig.append(truth.loc[r["Case ID"], "rna_signal"])
    assert np.corrcoef(expr, sig)[0, 1] > 0.7
    # a weak echo in copy number: the signal genes' segment is gained more often when rna_signal is high
    gained, sig = [], []
    for _, r in sheet[sheet["Data Type"] == "Gene Level Copy Number"].iterrows():
        df = pd.read_csv(_path(res, r), sep="\t").set_index("gene_name")
        gained.append(df.loc[list(SIGNAL_GENES), "copy_number"].mean() > 2)
        sig.append(truth.loc[r["Case ID"].split(", ")[0], "rna_signal"])
    gained, sig = np.array(gained), np.array(sig)
    assert 0 < gained.mean() < 1 and sig[gained].mean() > sig[~gained].mean() + 0.5


def test_planted_truth_files(cohort, sheet, truth):
    """truth_tumour.npz marks, per slide, the cells of dark tumour texture (checked against the
    pixels OpenSlide reads, and against truth.tsv), and truth_genes.tsv lists the ten planted genes
    as the STAR files name them."""
    tumour, tissue, cell = read_truth_tumour(cohort["truth_tumour"])
    slides = _slides(cohort, sheet)
    assert set(tumour) == {p.name[: -len(".svs")] for _, p in slides} and cell == 16
    blank_cases = set(truth.loc[truth.n_blank_slides > 0, "case_submitter_id"])
    expected = truth.set_index("case_submitter_id")["slide_tumour_fraction"]
    for case, path in slides:
        sid = path.name[: -len(".svs")]
        assert tumour[sid].shape == tissue[sid].shape == (768 // cell, 1024 // cell)
        if case in blank_cases:
            assert tissue[sid].max() == 0 and tumour[sid].max() == 0
            continue
        assert (tumour[sid] <= tissue[sid] + 1e-6).all()
        assert tumour[sid].sum() / tissue[sid].sum() == pytest.approx(expected[case], abs=0.01)
        with openslide.OpenSlide(path) as s:
            rgb = _level(s, 0).astype(float)
        lum = rgb.mean(-1).reshape(768 // cell, cell, 1024 // cell, cell).mean(axis=(1, 3))
        on, off = tumour[sid] == 1, (tissue[sid] == 1) & (tumour[sid] == 0)
        assert on.sum() > 20 and off.sum() > 20
        assert lum[on].mean() < lum[off].mean() - 15  # the dense, dark nuclei of the planted texture
        assert np.mean(lum[tissue[sid] == 0] > 225) > 0.99  # glass outside the tissue cells (JPEG blurs edges)
    genes = pd.read_csv(cohort["truth_genes"], sep="\t")
    assert sorted(genes["gene_name"]) == sorted(SIGNAL_GENES) and (genes["loading"] > 0).all()
    star = pd.read_csv(cohort["rna"][0], sep="\t", comment="#").set_index("gene_name")
    assert star.loc[genes["gene_name"], "gene_id"].tolist() == genes["gene_id"].tolist()
