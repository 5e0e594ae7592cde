"""The report's figures and captions: every report() caption of evaluate.smk exists and is valid
reStructuredText, the figures rendered from synthetic results are real images, and
`snakemake --report` builds an HTML report holding them (a screenshot when a headless browser is
installed)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sksurv.metrics import concordance_index_censored

from generators.slide_render import write_svs
from healnet.attention_io import write_attention
from healnet.attention_maps import attention_report
from healnet.evaluate import evaluate_cohort
from preprocessing.tiling import write_coords

REPO = Path(__file__).resolve().parents[1]
SMK = REPO / "workflow" / "rules" / "evaluate.smk"
MODELS = ("healnet", "coxnet", "late-fusion")


def _captions() -> list[Path]:
    text = SMK.read_text()
    names = re.findall(r'caption="\.\./report/([^"]+)"', text)
    assert names, "no report() caption in evaluate.smk"
    return [REPO / "workflow" / "report" / n for n in sorted(set(names))]


def test_captions_exist_and_are_valid_rst():
    from docutils.core import publish_parts

    for path in _captions():
        text = path.read_text()
        assert len(text.split()) >= 15, f"{path.name}: caption too short"
        # raises on any rST warning (level 2) or error
        publish_parts(text, writer="html", settings_overrides={"halt_level": 2, "report_level": 5})


def _image(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    return np.asarray(Image.open(path).convert("RGB"))


def _non_trivial(image: np.ndarray, min_side: int = 200) -> None:
    h, w = image.shape[:2]
    assert min(h, w) >= min_side, image.shape
    assert image.std() > 10
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 30


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Evaluation and attention outputs of three models × three folds on synthetic data; late-fusion
    predicts only the cases whose number is not a multiple of 7 (as if they lacked a modality)."""
    root = tmp_path_factory.mktemp("results")
    rng = np.random.default_rng(0)
    n = 60
    ids = [f"TCGA-AA-{i:04d}" for i in range(n)]
    z = rng.normal(size=n)
    survival = pd.DataFrame({"time": np.round(rng.exponential(np.exp(-z)) * 900) + 1,
                             "event": (rng.random(n) < 0.7).astype(int)}, index=ids)
    splits = [{"train": [c for j, c in enumerate(ids) if j % 3 != k], "val": [], "test": ids[k::3]} for k in range(3)]
    meta, preds, missing = [], [], []
    for i, model in enumerate(MODELS):
        for k, split in enumerate(splits):
            test = survival.loc[split["test"]]
            risk = z[k::3] * (1.5 - 0.5 * i) + rng.normal(size=len(test))
            if model == "late-fusion":
                keep = np.array([int(c[-4:]) % 7 != 0 for c in test.index])
                test, risk = test[keep], risk[keep]
            s = np.cumprod(np.clip(0.9 - 0.05 * risk[:, None], 0.3, 0.99) * np.ones((1, 4)), axis=1)
            d = root / "models" / model / f"fold{k}"
            d.mkdir(parents=True)
            frame = pd.DataFrame({"case_id": test.index, "fold": k, "risk": risk, "time": test["time"],
                                  "event": test["event"], **{f"surv_{j}": s[:, j] for j in range(4)}})
            frame.to_csv(d / "predictions.tsv", sep="\t", index=False)
            (d / "metrics.json").write_text(json.dumps({"fold": k, "bin_edges": [0, 300, 700, 1500, "Infinity"]}))
            pd.concat([frame.assign(scenario=sc, risk=frame["risk"] * f + rng.normal(0, 0.5, len(frame)))
                       for sc, f in (("full", 1.0), ("no_wsi", 0.7), ("no_rna", 0.3), ("mixed", 0.5))]
                      ).to_csv(d / "missing.tsv", sep="\t", index=False)
            meta.append(str(d / "metrics.json"))
            preds.append(str(d / "predictions.tsv"))
            missing.append(str(d / "missing.tsv"))
    (root / "oracle.json").write_text(json.dumps({"c_index": 0.8123}))
    evaluate_cohort(meta, preds, metrics_out=root / "metrics.tsv", summary_out=root / "metrics_summary.tsv",
                    km_out=root / "km.png", missing_out=root / "missing_modalities.tsv", fold_missing=missing,
                    all_cases_out=root / "metrics_all_cases.tsv", headline_out=root / "headline.rst",
                    survival=survival, splits=splits, oracle=root / "oracle.json", n_boot=200, title="synthetic")
    # one slide per case for the two extreme cases, attention rising from left to right
    slide_paths, patch_files, wsi, coords = {}, {}, {}, {}
    yy, xx = np.mgrid[0:768, 0:1024]
    rgb = np.stack([200 + 30 * np.sin(xx / 40), 150 + 40 * np.cos(yy / 50), np.full_like(xx, 200.0)], -1).astype(np.uint8)
    grid = np.array([(x, y) for y in range(0, 768, 256) for x in range(0, 1024, 256)])
    for case in (ids[0], ids[1]):
        sid = f"{case}-01Z-00-DX1"
        write_svs(root / f"{sid}.svs", rgb, mpp=0.5, app_mag=20)
        write_coords(root / f"{sid}.h5", grid, {"width": 1024, "height": 768, "mpp": 0.5}, patch_size=256, size0=256,
                     target_mpp=0.5)
        slide_paths[sid], patch_files[sid] = str(root / f"{sid}.svs"), str(root / f"{sid}.h5")
        wsi[case], coords[case] = grid[:, 0] / 1024.0 + 0.01, grid
    genes = [f"ENSG{i:011d}" for i in range(6)]
    write_attention(root / "models" / "healnet" / "fold0" / "attention.npz", case_ids=ids[0::3], wsi=wsi, coords=coords,
                    genes={"rna": genes}, omics={"rna": {c: rng.dirichlet(np.ones(6)) for c in ids[0::3]}})
    pd.DataFrame({"gene_id": genes, "gene_name": ["TP53", "KRAS", "EGFR", "MYC", "PTEN", "BRCA1"]}).to_csv(
        root / "rna_genes.tsv", sep="\t", index=False)
    attention_report([root / "models" / "healnet" / "fold0" / "attention.npz"], preds[:3], slide_paths, patch_files,
                     root / "attention" / "heatmaps", root / "attention" / "genes.tsv", gene_names=root / "rna_genes.tsv",
                     n_cases=4, max_side=512)
    return root


