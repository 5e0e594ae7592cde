"""``benchmarks/training.py --step``: one training step of ours against the computation of the
published HEALNet code (:class:`ReferenceStyle`, written from its description: per layer and
modality, cross-attention with the context re-normalised and re-projected on every call, a
GEGLU/SEGLU feed-forward, then the layer's self-attention after EACH modality's update; full bags
only, no masks, no missing modalities)."""
from __future__ import annotations

import os
import time

import numpy as np
import torch
from einops import rearrange, repeat
from einops.layers.torch import Reduce
from torch import nn

# the BLCA-tuned shape: depth 2, 25 latents × 119 dims, one cross-attention head of 16, 8 latent heads
# of 127 (unused: no self-attention), untied layers, SNN feed-forward
BLCA = dict(depth=2, num_latents=25, latent_dim=119, cross_heads=1, cross_dim_head=16, latent_heads=8,
            latent_dim_head=127, self_per_cross_attn=0, attn_dropout=0.1, ff_dropout=0.1,
            weight_tie_layers=False, snn=True)
BLCA_TEXT = "depth 2, 25×119 latents, 1 cross head × 16, 8 latent heads × 127, no self-attention, untied, SNN"
GENES = 200


class RefAttention(nn.Module):
    """Attention as the published code computes it: q from the latents, ``to_kv`` of the (normalised)
    context, einsum similarities, softmax at temperature 0.5, output ``Linear`` + ``LeakyReLU``."""

    def __init__(self, query_dim: int, context_dim: int | None = None, *, heads: int, dim_head: int,
                 dropout: float, temperature: float = 0.5):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale, self.temperature = heads, dim_head ** -0.5, temperature
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim or query_dim, inner * 2, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.LeakyReLU())

    def forward(self, x, context=None):
        q = self.to_q(x)
        k, v = self.to_kv(x if context is None else context).chunk(2, dim=-1)
        q, k, v = (rearrange(t, "b n (h d) -> (b h) n d", h=self.heads) for t in (q, k, v))
        sim = torch.einsum("bid,bjd->bij", q, k) * self.scale
        attn = self.dropout((sim / self.temperature).softmax(dim=-1))
        out = torch.einsum("bij,bjd->bid", attn, v)
        return self.to_out(rearrange(out, "(b h) n d -> b n (h d)", h=self.heads))


class RefFeedForward(nn.Module):
    """GEGLU (SEGLU with ``snn``) feed-forward: Linear d → 8d, one half gating the other to 4d, Linear 4d → d."""

    def __init__(self, dim: int, *, mult: int = 4, dropout: float, snn: bool):
        super().__init__()
        self.proj, self.out = nn.Linear(dim, dim * mult * 2), nn.Linear(dim * mult, dim)
        self.act, self.drop = (nn.SELU(), nn.AlphaDropout(dropout)) if snn else (nn.GELU(), nn.Dropout(dropout))

    def forward(self, x):
        x, gates = self.proj(x).chunk(2, dim=-1)
        return self.out(self.drop(x * self.act(gates)))


class RefPreNorm(nn.Module):
    """LayerNorm of the latents, and of the context on every call (so per layer and modality)."""

    def __init__(self, dim: int, fn: nn.Module, context_dim: int | None = None):
        super().__init__()
        self.fn, self.norm = fn, nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(context_dim) if context_dim else None

    def forward(self, x, context=None):
        if self.norm_context is None:
            return self.fn(self.norm(x))
        return self.fn(self.norm(x), context=self.norm_context(context))


class ReferenceStyle(nn.Module):
    """What the published HEALNet code computes, per layer and modality: cross-attention with the
    context re-normalised and re-projected (:class:`RefPreNorm`, :class:`RefAttention`), a GEGLU/SEGLU
    feed-forward, then the layer's self-attention blocks after EACH modality's update.  Written from
    that description for the benchmark (full bags: no masks, no missing modalities; untied layers)."""

    def __init__(self, *, input_channels, depth: int, num_latents: int, latent_dim: int, cross_heads: int,
                 cross_dim_head: int, latent_heads: int, latent_dim_head: int, num_classes: int = 4,
                 attn_dropout: float = 0.0, ff_dropout: float = 0.0, self_per_cross_attn: int = 1,
                 snn: bool = False, weight_tie_layers: bool = False):
        super().__init__()
        if weight_tie_layers:
            raise ValueError("ReferenceStyle is untied")
        self.latents = nn.Parameter(torch.randn(num_latents, latent_dim))

        def ff():
            return RefPreNorm(latent_dim, RefFeedForward(latent_dim, dropout=ff_dropout, snn=snn))

        def cross(c):
            return RefPreNorm(latent_dim, RefAttention(latent_dim, c, heads=cross_heads, dim_head=cross_dim_head,
                                                       dropout=attn_dropout), context_dim=c)

        def latent():
            return RefPreNorm(latent_dim, RefAttention(latent_dim, heads=latent_heads, dim_head=latent_dim_head,
                                                       dropout=attn_dropout))

        self.layers = nn.ModuleList(nn.ModuleDict({
            "cross": nn.ModuleList(nn.ModuleList([cross(c), ff()]) for c in input_channels),
            "latent": nn.ModuleList(nn.ModuleList([latent(), ff()]) for _ in range(self_per_cross_attn))})
            for _ in range(depth))
        self.to_logits = nn.Sequential(Reduce("b n d -> b d", "mean"), nn.LayerNorm(latent_dim),
                                       nn.Linear(latent_dim, num_classes))

    def forward(self, tensors):
        x = repeat(self.latents, "n d -> b n d", b=tensors[0].shape[0])
        for layer in self.layers:
            for (cross_attn, cross_ff), context in zip(layer["cross"], tensors):
                x = cross_attn(x, context=context) + x
                x = cross_ff(x) + x
                for self_attn, self_ff in layer["latent"]:  # after each modality's update
                    x = self_attn(x) + x
                    x = self_ff(x) + x
        return self.to_logits(x)


