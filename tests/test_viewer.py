"""The slide viewer (healnet/viewer.py) built from a generated slide and pipeline-shaped outputs,
then driven in a real headless Chromium (Playwright on Debian's chromium; Playwright's own
browsers are never downloaded): the page loads without console errors, OpenSeadragon reaches the
deepest DeepZoom level, each overlay toggle changes what is drawn, and a click on a known patch
shows its attention and coordinates.  One screenshot is written (``viewer.png`` in the test's
folder, and in ``$HEALNET_SCREENSHOTS`` when set)."""
from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from generators.slide_render import write_svs
from healnet.attention_io import write_attention
from healnet.cli import main
from healnet.viewer import OPENSEADRAGON
from preprocessing.tiling import write_coords

W, H, PATCH, MPP = 2048, 1536, 256, 0.5
CASE, SLIDE = "TCGA-AA-0001", "TCGA-AA-0001-01Z-00-DX1"
REQUIRE = os.environ.get("HEALNET_REQUIRE_BROWSER") == "1"  # CI: a missing browser fails, not skips


def _skip_or_fail(why: str):
    if REQUIRE:
        pytest.fail(f"{why} (HEALNET_REQUIRE_BROWSER=1)")
    pytest.skip(why)


def _slide(path: Path) -> np.ndarray:
    """Glass with an elliptic piece of H&E-like tissue and a blue pen stroke across its right side."""
    yy, xx = np.mgrid[0:H, 0:W]
    rgb = np.full((H, W, 3), 242, np.uint8)
    tissue = ((xx - W / 2) / (0.4 * W)) ** 2 + ((yy - H / 2) / (0.38 * H)) ** 2 < 1
    texture = (np.sin(xx / 9.0) * np.cos(yy / 7.0) > 0.3)
    rgb[tissue] = (222, 160, 200)
    rgb[tissue & texture] = (120, 70, 160)
    pen = (np.abs(xx - 1500 - 0.2 * (yy - 768)) < 30) & (yy > 300) & (yy < 1300)
    rgb[pen] = (40, 70, 190)
    write_svs(path, rgb, mpp=MPP, app_mag=20)
    return tissue


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """A cohort's results laid out as the pipeline writes them, and its viewer written by
    ``healnet view RESULTS/COHORT`` (the rule calls the same functions with its inputs)."""
    if not (OPENSEADRAGON / "openseadragon.min.js").is_file():
        _skip_or_fail("OpenSeadragon is not installed: run `npm ci` in the repository")
    raw = tmp_path_factory.mktemp("raw")
    res = tmp_path_factory.mktemp("results") / "cohort"
    for sub in ("tissue", "patches", "attention/heatmaps", "models/healnet/fold0"):
        (res / sub).mkdir(parents=True)
    tissue = _slide(raw / f"{SLIDE}.svs")
    ring = [[W / 2 + 0.4 * W * np.cos(t), H / 2 + 0.38 * H * np.sin(t)] for t in np.linspace(0, 2 * np.pi, 64)]
    (res / "tissue" / f"{SLIDE}.geojson").write_text(json.dumps({
        "type": "FeatureCollection", "slide": {"slide_id": SLIDE, "path": str(raw / f"{SLIDE}.svs"), "mpp": MPP},
        "features": [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                      "properties": {"classification": {"name": "Tissue"}}}]}))
    grid = np.array([(x, y) for y in range(0, H - PATCH + 1, PATCH) for x in range(0, W - PATCH + 1, PATCH)
                     if tissue[y:y + PATCH, x:x + PATCH].mean() > 0.5])
    write_coords(res / "patches" / f"{SLIDE}.h5", grid, {"width": W, "height": H, "mpp": MPP, "slide_id": SLIDE},
                 patch_size=PATCH, size0=PATCH, target_mpp=MPP)
    # attention for every other patch (as a bag subsample would), values exact in binary: k / 64
    bag = grid[::2]
    values = (np.arange(len(bag)) + 1) / 64.0
    fold = res / "models" / "healnet" / "fold0"
    write_attention(fold / "attention.npz", case_ids=[CASE], wsi={CASE: values}, coords={CASE: bag})
    pd.DataFrame({"case_id": [CASE], "risk": [0.25]}).to_csv(fold / "predictions.tsv", sep="\t", index=False)
    (res / "attention" / "heatmaps" / f"{CASE}__{SLIDE}.png").write_bytes(b"")
    assert main(["view", str(res)]) == 0
    k = len(bag) // 2  # a patch in the middle of the bag
    return {"dir": res / "viewer", "patch": tuple(int(v) for v in bag[k]), "value": values[k],
            "n_patches": len(grid), "n_bag": len(bag)}


