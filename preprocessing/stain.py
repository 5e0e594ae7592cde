"""Stain normalisation of patch batches, on the fly, in torch (on the GPU with the encoder when
there is one).  Nothing is written back to the slides.

Methods (``features.stain_norm``):

* ``macenko`` (Macenko et al., ISBI 2009): per patch, the two stain vectors in optical density
  (OD) are the extreme angles (1st and 99th percentile) of the tissue pixels projected on the
  plane of their two main eigenvectors; concentrations by least squares; each stain's 99th
  percentile concentration scaled to the target's and the patch rebuilt with the target's vectors.
  The same steps and constants as torchstain's ``TorchMacenkoNormalizer`` (Io 240, alpha 1,
  beta 0.15), batched: one ``eigh`` of B 3×3 covariances and one sort instead of a Python loop
  over patches.  One deviation: the eigenvectors are turned to point into positive OD, which
  torchstain leaves to chance (a flipped sign gives negative stain vectors).
* ``vahadane`` (Vahadane et al., IEEE TMI 2016): stain vectors by sparse non-negative matrix
  factorisation of the tissue OD, batched in torch (multiplicative updates from the Macenko
  vectors); concentrations, scaling and rebuild as Macenko.  TIAToolbox's ``VahadaneExtractor``
  is not used: it fits its dictionary on the transposed OD matrix (its own warning, issue #382),
  returns vectors with negative entries on CMU-1, and costs 30 ms per patch on the CPU.
* ``reinhard`` (Reinhard et al., 2001): each patch's Lab channels standardised and given the
  target's mean and standard deviation (torchstain's ``TorchReinhardNormalizer``, batched).

The target a cohort's patches are normalised to is fitted and stored by
:mod:`preprocessing.stain_target`.

A patch whose stain estimate fails is encoded raw, and its status says why (:data:`STATUS`):
``blank`` (fewer than ``min_tissue`` of its sampled pixels have OD ≥ beta in every channel:
glass, a bubble), ``pen`` (more than ``max_pen`` of its pixels in marker-ink colours, which
Macenko would otherwise turn into hematoxylin), ``no_estimate`` (no finite, well-conditioned
estimate: the two stain vectors nearly parallel, a zero concentration).
"""
from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger(__name__)

METHODS = ("macenko", "vahadane", "reinhard")
IO = 240.0  # transmitted light intensity (torchstain's default)
ALPHA = 1.0  # percentile of the extreme angles, %
BETA = 0.15  # OD below which a pixel (in any channel) is background
VAHADANE_LAMBDA = 0.1  # sparsity of the concentrations (Vahadane et al.)
VAHADANE_ITERATIONS = 50
MIN_TISSUE = 0.01  # fraction of a patch's pixels that must be stained for an estimate
MAX_PEN = 0.1  # fraction of a patch's pixels in marker-ink colours beyond which it is not normalised
PEN_HUE = (70.0, 240.0)  # degrees: green to blue (config tissue.pen_hue_min, pen_hue_max defaults)
PEN_SATURATION = 60  # 0-255 (config tissue.pen_min_saturation default)
STATUS = {0: "ok", 1: "blank", 2: "pen", 3: "no_estimate"}
#: columns of the per-patch ``stain_fit`` array of a feature store
FIT_COLUMNS = {
    "macenko": ["H_r", "H_g", "H_b", "E_r", "E_g", "E_b", "maxC_H", "maxC_E"],
    "vahadane": ["H_r", "H_g", "H_b", "E_r", "E_g", "E_b", "maxC_H", "maxC_E"],
    "reinhard": ["L_mean", "a_mean", "b_mean", "L_std", "a_std", "b_std"],
}
_RGB2XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_WHITE = (0.95047, 1.0, 1.08883)


# ---------------------------------------------------------------------------------------------
# optical density and stain vectors