def test_figures_are_real_images(results):
    km = _image(results / "km.png")
    _non_trivial(km, 300)
    assert km.shape[1] > 2.5 * km.shape[0]  # three panels side by side
    maps = sorted((results / "attention" / "heatmaps").glob("*.png"))
    assert len(maps) == 2  # the two cases with slide attention
    heat = _image(maps[0])
    _non_trivial(heat, 300)
    table = pd.read_csv(results / "metrics_summary.tsv", sep="\t").set_index("model")
    assert set(table.index) == set(MODELS)
    # the summary's c-index: scikit-survival per fold on the cases every model predicted, averaged
    folds = {(m, k): pd.read_csv(results / "models" / m / f"fold{k}" / "predictions.tsv", sep="\t")
             for m in MODELS for k in range(3)}
    for model in MODELS:
        per_fold = []
        for k in range(3):
            common = set.intersection(*(set(folds[m, k]["case_id"]) for m in MODELS))
            p = folds[model, k][folds[model, k]["case_id"].isin(common)]
            assert len(common) < len(folds["healnet", k]) and all(int(c[-4:]) % 7 for c in common)
            per_fold.append(concordance_index_censored(p["event"].astype(bool), p["time"], p["risk"])[0])
        assert table.loc[model, "harrell_mean"] == pytest.approx(np.mean(per_fold), abs=1e-4)
    missing = pd.read_csv(results / "missing_modalities.tsv", sep="\t")
    assert list(missing[missing["model"] == "healnet"]["scenario"]) == ["full", "no_rna", "no_wsi", "mixed"]
    genes = pd.read_csv(results / "attention" / "genes.tsv", sep="\t")
    assert genes["rank"].tolist() == list(range(1, 7)) and genes["gene_name"].notna().all()


