"""healnet.attention_maps on synthetic data: the npz format round-trips, attention planted on one
region is hottest there in the PNG, and genes are ranked with their names."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from generators.slide_render import write_svs
from healnet.attention_io import Attention, read_attention, write_attention
from healnet.attention_maps import (ALPHA, CMAP, GAP, HEADER, assign_slides, attention_report, gene_ranking,
                                    heat_grid, pick_cases, render_heatmap)
from preprocessing.tiling import write_coords

W, H, PATCH = 1536, 1024, 256  # level-0 px; 6 × 4 patches


@pytest.fixture
def slide(tmp_path):
    """A uniform pink slide (0.5 µm/px) and its full grid of 256-px patches."""
    rgb = np.full((H, W, 3), (230, 180, 200), np.uint8)
    path = tmp_path / "TCGA-AA-0001-01Z-00-DX1.svs"
    write_svs(path, rgb, mpp=0.5, app_mag=20)
    coords = np.array([(x, y) for y in range(0, H, PATCH) for x in range(0, W, PATCH)], np.int64)
    h5 = tmp_path / "TCGA-AA-0001-01Z-00-DX1.h5"
    write_coords(h5, coords, {"width": W, "height": H, "mpp": 0.5, "slide_id": path.stem}, patch_size=PATCH,
                 size0=PATCH, target_mpp=0.5)
    return path, h5, coords


def test_npz_round_trip(tmp_path):
    path = tmp_path / "attention.npz"
    write_attention(path, case_ids=["A", "B"], wsi={"A": [0.2, 0.8]}, coords={"A": [[0, 0], [256, 0]]},
                    slides={"A": "s1"}, genes={"rna": ["ENSG1", "ENSG2", "ENSG3"]},
                    omics={"rna": {"A": [0.5, 0.3, 0.2], "B": [0.1, 0.1, 0.8]}})
    att = read_attention(path)
    assert att.case_ids == ["A", "B"] and set(att.wsi) == {"A"}
    np.testing.assert_allclose(att.wsi["A"], [0.2, 0.8])
    assert att.coords["A"].tolist() == [[0, 0], [256, 0]] and att.slides["A"].tolist() == ["s1", "s1"]
    assert att.genes["rna"].tolist() == ["ENSG1", "ENSG2", "ENSG3"]
    np.testing.assert_allclose(att.omics["rna"]["B"], [0.1, 0.1, 0.8])
    assert [p.name for p in tmp_path.iterdir()] == ["attention.npz"]
    with pytest.raises(ValueError, match="attention values"):
        write_attention(tmp_path / "bad.npz", case_ids=["A"], wsi={"A": [1.0]}, coords={"A": [[0, 0], [1, 1]]})
    np.savez(tmp_path / "bad2.npz", case_ids=np.array(["A"]), **{"rna_features": np.array(["g1"]),
                                                                 "rna_attention/A": np.ones(2, np.float32)})
    with pytest.raises(ValueError, match="2 values for 1 genes"):
        read_attention(tmp_path / "bad2.npz")


def test_reads_what_training_writes(tmp_path):
    """The keys and container training writes (savez_compressed, a JSON note, no slide ids)."""
    import json

    path = tmp_path / "attention.npz"
    np.savez_compressed(path, case_ids=np.array(["A", "B"]), notes=np.array(json.dumps({"rna": "single token"})),
                        **{"wsi_attention/A": np.array([0.1, 0.9], np.float32), "wsi_coords/A": np.array([[0, 0], [256, 0]]),
                           "rna_features": np.array(["ENSG1", "ENSG2"]),
                           "rna_attention/B": np.array([0.4, 0.6], np.float32)})
    att = read_attention(path)
    assert att.case_ids == ["A", "B"] and att.coords["A"].tolist() == [[0, 0], [256, 0]] and not att.slides
    np.testing.assert_allclose(att.wsi["A"], [0.1, 0.9])
    assert list(att.genes) == ["rna"] and att.genes["rna"].tolist() == ["ENSG1", "ENSG2"]
    np.testing.assert_allclose(att.omics["rna"]["B"], [0.4, 0.6])


def test_assign_slides_in_bag_order():
    grid = np.array([[0, 0], [256, 0], [0, 256], [256, 256]])
    slides = {"X-DX2": grid, "X-DX1": grid[:3]}  # the same coordinates on both slides
    bag = np.concatenate([grid[[0, 2]], grid[[0, 1, 3]]])  # subsampled DX1 patches, then DX2's
    assert assign_slides(bag, slides).tolist() == ["X-DX1", "X-DX1", "X-DX2", "X-DX2", "X-DX2"]
    with pytest.raises(ValueError, match="not a patch"):
        assign_slides(np.array([[1, 1]]), slides)


def test_heat_grid_paints_patch_squares():
    grid = heat_grid(np.array([[0, 0], [256, 256]]), np.array([0.25, 1.0]), 256, 64.0, (8, 8))
    assert (grid[:4, :4] == 0.25).all() and (grid[4:8, 4:8] == 1.0).all()
    assert np.isnan(grid[:4, 4:]).all() and np.isnan(grid[4:, :4]).all()


def _recovered_heat(png, thumb_w, thumb_h, cell=64):
    """Per ``cell``-px square of the heat panel: the colour-map value whose blend with the
    thumbnail (the left panel) is nearest to the square's median colour in the PNG."""
    from matplotlib import colormaps

    image = np.asarray(Image.open(png).convert("RGB")).astype(float)
    thumb = image[HEADER:HEADER + thumb_h, :thumb_w]
    panel = image[HEADER:HEADER + thumb_h, thumb_w + GAP: 2 * thumb_w + GAP]
    colour = (panel - (1 - ALPHA) * thumb) / ALPHA
    rows, cols = thumb_h // cell, thumb_w // cell
    colour = np.median(colour.reshape(rows, cell, cols, cell, 3).transpose(0, 2, 1, 3, 4).reshape(rows, cols, -1, 3),
                       axis=2)
    lut = colormaps[CMAP](np.linspace(0, 1, 256))[:, :3] * 255
    distance = ((colour[..., None, :] - lut) ** 2).sum(-1)
    return distance.argmin(-1) / 255.0


