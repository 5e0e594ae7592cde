"""HEALNet ablations (healnet.zoo.ABLATIONS): each variant's defining property, and missing-modality
skipping in every one of them."""

import pytest
import torch

import healnet.context
import healnet.model
from healnet.model import Attention, HEALNet
from healnet.zoo import ABLATIONS, build_model, is_healnet, model_modalities

ATOL = 1e-5
SMALL = dict(depth=2, num_latents=8, latent_dim=32, cross_heads=2, cross_dim_head=16,
             latent_heads=2, latent_dim_head=16)
CHANNELS = (6, 3)  # several channels each, so that the context LayerNorms keep the values
VARIANTS = ["healnet", *ABLATIONS]


def make(name="healnet", channels=CHANNELS, seed=0, **kw):
    torch.manual_seed(seed)
    model = build_model(name, input_channels=list(channels), modalities=[f"m{i}" for i in range(len(channels))],
                        num_classes=4, **{**SMALL, **kw})
    return model.eval()


def data(b=2, n=(7, 12), channels=CHANNELS, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, k, c, generator=g) for k, c in zip(n, channels)]


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_names_are_healnet_over_all_modalities_and_never_a_modality():
    for name in ABLATIONS:
        assert is_healnet(name) and model_modalities(name, ("wsi", "rna", "cnv")) == ("wsi", "rna", "cnv")
    # a modality called like an ablation keeps its meaning under healnet-<modality>
    assert model_modalities("healnet-tied", ("wsi", "tied")) == ("tied",)
    assert model_modalities("healnet_tied", ("wsi", "tied")) == ("wsi", "tied")
    with pytest.raises(ValueError, match="unknown architecture"):
        model_modalities("healnet_nolatent", ("wsi",))
    # the ablation's own setting wins over the configured model block (train.py passes cfg.model)
    assert len(make("healnet_noself", self_per_cross_attn=2).layers[0]["latent"]) == 0
    assert len(make("healnet_selfeach", self_per_cross_attn=2).layers[0]["latent"]) == 2
    tied = make("healnet_tied", weight_tie_layers=False)
    assert tied.layers[0] is tied.layers[1]


def test_noself_has_no_self_attention():
    model, full = make("healnet_noself"), make()
    assert all(len(layer["latent"]) == 0 for layer in model.layers)
    # every attention module left reads a modality: per layer one cross-attention per modality
    attn = [m for m in model.modules() if isinstance(m, Attention)]
    assert len(attn) == SMALL["depth"] * len(CHANNELS) and all(a.to_kv.in_features in CHANNELS for a in attn)
    d, inner = SMALL["latent_dim"], SMALL["latent_heads"] * SMALL["latent_dim_head"]
    attention = 2 * d + d * inner + d * 2 * inner + inner * d + d  # norm, to_q, to_kv, to_out (+ bias)
    feed_forward = 2 * d + d * 4 * d + 4 * d + 4 * d * d + d  # norm, d -> 4d -> d
    self_block = attention + feed_forward
    assert n_params(full) - n_params(model) == SMALL["depth"] * self_block
    assert model(data()).shape == (2, 4)


def _trace(model):
    """Records the order in which the blocks of a forward run: ('cross', modality) and 'self'."""
    events = []
    for layer in dict.fromkeys(model.layers):  # a shared layer once
        for m, (cross, _) in enumerate(layer["cross"]):
            cross.register_forward_hook(lambda *a, m=m: events.append(("cross", m)))
        for self_attn, _ in layer["latent"]:
            self_attn.register_forward_hook(lambda *a: events.append("self"))
    return events


def test_selfeach_runs_the_layers_self_attention_after_every_modality():
    channels = (6, 3, 4)
    x = data(n=(7, 12, 5), channels=channels)
    once, each = make(channels=channels), make("healnet_selfeach", channels=channels)
    assert n_params(once) == n_params(each)  # the same weights, only their placement differs
    each.load_state_dict(once.state_dict())
    events_once, events_each = _trace(once), _trace(each)
    once(x)
    each(x)
    per_layer_once = [("cross", 0), ("cross", 1), ("cross", 2), "self"]
    per_layer_each = [("cross", 0), "self", ("cross", 1), "self", ("cross", 2), "self"]
    assert events_once == per_layer_once * SMALL["depth"]
    assert events_each == per_layer_each * SMALL["depth"]  # M = 3 self-attention passes per layer
    assert not torch.allclose(once(x), each(x), atol=1e-4)
    # a modality nobody in the batch has: its step, self-attention included, is skipped
    events_each.clear()
    each(x, present=torch.tensor([[True, False, True]] * 2))
    assert events_each == [("cross", 0), "self", ("cross", 2), "self"] * SMALL["depth"]