def _mini_workflow(results: Path, work: Path) -> Path:
    """A Snakefile whose one rule publishes the evaluation outputs with the pipeline's captions and
    whose report text is the pipeline's workflow.rst."""
    report_dir = REPO / "workflow" / "report"
    work.mkdir()
    (work / "config.yaml").write_text("tiling: {target_mpp: 0.5}\nfeatures: {encoder: demo-cnn}\nsplits: {n_folds: 3}\n")
    (work / "Snakefile").write_text(f'''
configfile: "config.yaml"


report: "{report_dir}/workflow.rst"


rule all:
    input:
        "out/metrics.tsv", "out/missing_modalities.tsv", "out/km.png", "out/heatmaps", "out/genes.tsv",
        "out/headline.rst",

rule publish:
    output:
        metrics=report("out/metrics.tsv", caption="{report_dir}/metrics.rst", category="Results"),
        missing=report("out/missing_modalities.tsv", caption="{report_dir}/missing.rst", category="Results"),
        km=report("out/km.png", caption="{report_dir}/km.rst", category="Results"),
        heatmaps=report(directory("out/heatmaps"), patterns=["{{name}}.png"], caption="{report_dir}/attention.rst",
                        category="Attention"),
        genes=report("out/genes.tsv", caption="{report_dir}/genes.rst", category="Attention"),
        headline=report("out/headline.rst", caption="{report_dir}/headline.rst", category="Results"),
    shell:
        "cp {results}/metrics.tsv {{output.metrics}} && cp {results}/missing_modalities.tsv {{output.missing}} && "
        "cp {results}/km.png {{output.km}} && cp -r {results}/attention/heatmaps {{output.heatmaps}} && "
        "cp {results}/attention/genes.tsv {{output.genes}} && cp {results}/headline.rst {{output.headline}}"
''')
    return work


def _first_page(html: str) -> str:
    """The HTML of the report's landing page: Snakemake 9 embeds it as ``var workflow_desc = "...";``."""
    match = re.search(r"var workflow_desc = (\".*?(?<!\\)\");", html, flags=re.S)
    assert match, "no workflow_desc in the report"
    return json.loads(match.group(1))


def _headless_browser():
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401

        return "playwright"
    except ImportError:
        pass
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_snakemake_report_holds_the_figures(results, tmp_path):
    work = _mini_workflow(results, tmp_path / "wf")
    base = [sys.executable, "-m", "snakemake", "-s", str(work / "Snakefile"), "-d", str(work), "--cores", "1"]
    run = subprocess.run(base, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    html = work / "report.html"
    run = subprocess.run(base + ["--report", str(html)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    text = html.read_text(errors="replace")
    assert len(text) > 50_000
    for phrase in ("Uno", "Kaplan", "percentile rank", "n_cases", "mixed"):  # from each caption
        assert phrase in text, phrase
    # the images are embedded (base64 data URIs of the PNGs)
    assert text.count("data:image/png;base64") >= 2 or text.count("iVBORw0KGgo") >= 2
    # the first page leads with the headline table: c-index with CI, difference to HEALNet, oracle
    first = _first_page(text)
    summary = pd.read_csv(results / "metrics_summary.tsv", sep="\t").set_index("model")
    assert "<table" in first and first.index("<table") < first.index("HEALNet survival pipeline")
    table = first[first.index("<table"):first.index("</table>")]
    assert table.count("<tr") == 1 + len(MODELS)
    for model in MODELS:
        row = summary.loc[model]
        assert f"{row.harrell_mean:.3f} ({row.harrell_ci_low:.3f} to {row.harrell_ci_high:.3f})" in table
        if model != "healnet":
            assert f"{row.delta_vs_reference:+.3f} ({row.delta_ci_low:+.3f} to {row.delta_ci_high:+.3f})" in table
            assert f"{row.delta_p:.3f}" in table
    assert "Oracle c-index" in first and "0.812" in first and "0.5 µm/px" in first

    browser = _headless_browser()
    if browser is None:
        pytest.skip("no headless browser (playwright or chromium) installed: report HTML checked, no screenshot")
    shot = tmp_path / "report.png"
    if browser == "playwright":
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            system = shutil.which("chromium")  # Debian's: Playwright's own browsers are never downloaded
            page = p.chromium.launch(executable_path=system, args=["--no-sandbox"] if system else None).new_page(
                viewport={"width": 1280, "height": 900})
            page.goto(html.as_uri())
            page.wait_for_timeout(2000)
            page.screenshot(path=str(shot))
    else:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                        "--window-size=1280,900", html.as_uri()], capture_output=True, timeout=120)
    _non_trivial(_image(shot), 300)


def test_summary_prints_the_tables(results):
    from healnet.summary import summarise

    text = summarise(results.parent)
    assert f"== cohort {results.name} ==" in text
    for word in ("harrell", "uno", "ibs", "logrank_p", "missing modalities", "no_rna", "attention/", "harrell_ci_low",
                 "delta_vs_reference", "to healnet", "n_left_out", "metrics_all_cases.tsv"):
        assert word in text, word
    assert "no finished cohort" in summarise(results / "models")
