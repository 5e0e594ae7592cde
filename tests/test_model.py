"""Behavioural tests of the HEALNet model: missing data, padding, attention, weight sharing, learning."""

import numpy as np
import pytest
import torch

from healnet.model import Attention, HEALNet
from healnet.survival import concordance, discretise, fit_bins, nll_loss, risk_from_logits

ATOL = 1e-5
SMALL = dict(depth=2, num_latents=8, latent_dim=32, cross_heads=2, cross_dim_head=16,
             latent_heads=2, latent_dim_head=16, num_classes=4)


def make(channels=(6, 1), seed=0, **kw):
    torch.manual_seed(seed)
    return HEALNet(input_channels=list(channels), **{**SMALL, **kw}).eval()


def data(b=2, n=(7, 12), channels=(6, 1), seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, k, c, generator=g) for k, c in zip(n, channels)]


def test_output_shape_and_return_attention():
    model = make()
    x = data(b=3)
    out = model(x)
    assert out.shape == (3, 4) and torch.isfinite(out).all()
    out2, att = model(x, return_attention=True)
    torch.testing.assert_close(out, out2, atol=ATOL, rtol=0)
    assert [(a["layer"], a["modality"]) for a in att] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert att[0]["attn"].shape == (3, 2, 8, 7) and att[1]["attn"].shape == (3, 2, 8, 12)
    # a 1-channel modality may be passed as (b, n)
    torch.testing.assert_close(model([x[0], x[1][..., 0]]), out, atol=ATOL, rtol=0)


def test_missing_modality_per_sample_does_not_leak():
    model = make()
    x = data(b=2)
    present = torch.tensor([[True, True], [True, False]])
    out = model(x, present=present)
    alone0 = model([t[:1] for t in x])
    alone1 = model([t[1:] for t in x], present=torch.tensor([[True, False]]))
    torch.testing.assert_close(out[0:1], alone0, atol=ATOL, rtol=0)
    torch.testing.assert_close(out[1:2], alone1, atol=ATOL, rtol=0)
    # skipping the modality really changes the prediction (the step is not a no-op)
    assert not torch.allclose(alone1, model([t[1:] for t in x]), atol=1e-3)
    # the whole batch missing a modality == each sample missing it
    none1 = model(x, present=torch.tensor([[True, False], [True, False]]))
    torch.testing.assert_close(none1[1:2], alone1, atol=ATOL, rtol=0)


def test_absent_modality_values_are_ignored():
    model = make()
    x = data(b=2)
    present = torch.tensor([[True, True], [True, False]])
    out = model(x, present=present)
    x2 = [x[0], x[1].clone()]
    x2[1][1] = torch.randn(12, 1) * 100
    torch.testing.assert_close(model(x2, present=present), out, atol=ATOL, rtol=0)
    x2[1][1] = float("nan")
    out_nan = model(x2, present=present)
    assert torch.isfinite(out_nan).all()
    torch.testing.assert_close(out_nan, out, atol=ATOL, rtol=0)
    model.train()
    model(x2, present=present).sum().backward()  # NaN never reaches the gradients either
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def _padded_batch(lengths, channels=6, pad_to=20, seed=2):
    g = torch.Generator().manual_seed(seed)
    bags = [torch.randn(n, channels, generator=g) for n in lengths]
    x = torch.randn(len(lengths), pad_to, channels, generator=g) * 50  # padding of random values
    mask = torch.zeros(len(lengths), pad_to, dtype=torch.bool)
    for i, bag in enumerate(bags):
        x[i, : len(bag)] = bag
        mask[i, : len(bag)] = True
    return bags, x, mask


def test_padding_invariance():
    model = make(channels=(6,))
    bags, x, mask = _padded_batch([5, 11, 20])
    out = model([x], masks=[mask])
    for i, bag in enumerate(bags):
        torch.testing.assert_close(out[i : i + 1], model([bag[None]]), atol=ATOL, rtol=0)
    # padding values are never read, even NaN
    x_nan = x.masked_fill(~mask[..., None], float("nan"))
    torch.testing.assert_close(model([x_nan], masks=[mask]), out, atol=ATOL, rtol=0)
    # same result through the explicit-attention path
    out_explicit, _ = model([x], masks=[mask], return_attention=True)
    torch.testing.assert_close(out_explicit, out, atol=ATOL, rtol=0)