def test_tied_layers_are_one_set_of_weights(monkeypatch):
    model = make("healnet_tied", depth=3)
    assert model.layers[0] is model.layers[1] is model.layers[2]
    assert n_params(model) == n_params(make(depth=1))
    shared = {id(p) for p in model.layers[0].parameters()}
    assert shared == {id(p) for p in model.layers[2].parameters()}
    # weight_tie_layers keeps layer 0 apart (at depth 2 it ties nothing); tie_all_layers does not
    two = make(depth=2, weight_tie_layers=True)
    assert two.layers[0] is not two.layers[1] and n_params(two) == n_params(make(depth=2))
    # one cross-attention weight set per modality: the context is projected once for all layers
    calls = []
    original = healnet.context.context_keys_values
    monkeypatch.setattr(healnet.model, "context_keys_values", lambda c, blocks: calls.append(len(blocks))
                        or original(c, blocks))
    x = data()
    out = model(x)
    assert calls == [1, 1]
    torch.testing.assert_close(out, model(x, reuse_context=False), atol=ATOL, rtol=0)
    # trained, the shared weights get the gradient of every layer
    model.train()
    model(x).sum().backward()
    to_q = model.layers[0]["cross"][0][0].fn.to_q.weight
    assert to_q.grad is not None and to_q.grad.abs().sum() > 0


def test_meanpool_starts_from_the_mean_of_each_modality_and_has_no_latent_parameter():
    model = make("healnet_meanpool")
    assert model.latents is None and "latents" not in dict(model.named_parameters())
    assert not any(p.shape == (SMALL["num_latents"], SMALL["latent_dim"]) for p in model.parameters())
    starts = []
    model.layers[0]["cross"][0][0].register_forward_pre_hook(lambda mod, args: starts.append(args[0].clone()))

    # two samples with bags padded differently; sample 1 lacks modality 1 (whose values are garbage)
    x = data(b=2, n=(9, 12))
    masks = [torch.ones(2, 9, dtype=torch.bool), None]
    masks[0][0, 5:] = False
    x[0][0, 5:] = 1e6
    x[1][1] = float("nan")
    present = torch.tensor([[True, True], [True, False]])
    model(x, masks=masks, present=present)
    start = starts[-1]
    assert start.shape == (2, 2, SMALL["latent_dim"])  # one latent per modality
    with torch.no_grad():
        expected0 = torch.stack([model.to_latent[0](x[0][0, :5].mean(0)), model.to_latent[1](x[1][0].mean(0))])
        expected1 = torch.stack([model.to_latent[0](x[0][1].mean(0)), torch.zeros(SMALL["latent_dim"])])
    torch.testing.assert_close(start[0], expected0, atol=ATOL, rtol=0)
    torch.testing.assert_close(start[1], expected1, atol=ATOL, rtol=0)

    # so the output depends on each modality's values
    y = data(b=1, seed=3)
    out = model(y)
    for m in range(2):
        z = [t.clone() for t in y]
        z[m] += torch.randn(z[m].shape, generator=torch.Generator().manual_seed(m))
        assert not torch.allclose(model(z), out, atol=1e-4), m


@pytest.mark.parametrize("name", VARIANTS)
def test_missing_modality_is_skipped_in_every_variant(name):
    """A sample lacking a modality: the same output alone and in a batch with a sample that has it,
    or with a batch where nobody has it; the absent values are never read; no gradient from it
    reaches that modality's weights; and the skipped step really changes the prediction."""
    model = make(name)
    x = data(b=2)
    present = torch.tensor([[True, True], [True, False]])
    out = model(x, present=present)
    alone0 = model([t[:1] for t in x])
    alone1 = model([t[1:] for t in x], present=torch.tensor([[True, False]]))
    torch.testing.assert_close(out[0:1], alone0, atol=ATOL, rtol=0)
    torch.testing.assert_close(out[1:2], alone1, atol=ATOL, rtol=0)
    nobody = model(x, present=torch.tensor([[True, False], [True, False]]))
    torch.testing.assert_close(nobody[1:2], alone1, atol=ATOL, rtol=0)
    assert not torch.allclose(alone1, model([t[1:] for t in x]), atol=1e-3)

    garbage = [x[0], x[1].clone()]
    garbage[1][1] = float("nan")
    torch.testing.assert_close(model(garbage, present=present), out, atol=ATOL, rtol=0)

    model.train()
    model(garbage, present=present)[1].sum().backward()  # a loss on the sample lacking modality 1
    own1 = [p for layer in model.layers for p in layer["cross"][1].parameters()]
    own0 = [p for layer in model.layers for p in layer["cross"][0].parameters()]
    if model.to_latent is not None:
        own1 += list(model.to_latent[1].parameters())
        own0 += list(model.to_latent[0].parameters())
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in own1)
    assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in own0)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_constructor_refuses_unknown_settings():
    with pytest.raises(ValueError, match="self_attn_after"):
        HEALNet(input_channels=[3], self_attn_after="cross")
    with pytest.raises(ValueError, match="latent_array"):
        HEALNet(input_channels=[3], latent_array="mean")
