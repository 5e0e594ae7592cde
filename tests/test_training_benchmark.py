"""``benchmarks/training.py --step``: the reference-style model (``benchmarks/reference_healnet.py``)
computes what the published HEALNet code computes, and the step benchmark runs (tiny sizes)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location("training_benchmark", ROOT / "benchmarks" / "training.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _benchmark()  # puts the repository on sys.path
reference = importlib.import_module("benchmarks.reference_healnet")
SHAPE = dict(depth=2, num_latents=5, latent_dim=12, cross_heads=2, cross_dim_head=4, latent_heads=3,
             latent_dim_head=5, snn=True)


def _reference(channels=(6, 3), **kw):
    torch.manual_seed(0)
    return reference.ReferenceStyle(input_channels=list(channels), **{**SHAPE, **kw}).eval()


def test_reference_style_normalises_and_projects_each_context_in_every_layer_then_self_attends():
    model = _reference(self_per_cross_attn=1)
    events = []
    for i, layer in enumerate(model.layers):
        for m, (cross, _) in enumerate(layer["cross"]):
            cross.norm_context.register_forward_hook(lambda *a, i=i, m=m: events.append(("norm", i, m)))
            cross.fn.to_kv.register_forward_hook(lambda *a, i=i, m=m: events.append(("to_kv", i, m)))
        layer["latent"][0][0].register_forward_hook(lambda *a, i=i: events.append(("self", i)))
    x = [torch.randn(2, 7, 6), torch.randn(2, 4, 3)]
    assert model(x).shape == (2, 4)
    per_layer = lambda i: [("norm", i, 0), ("to_kv", i, 0), ("self", i), ("norm", i, 1), ("to_kv", i, 1), ("self", i)]
    assert events == per_layer(0) + per_layer(1)
    # the benchmark's shape has no self-attention and untied layers, in both rows
    assert reference.BLCA["self_per_cross_attn"] == 0 and not reference.BLCA["weight_tie_layers"]
    blca = reference.ReferenceStyle(input_channels=[16, 4], **reference.BLCA)
    assert all(len(layer["latent"]) == 0 for layer in blca.layers) and blca.layers[0] is not blca.layers[1]


def test_reference_attention_softmax_at_temperature_half_and_leaky_output():
    torch.manual_seed(0)
    attn = reference.RefAttention(8, 6, heads=2, dim_head=4, dropout=0.0)
    x, ctx = torch.randn(3, 5, 8), torch.randn(3, 7, 6)
    q = attn.to_q(x).view(3, 5, 2, 4).transpose(1, 2)
    k, v = (t.view(3, 7, 2, 4).transpose(1, 2) for t in attn.to_kv(ctx).chunk(2, dim=-1))
    weights = torch.softmax(q @ k.transpose(-1, -2) * 4 ** -0.5 / 0.5, dim=-1)
    inner = (weights @ v).transpose(1, 2).reshape(3, 5, 8)
    expected = torch.nn.functional.leaky_relu(attn.to_out[0](inner))
    torch.testing.assert_close(attn(x, context=ctx), expected, atol=1e-6, rtol=0)
    # at temperature 1 it would differ
    plain = torch.softmax(q @ k.transpose(-1, -2) * 4 ** -0.5, dim=-1)
    assert not torch.allclose(plain, weights, atol=1e-3)


def test_reference_feed_forward_is_a_gated_linear_unit():
    for snn, act in ((True, torch.nn.functional.selu), (False, torch.nn.functional.gelu)):
        torch.manual_seed(0)
        ff = reference.RefFeedForward(10, dropout=0.0, snn=snn).eval()
        assert (ff.proj.in_features, ff.proj.out_features, ff.out.in_features, ff.out.out_features) == (10, 80, 40, 10)
        x = torch.randn(2, 3, 10)
        h = ff.proj(x)
        torch.testing.assert_close(ff(x), ff.out(h[..., :40] * act(h[..., 40:])), atol=1e-6, rtol=0)


def test_step_benchmark_measures_both_rows():
    threads = torch.get_num_threads()
    rows = reference.step_rows([30], dim=16, genes=5, batch=2, threads=threads, repeats=2, steps=1,
                           shape=dict(num_latents=4, latent_dim=8))
    assert [r["variant"] for r in rows] == ["ours", "reference-style"]
    assert all(r["s_per_step"] > 0 and r["patches"] == 30 for r in rows)
    assert rows[0]["ratio"] == 1.0 and rows[1]["ratio_min"] <= rows[1]["ratio"] <= rows[1]["ratio_max"]
    assert torch.get_num_threads() == threads