def test_attention_weights_normalised_and_zero_on_padding():
    model = make(channels=(6, 1))
    _, x, mask = _padded_batch([5, 11, 20])
    omic = torch.randn(3, 9, 1)
    present = torch.tensor([[True, True], [True, True], [True, False]])
    _, att = model([x, omic], masks=[mask, None], present=present, return_attention=True)
    for a in att:
        w = a["attn"]
        if a["modality"] == 0:
            assert w.shape == (3, 2, 8, 20)
            assert (w[~mask[:, None, None, :].expand_as(w)] == 0).all()
            torch.testing.assert_close(w.sum(-1), torch.ones(3, 2, 8), atol=1e-6, rtol=0)
        else:  # absent sample 2: all-zero weights
            torch.testing.assert_close(w[:2].sum(-1), torch.ones(2, 2, 8), atol=1e-6, rtol=0)
            assert (w[2] == 0).all()


def test_sdpa_and_explicit_attention_agree():
    attn = Attention(16, 10, heads=3, dim_head=8).eval()
    x, ctx = torch.randn(4, 5, 16), torch.randn(4, 9, 10)
    mask = torch.rand(4, 9) > 0.3
    mask[:, 0] = True
    fast, none = attn(x, context=ctx, mask=mask)
    slow, w = attn(x, context=ctx, mask=mask, return_attn=True)
    assert none is None and w.shape == (4, 3, 5, 9)
    torch.testing.assert_close(fast, slow, atol=ATOL, rtol=0)


def test_self_attention_shared_across_modalities_and_weight_tying():
    depth, m = 3, 3
    model = make(channels=(4, 1, 2), depth=depth)
    n_attention = sum(isinstance(mod, Attention) for mod in model.modules())
    assert n_attention == depth * m + depth  # cross-attention per modality, self-attention per layer only
    for layer in model.layers:
        assert len(layer["latent"]) == 1 and len(layer["cross"]) == m

    def n_params(mdl):
        return sum(p.numel() for p in mdl.parameters())

    tied = make(channels=(4, 1, 2), depth=depth, weight_tie_layers=True)
    two = make(channels=(4, 1, 2), depth=2)
    assert n_params(tied) < n_params(model)
    assert n_params(tied) == n_params(two)  # layers 1..depth-1 share one set of weights
    assert tied.layers[1] is tied.layers[2] and tied.layers[0] is not tied.layers[1]


def test_no_gradient_from_absent_samples():
    model = make()
    model.train()
    x = data(b=2)
    present = torch.tensor([[True, True], [True, False]])  # modality 1 only for sample 0
    out = model(x, present=present)
    out[1].sum().backward()  # a loss on the sample lacking modality 1
    cross1 = [p for layer in model.layers for p in layer["cross"][1].parameters()]
    cross0 = [p for layer in model.layers for p in layer["cross"][0].parameters()]
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in cross1)
    assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in cross0)

    # whole batch missing the modality: still no gradient there
    model.zero_grad()
    model(x, present=torch.tensor([[True, False], [True, False]])).sum().backward()
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in cross1)


def test_three_modalities_with_fourier_encoding():
    channels, axes = (16, 1, 5), (2, 0, 1)
    model = make(channels=channels, input_axes=axes, fourier_encode=True, num_freq_bands=3)
    assert model.context_dims == [16 + 2 * 7, 1, 5 + 7]
    x = data(b=3, n=(10, 30, 4), channels=channels)
    pos = [torch.rand(3, 10, 2) * 2 - 1, None, torch.linspace(-1, 1, 4).expand(3, 4)[..., None]]
    out = model(x, positions=pos)
    assert out.shape == (3, 4) and torch.isfinite(out).all()
    pos2 = [pos[0].flip(1), None, pos[2]]
    assert not torch.allclose(model(x, positions=pos2), out, atol=1e-4)  # positions are used
    with pytest.raises(ValueError):
        model(x)
    # without fourier_encode, input_axes is ignored and positions are not needed
    plain = make(channels=channels, input_axes=axes)
    assert plain.context_dims == list(channels) and plain(x).shape == (3, 4)