@pytest.mark.parametrize("hot", [(768, 512), (0, 768), (1280, 0)])
def test_planted_attention_is_hottest_there(slide, tmp_path, hot):
    path, h5, coords = slide
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.0, 0.1, len(coords))
    hot_index = [tuple(c) for c in coords.tolist()].index(hot)
    scores[hot_index] = 5.0
    out = tmp_path / "heat.png"
    info = render_heatmap(path, h5, coords, scores, out, title="case", max_side=384)
    assert info["downsample"] == pytest.approx(4.0)  # 1536 px -> 384 px
    # heat per patch square (64 thumbnail px): the planted patch is the hottest (rank 1 of 24)
    squares = _recovered_heat(out, 384, 256)
    y, x = hot[1] // PATCH, hot[0] // PATCH
    assert np.unravel_index(np.argmax(squares), squares.shape) == (y, x)
    others = np.delete(squares.ravel(), y * 6 + x)
    assert squares[y, x] == pytest.approx(1.0, abs=0.02) and squares[y, x] > others.max() + 0.02
    assert others.min() < 0.1  # percentile ranks: the coldest patch is near the bottom of the scale
    # the left panel is the plain thumbnail (the slide's colour)
    image = np.asarray(Image.open(out).convert("RGB")).astype(int)
    np.testing.assert_allclose(image[HEADER + 10:HEADER + 250, 10:370].mean(axis=(0, 1)), (230, 180, 200), atol=4)