def step_rows(patches: list[int], *, dim: int = 1024, genes: int = GENES, batch: int = 4, threads: int = 2,
              repeats: int = 9, steps: int = 3, shape: dict | None = None) -> list[dict]:
    """Seconds per training step of ours and of reference-style at each bag size, measured alternately
    (see the module docstring); rows with the median s/step, and for reference-style the median and
    range of its per-repeat time ÷ ours."""
    from healnet.model import l1_penalty
    from healnet.survival import nll_loss
    from healnet.zoo import build_model

    torch.set_num_threads(threads)
    shape = {**BLCA, **(shape or {})}
    rows = []
    for n in patches:
        g = torch.Generator().manual_seed(n)
        tensors = [torch.randn(batch, n, dim, generator=g), torch.randn(batch, 1, genes, generator=g)]
        masks = [torch.ones(batch, t.shape[1], dtype=torch.bool) for t in tensors]  # as the pipeline passes them
        present = torch.ones(batch, 2, dtype=torch.bool)
        labels, events = torch.arange(batch) % 4, torch.arange(batch) % 3 != 0
        torch.manual_seed(0)
        ours = build_model("healnet", input_channels=[dim, genes], modalities=["wsi", "rna"], num_classes=4, **shape)
        torch.manual_seed(0)
        ref = ReferenceStyle(input_channels=[dim, genes], num_classes=4, **shape)

        def stepper(model, forward):
            opt = torch.optim.Adam(model.parameters(), lr=1e-4)
            model.train()

            def step():
                loss = nll_loss(forward(), labels, events) + 1e-5 * l1_penalty(model)
                opt.zero_grad()
                loss.backward()
                opt.step()
            return step

        run = {"ours": stepper(ours, lambda: ours(tensors, masks=masks, present=present)),
               "reference-style": stepper(ref, lambda: ref(tensors))}
        wall, cpu = {k: [] for k in run}, {k: [] for k in run}
        for step in run.values():  # warm-up: allocator, first-call paths
            step()
            step()
        for r in range(repeats):
            for name in (list(run) if r % 2 == 0 else list(run)[::-1]):
                t, c = time.perf_counter(), time.process_time()
                for _ in range(steps):
                    run[name]()
                wall[name].append((time.perf_counter() - t) / steps)
                cpu[name].append((time.process_time() - c) / steps)
        ratios = [a / b for a, b in zip(wall["reference-style"], wall["ours"])]
        cpu_ratios = [a / b for a, b in zip(cpu["reference-style"], cpu["ours"])]
        for name in run:
            ref = name != "ours"
            rows.append({"patches": n, "variant": name, "s_per_step": float(np.median(wall[name])),
                         "ratio": float(np.median(ratios)) if ref else 1.0,
                         "ratio_min": min(ratios) if ref else 1.0, "ratio_max": max(ratios) if ref else 1.0,
                         "cpu_s_per_step": float(np.median(cpu[name])),
                         "cpu_ratio": float(np.median(cpu_ratios)) if ref else 1.0})
        print(f"  {n} patches: ours {rows[-2]['s_per_step']:.3f} s/step, reference-style {rows[-1]['s_per_step']:.3f} "
              f"s/step, ratio {rows[-1]['ratio']:.2f} (CPU time {rows[-1]['cpu_ratio']:.2f})", flush=True)
    return rows


def print_step_table(rows: list[dict], args, load: tuple[float, float]) -> None:
    print(f"\nOne training step (forward + backward + Adam), in-memory tensors: WSI {args.batch} × patches × "
          f"{args.dim} + RNA {args.batch} × 1 × {GENES}; BLCA shape ({BLCA_TEXT}); {args.threads} threads; "
          f"median of {args.repeats} alternating repeats of {args.steps} steps; OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}; load average {load[0]:.1f} before, "
          f"{load[1]:.1f} after ({os.cpu_count()} CPUs)\n")
    head = (f"{'patches':>8} {'variant':>16} {'s/step':>8} {'× ours':>7} {'(range over repeats)':>21} "
            f"{'CPU s/step':>10} {'× ours':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        extra = "" if r["variant"] == "ours" else f"{r['ratio_min']:.2f}–{r['ratio_max']:.2f}"
        print(f"{r['patches']:>8} {r['variant']:>16} {r['s_per_step']:>8.3f} {r['ratio']:>6.2f}× {extra:>21} "
              f"{r['cpu_s_per_step']:>10.3f} {r['cpu_ratio']:>6.2f}×")
    print("\ns/step: wall clock; × ours: median over repeats of (its time ÷ ours in the same repeat); CPU s/step: "
          "CPU time of both threads, which waiting for a core does not inflate")