def test_empty_bag_is_treated_as_absent():
    model = make()
    x = data(b=2)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1] = False
    out = model(x, masks=[mask, None])
    assert torch.isfinite(out).all()
    absent = model(x, present=torch.tensor([[True, True], [False, True]]))
    torch.testing.assert_close(out, absent, atol=ATOL, rtol=0)
    out_e, att = model(x, masks=[mask, None], return_attention=True)
    assert torch.isfinite(out_e).all() and all(torch.isfinite(a["attn"]).all() for a in att)
    model.train()
    model(x, masks=[mask, None]).sum().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def _linear_weight_count(depth, channels=(6, 1), latent_dim=32, cross_inner=2 * 16, latent_inner=2 * 16,
                         ff_mult=4, num_classes=4):
    """Entries of HEALNet's weight matrices, counted from the architecture (SMALL's sizes): per layer
    and modality a cross-attention (to_q d→inner, to_kv c→2·inner, to_out inner→d) and a
    feed-forward (d→4d→d), per layer one latent self-attention and feed-forward, then the head."""
    ff = 2 * ff_mult * latent_dim * latent_dim
    cross = sum(latent_dim * cross_inner + c * 2 * cross_inner + cross_inner * latent_dim + ff for c in channels)
    latent = latent_dim * latent_inner + latent_dim * 2 * latent_inner + latent_inner * latent_dim + ff
    return depth * (cross + latent) + latent_dim * num_classes


def test_snn_option_and_l1_penalty():
    from healnet.model import l1_penalty

    model = make(snn=True)
    assert any(isinstance(m, torch.nn.AlphaDropout) for m in model.modules())
    assert model(data()).shape == (2, 4)

    # by hand: |1| + |-2| + |3| + |-4| + |-0.5| + |0.5| = 11; biases and the LayerNorm do not count,
    # and the first Linear, used twice, counts once
    first, second, norm = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1), torch.nn.LayerNorm(2)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, -2.0], [3.0, -4.0]]))
        second.weight.copy_(torch.tensor([[-0.5, 0.5]]))
        for p in (first.bias, second.bias, norm.weight, norm.bias):
            p.fill_(100.0)
    assert l1_penalty(torch.nn.Sequential(first, norm, torch.nn.GELU(), first, second)).item() == 11.0

    # HEALNet with every parameter 1 (latents, biases and norms too): the penalty is the number of
    # weight-matrix entries of the architecture; weight tying counts the shared layers once
    for kw, depth in (({}, 2), ({"snn": True}, 2), ({"depth": 3}, 3), ({"depth": 3, "weight_tie_layers": True}, 2)):
        net = make(**kw)
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(1.0)
        assert net.l1_penalty().item() == _linear_weight_count(depth), kw
    # the penalty is |w|: gradient sign(w) on weight matrices (once, also when shared), none elsewhere
    tied = make(weight_tie_layers=True, depth=3)
    tied.l1_penalty().backward()
    for name, p in tied.named_parameters():
        if p.dim() == 2 and name != "latents":
            torch.testing.assert_close(p.grad, torch.sign(p.detach()), atol=0, rtol=0)
        else:
            assert p.grad is None or not p.grad.any(), name