def optical_density(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) → float32 OD (B, H·W, 3), ``-log((I + 1) / Io)``."""
    od = rgb.reshape(rgb.shape[0], -1, 3).float().add_(1).log_()
    return od.neg_().add_(float(np.log(IO)))


def _kth_of_valid(values: torch.Tensor, n_valid: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q``-th percentile (nearest rank, as torchstain's ``percentile``) of each row's first
    ``n_valid`` values after sorting; ``values`` has +inf where a value is not valid."""
    ranks = torch.round(0.01 * q * (n_valid.float() - 1).clamp(min=0)).long()
    return values.sort(dim=1).values.gather(1, ranks[:, None])[:, 0]


def macenko_vectors(od: torch.Tensor, tissue: torch.Tensor) -> torch.Tensor:
    """Stain vectors (B, 3, 2), columns H then E, unit length, of each patch's ``tissue`` pixels
    (B, N bool); NaN where a patch has fewer than 2 such pixels."""
    w = tissue.float()
    n = w.sum(1)
    mean = (od * w[..., None]).sum(1) / n.clamp(min=1)[:, None]
    centred = (od - mean[:, None]) * w[..., None]
    cov = centred.transpose(1, 2) @ centred / (n - 1).clamp(min=1)[:, None, None]
    eigvecs = torch.linalg.eigh(cov).eigenvectors[..., 1:]  # the two largest eigenvalues
    eigvecs = eigvecs * torch.where(eigvecs.sum(1, keepdim=True) < 0, -1.0, 1.0)  # into positive OD
    proj = od @ eigvecs
    phi = torch.atan2(proj[..., 1], proj[..., 0]).masked_fill(~tissue, float("inf"))
    angles = torch.stack([_kth_of_valid(phi, n, ALPHA), _kth_of_valid(phi, n, 100 - ALPHA)], 1)  # (B, 2)
    v = eigvecs @ torch.stack([angles.cos(), angles.sin()], 1)  # (B, 3, 2): [vMin, vMax]
    h_first = (v[:, 0, 0] > v[:, 0, 1])[:, None, None]
    he = torch.where(h_first, v, v.flip(2))
    he = he / he.norm(dim=1, keepdim=True)
    return he.masked_fill((n < 2)[:, None, None], float("nan"))


def vahadane_vectors(od: torch.Tensor, tissue: torch.Tensor, iterations: int = VAHADANE_ITERATIONS) -> torch.Tensor:
    """Stain vectors (B, 3, 2), H then E, by Vahadane's sparse non-negative factorisation of each
    patch's tissue OD, ``min ½‖V − W·S‖² + λ‖W‖₁`` with W, S ≥ 0 and unit stain rows S, solved
    by multiplicative updates started from the Macenko vectors (deterministic, batched)."""
    he0 = macenko_vectors(od, tissue)
    ok = torch.isfinite(he0).all(-1).all(-1)
    s = torch.where(ok[:, None, None], he0, torch.full_like(he0, 0.5)).clamp(min=1e-3).transpose(1, 2)  # (B, 2, 3)
    v = (od * tissue[..., None]).clamp(min=0)  # (B, N, 3); background rows are zero and stay out
    w = (v @ torch.linalg.pinv(s)).clamp(min=1e-3) * tissue[..., None]  # (B, N, 2)
    eps = 1e-9
    for _ in range(iterations):
        w = w * (v @ s.transpose(1, 2)) / (w @ (s @ s.transpose(1, 2)) + VAHADANE_LAMBDA + eps)
        s = s * (w.transpose(1, 2) @ v) / ((w.transpose(1, 2) @ w) @ s + eps)
        norm = s.norm(dim=2, keepdim=True).clamp(min=eps)
        s, w = s / norm, w * norm.transpose(1, 2)
    he = s.transpose(1, 2)
    he = torch.where((he[:, 0, 0] >= he[:, 0, 1])[:, None, None], he, he.flip(2))  # H absorbs more red
    return he.masked_fill(~ok[:, None, None], float("nan"))


def max_concentrations(conc: torch.Tensor) -> torch.Tensor:
    """99th percentile (nearest rank) of each stain's concentration over every pixel: (B, 2)."""
    k = 1 + round(0.99 * (conc.shape[1] - 1))
    return conc.kthvalue(k, dim=1).values


def angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle in degrees between the columns of (…, 3, 2) stain matrices."""
    cos = (a * b).sum(-2) / (a.norm(dim=-2) * b.norm(dim=-2))
    return torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))


def pen_fraction(rgb: torch.Tensor) -> torch.Tensor:
    """Fraction of each patch's pixels (B, N, 3 uint8) in marker-ink colours: hue in
    [:data:`PEN_HUE`) degrees (green to blue; H&E is purple to pink) and saturation ≥
    :data:`PEN_SATURATION` (0-255), the tissue stage's default pen definition."""
    x = rgb.float()
    hi, lo = x.max(-1).values, x.min(-1).values
    r, g, b = x.unbind(-1)
    chroma = (hi - lo).clamp(min=1e-6)
    hue = torch.where(hi == r, ((g - b) / chroma) % 6, torch.where(hi == g, (b - r) / chroma + 2, (r - g) / chroma + 4))
    sat = 255 * (hi - lo) / hi.clamp(min=1)
    pen = (hue * 60 >= PEN_HUE[0]) & (hue * 60 < PEN_HUE[1]) & (sat >= PEN_SATURATION) & (hi > lo)
    return pen.float().mean(1)


# ---------------------------------------------------------------------------------------------
# Lab (Reinhard)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 255] float (…, 3) sRGB → CIE Lab (…, 3) (L 0-100), D65 white, as torchstain."""
    x = rgb.float() / 255
    x = torch.where(x > 0.04045, ((x + 0.055) / 1.055) ** 2.4, x / 12.92)
    xyz = x @ torch.tensor(_RGB2XYZ, device=x.device).T / torch.tensor(_WHITE, device=x.device)
    f = torch.where(xyz > 0.008856, xyz.clamp(min=0) ** (1 / 3), 7.787 * xyz + 16 / 116)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab (…, 3) → uint8 sRGB (…, 3), the inverse of :func:`rgb_to_lab`."""
    fy = (lab[..., 0] + 16) / 116
    f = torch.stack([lab[..., 1] / 500 + fy, fy, fy - lab[..., 2] / 200], -1)
    xyz = torch.where(f > 0.2068966, f ** 3, (f - 16 / 116) / 7.787) * torch.tensor(_WHITE, device=lab.device)
    x = xyz @ torch.linalg.inv(torch.tensor(_RGB2XYZ, device=lab.device)).T
    x = torch.where(x > 0.0031308, 1.055 * x.clamp(min=0) ** (1 / 2.4) - 0.055, x * 12.92)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


# ---------------------------------------------------------------------------------------------
# per batch


class StainNormaliser:
    """Normalises uint8 (B, H, W, 3) batches to a target, on the batch's device.

    Returns the batch (raw where a patch falls back), a uint8 status per patch (:data:`STATUS`)
    and a float32 fit per patch (:data:`FIT_COLUMNS`; NaN where it fell back).  Stains are
    estimated on every ``stride``-th pixel in each direction (``stride`` 2: a quarter of them,
    which moves the vectors by well under a degree and halves the cost on a CPU; 1: every pixel,
    exactly torchstain's estimate), and applied to every pixel."""

    def __init__(self, target: dict, device: torch.device | str = "cpu", *, min_tissue: float = MIN_TISSUE,
                 max_pen: float = MAX_PEN, stride: int = 2):
        self.method, self.target = target["method"], target
        self.min_tissue, self.max_pen, self.stride = float(min_tissue), float(max_pen), int(stride)
        self.device = torch.device(device)
        if self.method == "reinhard":
            self.mean = torch.tensor(target["lab_mean"], device=self.device)
            self.std = torch.tensor(target["lab_std"], device=self.device)
        else:
            self.he = torch.tensor(target["stain_matrix"], device=self.device)
            self.max_c = torch.tensor(target["max_concentration"], device=self.device)

    @property
    def columns(self) -> list[str]:
        return FIT_COLUMNS[self.method]

    def settings(self) -> dict:
        return {"min_tissue": self.min_tissue, "max_pen": self.max_pen, "stride": self.stride}

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sample = batch[:, ::self.stride, ::self.stride].reshape(len(batch), -1, 3)
        od_s = optical_density(sample)
        tissue = (od_s >= BETA).all(-1)
        status = torch.zeros(len(batch), dtype=torch.uint8, device=batch.device)
        if self.method == "reinhard":
            out, fit, failed = self._reinhard(batch)
        else:
            out, fit, failed = self._stains(batch, od_s, tissue)
        status[failed] = 3
        status[pen_fraction(sample) > self.max_pen] = 2
        status[tissue.float().mean(1) < self.min_tissue] = 1
        fit[status != 0] = float("nan")
        return torch.where((status == 0)[:, None, None, None], out, batch), status, fit

    def _stains(self, batch, od_s, tissue):
        he = (macenko_vectors if self.method == "macenko" else vahadane_vectors)(od_s, tissue)
        ok = torch.isfinite(he).all(-1).all(-1)
        he = torch.where(ok[:, None, None], he, self.he)  # keep NaN out of the batched algebra
        ok &= torch.linalg.svdvals(he)[:, -1] > 0.05  # H and E not (nearly) the same colour
        unmix = torch.linalg.pinv(he)  # (B, 2, 3): OD -> concentrations
        max_c = max_concentrations(od_s @ unmix.transpose(1, 2))
        ok &= torch.isfinite(max_c).all(-1) & (max_c > 1e-3).all(-1)
        scale = self.max_c / torch.where(ok[:, None], max_c, self.max_c)
        mix = self.he @ (scale[:, :, None] * unmix)  # (B, 3, 3): raw OD -> normalised OD
        # Io·exp(-mix·OD) with OD = log Io - log(I + 1), on channel planes: a (3 × 3)·(3 × N) bmm
        # is 4× faster on a CPU than (N × 3)·(3 × 3) on interleaved pixels
        b, h, w, _ = batch.shape
        log_i = batch.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
        log_i = log_i.view(b, 3, h * w).add_(1).log_()
        shift = float(np.log(IO)) * mix.sum(-1, keepdim=True)  # (B, 3, 1)
        out = torch.bmm(mix, log_i).sub_(shift).exp_().mul_(IO).clamp_(0, 255)
        fit = torch.cat([he.transpose(1, 2).reshape(-1, 6), max_c], 1)
        return out.view(b, 3, h, w).permute(0, 2, 3, 1).to(torch.uint8), fit, ~ok

    def _reinhard(self, batch):
        lab = rgb_to_lab(batch).reshape(len(batch), -1, 3)
        mean, std = lab.mean(1), lab.std(1)
        ok = torch.isfinite(std).all(-1) & (std > 1e-3).all(-1)
        scaled = (lab - mean[:, None]) / torch.where(ok[:, None], std, 1.0)[:, None] * self.std + self.mean
        return lab_to_rgb(scaled).reshape(batch.shape), torch.cat([mean, std], 1), ~ok


def summary(target: dict, status: np.ndarray, fit: np.ndarray, settings: dict) -> dict:
    """The ``stain_norm`` attribute of a feature store: method, target (with its stain matrix),
    the slide's fitted stain matrix (median over its normalised patches), and the fallbacks."""
    ok = status == 0
    out = {"method": target["method"], "target": target, **settings,
           "fit_columns": FIT_COLUMNS[target["method"]], "n_normalised": int(ok.sum()),
           "n_fallback": int((~ok).sum()), "fallback": {STATUS[k]: int((status == k).sum()) for k in (1, 2, 3)}}
    median = np.median(fit[ok], axis=0).tolist() if ok.any() else None
    if target["method"] == "reinhard":
        out["lab_mean"], out["lab_std"] = (median[:3], median[3:]) if median else (None, None)
    else:
        out["stain_matrix"] = np.asarray(median[:6]).reshape(2, 3).T.tolist() if median else None
        out["max_concentration"] = median[6:] if median else None
    return out