def test_heatmap_rejects_foreign_coordinates(slide, tmp_path):
    path, h5, coords = slide
    with pytest.raises(ValueError, match="not patches of this slide"):
        render_heatmap(path, h5, coords + 7, np.ones(len(coords)), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_gene_ranking_with_names():
    a = Attention(case_ids=["A", "B"], genes={"rna": np.array(["ENSG1", "ENSG2", "ENSG3"])},
                  omics={"rna": {"A": np.array([0.6, 0.3, 0.1]), "B": np.array([0.2, 0.5, 0.3])}})
    b = Attention(case_ids=["C"], genes={"rna": np.array(["ENSG2", "ENSG4", "ENSG1"])},
                  omics={"rna": {"C": np.array([0.65, 0.25, 0.1])}})
    names = pd.DataFrame({"gene_id": ["ENSG1", "ENSG2", "ENSG3"], "gene_name": ["TP53", "BRCA1", "EGFR"]})
    table = gene_ranking([a, b], names)
    assert table["gene_id"].tolist() == ["ENSG2", "ENSG1", "ENSG4", "ENSG3"]
    assert table["rank"].tolist() == [1, 2, 3, 4]
    row = table.set_index("gene_id")
    assert row.loc["ENSG2", "mean_attention"] == pytest.approx(np.mean([0.3, 0.5, 0.65]))
    assert row.loc["ENSG2", "std_attention"] == pytest.approx(np.std([0.3, 0.5, 0.65], ddof=1))
    assert row.loc["ENSG1", "n_cases"] == 3 and row.loc["ENSG1", "n_folds"] == 2 and row.loc["ENSG4", "n_cases"] == 1
    assert row.loc["ENSG2", "gene_name"] == "BRCA1" and row.loc["ENSG4", "gene_name"] == ""
    assert gene_ranking([Attention(case_ids=["A"])]).empty


def test_pick_cases_alternates_high_and_low_risk():
    att = Attention(case_ids=list("ABCDE"), wsi={c: np.ones(1) for c in "ABCD"})
    preds = pd.DataFrame({"case_id": list("ABCDE"), "risk": [0.5, 0.9, 0.1, 0.3, 2.0]})
    assert pick_cases(preds, att, 3) == ["B", "C", "A"]  # E has no slide attention


def test_attention_report(slide, tmp_path):
    path, h5, coords = slide
    sid = path.stem
    npz = tmp_path / "models" / "healnet" / "fold0" / "attention.npz"
    write_attention(npz, case_ids=["TCGA-AA-0001", "TCGA-AA-0002"],
                    wsi={"TCGA-AA-0001": np.linspace(0, 1, len(coords))}, coords={"TCGA-AA-0001": coords},
                    genes={"rna": ["ENSG1", "ENSG2"]},  # no slide ids: found from the patch files
                    omics={"rna": {"TCGA-AA-0001": [0.9, 0.1], "TCGA-AA-0002": [0.7, 0.3]}})
    preds = tmp_path / "predictions.tsv"
    pd.DataFrame({"case_id": ["TCGA-AA-0001", "TCGA-AA-0002"], "risk": [0.2, 0.4]}).to_csv(preds, sep="\t", index=False)
    genes = tmp_path / "rna_genes.tsv"
    pd.DataFrame({"gene_id": ["ENSG1", "ENSG2"], "gene_name": ["TP53", "KRAS"]}).to_csv(genes, sep="\t", index=False)
    from preprocessing.truth import write_truth_tumour

    truth = tmp_path / "truth_tumour.npz"  # the demo's planted tumour: outlined in black
    tumour = np.zeros((H // 16, W // 16), np.uint8)
    tumour[10:40, 20:60] = 255
    write_truth_tumour(truth, {sid: (tumour, np.full_like(tumour, 255))})
    out = attention_report([npz], [preds], {sid: str(path)}, {sid: str(h5)}, tmp_path / "maps",
                           tmp_path / "genes.tsv", gene_names=genes, n_cases=3, max_side=256, truth_tumour=truth)
    assert [p.rsplit("/", 1)[-1] for p in out["heatmaps"]] == [f"TCGA-AA-0001__{sid}.png"]
    png = tmp_path / "maps" / f"TCGA-AA-0001__{sid}.png"
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape[0] > 100 and len(np.unique(image.reshape(-1, 3), axis=0)) > 20
    assert (image[HEADER:].astype(int).sum(-1) == 0).sum() > 100
    ranked = pd.read_csv(tmp_path / "genes.tsv", sep="\t")
    assert ranked["gene_name"].tolist() == ["TP53", "KRAS"]


def test_planted_tumour_is_outlined_on_both_panels(slide, tmp_path):
    """The demo's truth (tumour share per 128-px cell here) drawn as a black border of the region,
    on the thumbnail and on the heat panel, and nowhere else."""
    from healnet.attention_maps import truth_outline
    from preprocessing.truth import read_truth_tumour, write_truth_tumour

    path, h5, coords = slide
    tumour = np.zeros((H // 128, W // 128), np.uint8)
    tumour[2:6, 4:8] = 255  # level-0 x 512-1024, y 256-768: thumbnail (ds 4) x 128-256, y 64-192
    truth = tmp_path / "truth_tumour.npz"
    write_truth_tumour(truth, {path.stem: (tumour, np.full_like(tumour, 255))}, cell=128)
    shares, tissue, cell = read_truth_tumour(truth)
    assert cell == 128 and shares[path.stem].max() == 1.0 and tissue[path.stem].min() == 1.0
    edge = truth_outline(shares[path.stem], cell, 4.0, (256, 384))
    ys, xs = np.nonzero(edge)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (64, 191, 128, 255)
    assert not edge[70:186, 134:250].any()  # a border, not a filled region
    out = tmp_path / "heat.png"
    render_heatmap(path, h5, coords, np.arange(len(coords), dtype=float), out, max_side=384,
                   tumour=(shares[path.stem], cell))
    image = np.asarray(Image.open(out).convert("RGB")).astype(int)
    for x0 in (0, 384 + GAP):  # thumbnail, then heat panel
        panel = image[HEADER:HEADER + 256, x0:x0 + 384]
        black = (panel.sum(-1) == 0)
        np.testing.assert_array_equal(black, edge)
    plain = tmp_path / "plain.png"
    render_heatmap(path, h5, coords, np.arange(len(coords), dtype=float), plain, max_side=384)
    assert not (np.asarray(Image.open(plain).convert("RGB")).astype(int)[HEADER:].sum(-1) == 0).any()