def _synthetic_survival(n=64, seed=0):
    """Risk depends on the mean of channel 0 of a WSI-like bag; a second, noise-only omic
    modality is missing for a quarter of the samples.  Also returns the true risk ``mu``."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 16, size=n)
    mu = rng.normal(size=n)
    x = np.zeros((n, 15, 4), dtype=np.float32)
    mask = np.zeros((n, 15), dtype=bool)
    for i, k in enumerate(lengths):
        x[i, :k] = rng.normal(size=(k, 4))
        x[i, :k, 0] += mu[i]
        mask[i, :k] = True
    omic = rng.normal(size=(n, 6, 1)).astype(np.float32)
    present = np.ones((n, 2), dtype=bool)
    present[rng.random(n) < 0.25, 1] = False
    t = np.exp(5.0 - 1.0 * mu + 0.3 * rng.normal(size=n))
    cens = rng.uniform(50, 2000, size=n)
    events = t <= cens
    times = np.minimum(t, cens)
    return x, mask, omic, present, times, events, mu


N_TRAIN, N_TEST = 96, 64


def _train(seed=0, steps=80):
    """Train on the first N_TRAIN generated cases only; returns the logits of the N_TEST held-out
    cases, their c-index, and the oracle c-index of the true risk on the same test cases."""
    x, mask, omic, present, times, events, mu = _synthetic_survival(n=N_TRAIN + N_TEST)
    train, test = slice(0, N_TRAIN), slice(N_TRAIN, None)

    def inputs(part):
        return dict(tensors=[torch.tensor(x[part]), torch.tensor(omic[part])], masks=[torch.tensor(mask[part]), None],
                    present=torch.tensor(present[part]))

    labels = discretise(times[train], fit_bins(times[train], events[train], 4))
    torch.manual_seed(seed)
    model = HEALNet(input_channels=[4, 1], depth=1, num_latents=8, latent_dim=32, cross_heads=1,
                    cross_dim_head=16, latent_heads=2, latent_dim_head=16, attn_dropout=0.0,
                    ff_dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    y, e = torch.tensor(labels), torch.tensor(events[train])
    for _ in range(steps):
        opt.zero_grad()
        loss = nll_loss(model(**inputs(train)), y, e) + 1e-5 * model.l1_penalty()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        logits = model(**inputs(test))
    oracle = concordance(times[test], events[test], mu[test])  # risk = mu: the shortest times have the highest mu
    return logits, concordance(times[test], events[test], risk_from_logits(logits)), oracle


def test_learns_synthetic_survival_on_held_out_cases_and_is_deterministic():
    """Trained on 96 cases, HEALNet ranks 64 unseen cases well above chance: it recovers at least
    half of what the true risk (oracle c ≈ 0.93) achieves over chance on them.  Here it reaches
    c ≈ 0.84, 0.79 of the oracle's margin (0.63-0.79 with other data seeds); the bag mean of
    channel 0, which the risk was planted in, reaches ≈ 0.90."""
    logits, cindex, oracle = _train()
    assert oracle > 0.85  # the planted signal is strong enough for the margin below
    assert cindex > 0.7 and cindex - 0.5 >= 0.5 * (oracle - 0.5), (cindex, oracle)
    logits2, _, _ = _train()
    assert torch.equal(logits, logits2)


# ---------------------------------------------------------------------------------------------
# batch independence and the per-forward context cache


def _case(seed, n, channels=(6, 1, 3), genes=9):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, channels[0], generator=g), torch.randn(genes, channels[1], generator=g),
            torch.randn(4, channels[2], generator=g)]


def _batch(cases, present):
    """Pad a list of cases (per modality: tokens × channels) into one batch with masks."""
    tensors, masks = [], []
    for m in range(len(cases[0])):
        n = max(c[m].shape[0] for c in cases)
        t = torch.randn(len(cases), n, cases[0][m].shape[1]) * 100  # padding and absent values: garbage
        mask = torch.zeros(len(cases), n, dtype=torch.bool)
        for i, c in enumerate(cases):
            if present[i][m]:
                t[i, : len(c[m])] = c[m]
                mask[i, : len(c[m])] = True
        tensors.append(t)
        masks.append(mask)
    return tensors, masks, torch.tensor(present)


@pytest.mark.parametrize("return_attention", [False, True])
def test_output_of_a_sample_does_not_depend_on_its_batch(return_attention):
    """Case 0's logits are the same alone and in batches whose other cases have other bag sizes
    and lack other modalities (eval mode)."""
    model = make(channels=(6, 1, 3), weight_tie_layers=True, depth=3)
    case = _case(0, n=13)
    tensors, masks, present = _batch([case], [[True, True, True]])
    alone = model(tensors, masks=masks, present=present)
    others = [_case(s, n) for s, n in ((1, 40), (2, 3), (3, 13), (4, 25))]
    for present in ([[True] * 3] * 5,
                    [[True] * 3, [False, True, True], [True, False, False], [False, False, True], [True, True, False]]):
        for order in ([0, 1, 2, 3, 4], [3, 1, 4, 0, 2]):
            cases = [([case] + others)[k] for k in order]
            tensors, masks, pres = _batch(cases, [present[k] for k in order])
            out = model(tensors, masks=masks, present=pres, return_attention=return_attention)
            out = out[0] if return_attention else out
            torch.testing.assert_close(out[order.index(0)][None], alone, atol=1e-6, rtol=0)


@pytest.mark.parametrize("offset", [20.0, 0.0])
def test_cached_context_equals_per_layer_recomputation(offset):
    """K/V of each context computed once per forward (LayerNorm affine folded into the projection,
    reused by tied layers) gives the textbook per-layer result, forward and backward, on raw
    (offset: the statistics' exact path) and centred contexts (their one-pass path)."""
    channels, axes = (6, 1, 3), (2, 0, 0)
    model = make(channels=channels, input_axes=axes, fourier_encode=True, weight_tie_layers=True, depth=4)
    with torch.no_grad():  # non-trivial LayerNorm affines, so that folding them is exercised
        for mod in model.modules():
            if isinstance(mod, torch.nn.LayerNorm):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
    cases = [_case(s, n) for s, n in ((0, 10), (1, 17), (2, 5))]
    for c in cases:  # raw (not standardised) contexts: a large common offset and scale
        c[0] = c[0] * 3 + offset
    tensors, masks, present = _batch(cases, [[True, True, True], [True, False, True], [False, True, True]])
    pos = [torch.rand(3, tensors[0].shape[1], 2) * 2 - 1, None, None]
    for return_attention in (False, True):
        cached = model(tensors, masks=masks, present=present, positions=pos, return_attention=return_attention)
        plain = model(tensors, masks=masks, present=present, positions=pos, return_attention=return_attention,
                      reuse_context=False)
        if return_attention:
            for a, b in zip(cached[1], plain[1]):
                torch.testing.assert_close(a["attn"], b["attn"], atol=1e-5, rtol=0)
            cached, plain = cached[0], plain[0]
        torch.testing.assert_close(cached, plain, atol=1e-5, rtol=0)

    grads = []
    for reuse in (True, False):
        model.zero_grad()
        model(tensors, masks=masks, present=present, positions=pos, reuse_context=reuse).square().sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_context_read_once_per_forward_for_all_weight_sets(monkeypatch):
    """depth 4 with tied layers: layer 0 and the shared layers 1-3 are two weight sets, so each of
    the 3 contexts goes through ONE fused projection onto 2 weight sets per forward (untied: 4),
    and never through a per-layer LayerNorm + to_kv."""
    import healnet.context
    import healnet.model

    calls = []
    original = healnet.context.context_keys_values

    def counting(context, blocks):
        calls.append(len(blocks))
        return original(context, blocks)

    monkeypatch.setattr(healnet.model, "context_keys_values", counting)
    x = data(b=2, n=(7, 12, 4), channels=(6, 1, 3))
    for tied, sets in ((True, 2), (False, 4)):
        model = make(channels=(6, 1, 3), weight_tie_layers=tied, depth=4)
        per_layer = []
        for mod in model.modules():  # each shared module once
            if isinstance(mod, healnet.model.PreNorm) and mod.norm_context is not None:
                mod.fn.to_kv.register_forward_hook(lambda *a: per_layer.append(1))
                mod.norm_context.register_forward_hook(lambda *a: per_layer.append(1))
        calls.clear()
        model(x)
        assert calls == [sets] * 3 and per_layer == []
        model(x, reuse_context=False)
        assert len(per_layer) == 2 * 4 * 3  # the textbook path: LayerNorm + to_kv per layer and modality
    # a modality nobody in the batch has is not projected at all
    calls.clear()
    model(x, present=torch.tensor([[True, False, True], [True, False, True]]))
    assert calls == [4, 4]


def test_gene_tokens_carry_their_identity():
    """Without identities a bag of one-channel gene tokens is a set: swapping two genes' values
    gives the same output, so the model cannot tell which gene is high.  With ``num_tokens`` it can."""
    torch.manual_seed(0)
    x = torch.randn(3, 10, 1)
    swapped = x.clone()
    swapped[:, [0, 1]] = x[:, [1, 0]]
    plain = HEALNet(input_channels=[1], depth=1, num_latents=4, latent_dim=16, latent_heads=2).eval()
    named = HEALNet(input_channels=[1], depth=1, num_latents=4, latent_dim=16, latent_heads=2,
                    num_tokens=[10]).eval()
    with torch.no_grad():
        assert torch.allclose(plain([x]), plain([swapped]), atol=1e-6)
        assert not torch.allclose(named([x]), named([swapped]), atol=1e-4)
        with pytest.raises(ValueError, match="10 feature tokens, got 9"):
            named([x[:, :9]])


def test_token_stats_match_layer_norm_statistics(monkeypatch):
    """The one-pass per-token statistics of the context cache equal var_mean's (values and gradients)
    on z-scored, offset, constant and empty tokens; var_mean is only called for tokens whose mean
    dwarfs their spread, so z-scored features take the fast path."""
    import healnet.context

    g = torch.Generator().manual_seed(0)
    rows = [torch.randn(40, 64, generator=g),  # z-scored features: the fast path
            torch.randn(40, 64, generator=g).abs(),  # non-negative (ReLU-like) features
            torch.randn(10, 64, generator=g) * 0.01 + 50,  # mean >> spread: recomputed
            torch.full((3, 64), 7.0), torch.zeros(3, 64)]  # constant and padding tokens
    x = torch.cat(rows)[None].requires_grad_()
    y = x.detach().clone().requires_grad_()
    mu, rstd = healnet.context.token_stats(x, 1e-5)
    var, mu_ref = torch.var_mean(y, dim=-1, unbiased=False, keepdim=True)
    rstd_ref = torch.rsqrt(var + 1e-5)
    torch.testing.assert_close(mu, mu_ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(rstd, rstd_ref, atol=0, rtol=1e-5)
    w = torch.randn(2, x.shape[1], 1, generator=g)
    (mu * w[0] + rstd * w[1]).sum().backward()
    (mu_ref * w[0] + rstd_ref * w[1]).sum().backward()
    torch.testing.assert_close(x.grad, y.grad, atol=1e-5, rtol=1e-4)

    calls = []
    original = torch.var_mean
    monkeypatch.setattr(torch, "var_mean", lambda t, *a, **k: calls.append(t.shape[0]) or original(t, *a, **k))
    healnet.context.token_stats(torch.cat(rows[:2])[None], 1e-5)
    assert calls == []
    healnet.context.token_stats(x.detach(), 1e-5)
    assert calls == [10 + 3]  # the offset and the constant tokens


def test_cpu_training_attention_equals_sdpa_with_the_same_dropout_mask():
    """In training on the CPU the attention softmax is explicit (fewer ops than SDPA's fallback); it
    draws the same dropout mask as SDPA, so the step is the same computation."""
    torch.manual_seed(0)
    attn = Attention(12, 5, heads=2, dim_head=4, dropout=0.3).train()
    x, ctx = torch.randn(3, 6, 12), torch.randn(3, 40, 5)
    mask = torch.rand(3, 40) > 0.2
    torch.manual_seed(1)
    out, weights = attn(x, context=ctx, mask=mask)
    assert weights is None
    q = attn.to_q(x).view(3, 6, 2, 4).transpose(1, 2)
    k, v = (t.view(3, 40, 2, 4).transpose(1, 2) for t in attn.to_kv(ctx).chunk(2, dim=-1))
    torch.manual_seed(1)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None], dropout_p=0.3)
    torch.testing.assert_close(out, attn.to_out(sdpa.transpose(1, 2).reshape(3, 6, 8)), atol=1e-6, rtol=0)


def test_context_projection_equals_linear_forward_and_backward():
    """The context projection (oneDNN on the CPU where PyTorch has it) is F.linear: values and both
    gradients (the context's is needed when it carries learned gene identities)."""
    import healnet.context

    g = torch.Generator().manual_seed(0)
    for shape in ((2, 300, 64), (3, 7, 1), (1, 5, 9)):
        x = torch.randn(*shape, generator=g).requires_grad_()
        w = torch.randn(12, shape[-1], generator=g).requires_grad_()
        x2, w2 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
        out, expected = healnet.context.project(x, w), torch.nn.functional.linear(x2, w2)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        upstream = torch.randn(out.shape, generator=g)
        out.backward(upstream)
        expected.backward(upstream)
        torch.testing.assert_close(x.grad, x2.grad, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(w.grad, w2.grad, atol=1e-4, rtol=1e-5)
    if healnet.context._ONEDNN_LINEAR is not None:  # this build takes the oneDNN path
        assert type(healnet.context.project(x, w).grad_fn).__name__ == "_ContextProjectionBackward"