def test_viewer_files(built):
    out = built["dir"]
    assert (out / "viewer_data.js").read_text().count('"case": "TCGA-AA-0001"') == 1
    assert (out / "index.html").is_file() and (out / "openseadragon" / "openseadragon.min.js").is_file()
    assert (out / "openseadragon" / "images").is_dir()
    levels = sorted(int(p.name) for p in (out / "tiles" / f"{SLIDE}_files").iterdir())
    assert levels == list(range(12))  # ceil(log2(2048)) + 1 DeepZoom levels, the last at full resolution
    assert 'Width="2048"' in (out / "tiles" / f"{SLIDE}.dzi").read_text()
    text = (out / "data" / "slide-0.js").read_text()
    data = json.loads(text[text.index(",") + 1:text.rindex(")")])
    assert len(data["patches"]) == built["n_patches"] and len(data["attention"]["value"]) == built["n_bag"]
    assert data["risk"] == 0.25 and len(data["tissue"]) == 1
    # the pen stroke was found again on the tissue stage's thumbnail and lies around x = 1500
    assert data["pen"], "no pen polygon"
    xs = [x for poly in data["pen"] for ring in poly for x, _ in ring]
    assert 1300 < np.mean(xs) < 1700
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]


def test_view_without_attention_maps_is_an_error(tmp_path, capsys):
    assert main(["view", str(tmp_path)]) == 2
    assert "attention_maps" in capsys.readouterr().err


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or \
        ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def _changed(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels that differ by more than a little between two screenshots."""
    return float((np.abs(a.astype(int) - b.astype(int)).max(-1) > 24).mean())


def test_viewer_in_headless_chromium(built, tmp_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_or_fail("playwright is not installed")
    chromium = _chromium()
    if chromium is None:
        _skip_or_fail("no chromium executable")
    from PIL import Image

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"failed: {r.url}"))
            page.goto((built["dir"] / "index.html").as_uri())
            loaded = "() => { const s = window.healnetViewer, it = s && s.viewer.world.getItemAt(0);" \
                     " return !!(s && s.data[0] && it && it.getFullyLoaded()); }"
            page.wait_for_function(loaded, timeout=30_000)

            # zoomed in all the way, OpenSeadragon loads tiles of the full-resolution level
            page.evaluate("() => { const v = healnetViewer.viewer; v.viewport.zoomTo(v.viewport.getMaxZoom(), null, true); }")
            page.wait_for_function("() => healnetViewer.deepestLevel === healnetViewer.maxLevel", timeout=30_000)
            assert page.evaluate("() => healnetViewer.maxLevel") == 11
            page.evaluate("() => healnetViewer.viewer.viewport.goHome(true)")
            page.wait_for_function(loaded, timeout=30_000)
            page.wait_for_timeout(300)

            def shot() -> np.ndarray:
                return np.asarray(Image.open(io.BytesIO(page.locator("#osd").screenshot())).convert("RGB"))

            # each overlay toggle changes the picture, and toggling back restores it
            for layer in ("heat", "tissue", "pen", "grid"):
                before = shot()
                page.click(f"#layer-{layer}")
                after = shot()
                assert _changed(before, after) > 0.002, f"toggling {layer} changed nothing"
                page.click(f"#layer-{layer}")
                assert _changed(before, shot()) < 0.0005, f"toggling {layer} twice does not restore the view"

            # a click on a known patch shows its attention and coordinates
            x, y = built["patch"]
            at = page.evaluate("([x, y]) => { const p = healnetViewer.viewer.world.getItemAt(0)"
                               ".imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y)); return [p.x, p.y]; }",
                               [x + PATCH / 2, y + PATCH / 2])
            box = page.locator("#osd").bounding_box()
            page.mouse.click(box["x"] + at[0], box["y"] + at[1])
            info = page.locator("#info").inner_text()
            assert f"x {x}, y {y}" in info and f"attention {built['value']:g}" in info, info
            page.click("#layer-grid")  # the grid on, for the picture
            page.screenshot(path=str(tmp_path / "viewer.png"))
        finally:
            browser.close()
    assert not errors, errors
    if os.environ.get("HEALNET_SCREENSHOTS"):
        Path(os.environ["HEALNET_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "viewer.png", Path(os.environ["HEALNET_SCREENSHOTS"]) / "viewer.png")
    image = np.asarray(Image.open(tmp_path / "viewer.png").convert("RGB"))
    assert image.shape[:2] == (800, 1280) and image.std() > 10
