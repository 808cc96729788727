"""Tokenizer speed: the KL conv tokenizer's training step against this machine's peak, and our
vector quantiser against vector-quantize-pytorch's (time per call, then codebook use after the
same short training).

    python benchmarks/tokenizer_speed.py [--quick] [--profile]

Needs the `bench` extra (`pip install -e '.[bench]'`) for the peer, vector-quantize-pytorch.

1. `tokenizer_kl`: `KL_CASE`, the conv tokenizer on 3x32x32 images, batch 64: encoder conv_in
   3->128, one ResBlock per level at widths (128, 256, 256) with a stride-2 conv between levels,
   GroupNorm + SiLU + conv to 2x4 channels (mean, log-variance); KL bottleneck to a 4x8x8 latent;
   the mirror-image decoder (nearest x2 + conv up-sampling). One bare engine step
   (`training_step.BareStep`: zero grads, forward, backward, clip, AdamW) in the engine's bf16
   setting (autocast + channels_last) and in fp32 NCHW; FLOPs by `FlopCounterMode`. Figures:
   images/s, GFLOP/s, fraction of the matmul peak of that precision measured in the same run,
   bf16 speed-up. The project aims at >= 30 % of the bf16 peak.
2. `vq_forward_backward_ms_*`: one training-mode call, forward and backward, of our
   `VectorQuantizer` and of the peer's `VectorQuantize`, timed in turns: input (64, 64, 16, 16)
   fp32 (16384 tokens of dim 64), codebook 1024 (the same initial codes for both, drawn from
   the input's tokens), EMA updates, settings `OURS_TIMING` / `PEER_TIMING`.
3. `vq_usage_*`, `vq_perplexity_*`, `vq_recon_mse_*`: the digits-vq preset's conv encoder and
   decoder (channels 32, ch_mult (1, 2): 8x8 digits -> 4x4 tokens) with each quantiser between
   them (dim 8, codebook 256, each library's k-means init and dead-code handling,
   `OURS_USAGE` / `PEER_USAGE`), trained alike (same initial weights, batches and AdamW) for
   `Settings.usage_steps` steps in fp32; then, on the test split: the fraction of codes used,
   the perplexity of the code histogram, and the reconstruction MSE (pixels in [-1, 1]).
   `*_peer_rotation` is the peer again with its default gradient, the rotation trick.

Otherwise both quantisers get the plain straight-through gradient, and neither uses its extras
(projections, heads, orthogonal or diversity losses). `other_load`
is the share of the CPUs that other processes used meanwhile: well above zero, the times are
long and noisy. `--profile` also prints the top operators of the bf16 KL step and of each VQ
call.

Legend: B batch, C channels, H height, W width, N tokens, K codebook size.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from common import (
    PEAK_SIZES,
    QUICK_PEAK_SIZES,
    Figure,
    OtherLoad,
    measure_peak,
    median_times,
    parse_args,
    print_figures,
    print_top_ops,
)
from torch import nn
from training_step import BareStep, Case, case_figures, measure_cases

from latentlab.data import load_dataset
from latentlab.nn import num_parameters
from latentlab.recipes.presets import TOKENIZER_PRESETS
from latentlab.tokenizers.bottlenecks import BottleneckOutput, KLConfig
from latentlab.tokenizers.bottlenecks.usage import code_histogram, perplexity
from latentlab.tokenizers.bottlenecks.vq import VectorQuantizer, VQConfig
from latentlab.tokenizers.conv import ConvConfig, ConvDecoder, ConvEncoder
from latentlab.tokenizers.tokenizer import TokenizerConfig

try:
    from vector_quantize_pytorch import VectorQuantize
except ImportError:
    VectorQuantize = None

KL_CASE = Case(TokenizerConfig(latent_channels=4,
                               arch=ConvConfig(channels=128, ch_mult=(1, 2, 2)),
                               bottleneck=KLConfig()),
               (3, 32, 32), 64)

# timing: the same EMA quantiser in both libraries; k-means init and dead-code restarts off, so
# that every timed call does the same work
VQ_SHAPE = (64, 64, 16, 16)
"""(B, C, H, W) input of the timed calls."""
OURS_TIMING = VQConfig(codebook_size=1024, beta=0.25, update="ema", decay=0.99, eps=1e-5,
                       kmeans_init=False, restart_dead=False)
PEER_TIMING = dict(codebook_size=1024, commitment_weight=0.25, decay=0.99, eps=1e-5,
                   kmeans_init=False, threshold_ema_dead_code=0)

# usage: each library's recommended dead-code handling (ours: the VQConfig defaults; the peer:
# its README's `threshold_ema_dead_code = 2` and `kmeans_init = True`)
USAGE_DIM = 8
OURS_USAGE = VQConfig(codebook_size=256, beta=0.25, update="ema", decay=0.99, eps=1e-5,
                      kmeans_init=True, kmeans_iters=10, restart_dead=True, dead_threshold=1.0)
PEER_USAGE = dict(codebook_size=256, commitment_weight=0.25, decay=0.99, eps=1e-5,
                  kmeans_init=True, kmeans_iters=10, threshold_ema_dead_code=2)
USAGE_PRESET = TOKENIZER_PRESETS["digits-vq"]
USAGE_RUNS = ("ours", "peer", "peer_rotation")
"""Quantisers trained for the usage figures: the peer also with its default rotation trick."""


class PeerVQ(nn.Module):
    """The peer's `VectorQuantize` behind our bottleneck interface: (B, C, H, W) ->
    BottleneckOutput(latent (B, C, H, W), indices (B, H, W), weighted commitment loss).

    The plain straight-through estimator, as ours, unless `rotation_trick` (the peer's default,
    Fifty et al. 2024, "Restructuring vector quantization with the rotation trick"); a single
    codebook, no projection.
    """

    def __init__(self, channels: int, rotation_trick: bool = False, **settings):
        super().__init__()
        self.vq = VectorQuantize(dim=channels, accept_image_fmap=True,
                                 rotation_trick=rotation_trick, **settings)

    def forward(self, z: torch.Tensor) -> BottleneckOutput:
        latent, indices, loss = self.vq(z)
        return BottleneckOutput(latent, indices, loss)


def build_quantizer(name: str, channels: int, ours: VQConfig, peer: dict) -> nn.Module:
    """The quantiser `name` with `channels` channels and the settings given: "ours", "peer"
    (straight-through, as ours) or "peer_rotation" (the peer's default gradient)."""
    if name == "ours":
        return VectorQuantizer(channels, ours)
    return PeerVQ(channels, rotation_trick=name == "peer_rotation", **peer)


# ---------------------------------------------------------------- 2. VQ time per call


@torch.no_grad()
def set_codebook(quantizer: nn.Module, codes: torch.Tensor) -> None:
    """Start `quantizer` from (K, C) `codes`, each with an EMA count of one (both libraries'
    own starting count), with its k-means init done or off."""
    if isinstance(quantizer, VectorQuantizer):
        quantizer.codebook.copy_(codes)
        quantizer.embed_sum.copy_(codes)
        quantizer.cluster_size.fill_(1.0)
        quantizer.initialized.fill_(True)
    else:
        book = quantizer.vq._codebook  # (1, K, C) buffers: one codebook
        book.embed.copy_(codes[None])
        book.embed_avg.copy_(codes[None])
        book.cluster_size.fill_(1.0)
        book.initted.fill_(True)


class VQCall:
    """One training-mode forward and backward of a quantiser on a fixed input, with a fixed
    upstream gradient of the latent plus the quantiser's own loss."""

    def __init__(self, quantizer: nn.Module, z: torch.Tensor, grad: torch.Tensor):
        self.quantizer, self.z, self.grad = quantizer.train(), z.requires_grad_(), grad

    def __call__(self) -> None:
        out = self.quantizer(self.z)
        ((out.latent * self.grad).sum() + out.loss).backward()
        self.z.grad = None


def vq_calls() -> dict[str, VQCall]:
    """Our quantiser and the peer's on the same input, from the same initial codebook."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(VQ_SHAPE, generator=g)  # (B, C, H, W)
    grad = torch.randn(VQ_SHAPE, generator=g)
    tokens = z.movedim(1, -1).reshape(-1, VQ_SHAPE[1])  # (N, C)
    codes = tokens[torch.randperm(len(tokens), generator=g)[:OURS_TIMING.codebook_size]]
    quantizers = {n: build_quantizer(n, VQ_SHAPE[1], OURS_TIMING, PEER_TIMING)
                  for n in ("ours", "peer")}
    for q in quantizers.values():
        set_codebook(q, codes)
    return {name: VQCall(q, z.clone(), grad) for name, q in quantizers.items()}


# ---------------------------------------------------------------- 3. codebook use


class VQAutoencoder(nn.Module):
    """The digits-vq preset's conv encoder and decoder with `quantizer` between them:
    (B, 1, 8, 8) -> reconstruction (B, 1, 8, 8) and the quantiser's output (B, D, 4, 4)."""

    def __init__(self, quantizer: nn.Module, dim: int, conv: ConvConfig):
        super().__init__()
        self.encoder = ConvEncoder(conv, 1, dim)
        self.decoder = ConvDecoder(conv, dim, 1)
        self.quantizer = quantizer

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, BottleneckOutput]:
        out = self.quantizer(self.encoder(x))
        return self.decoder(out.latent), out


@dataclass(frozen=True)
class UsageResult:
    """Test-split figures of one trained VQ autoencoder."""

    usage: float
    """Fraction of the K codes picked at least once."""
    perplexity: float
    """exp(entropy) of the code histogram: K at uniform use of all codes."""
    recon_mse: float
    """Mean squared reconstruction error per pixel."""


def all_images(split: str) -> torch.Tensor:
    """Every image of the usage preset's dataset split: (N, 1, 8, 8) in [-1, 1]."""
    data = load_dataset(USAGE_PRESET.data.spec, split)
    return data.__getitems__(list(range(len(data)))).x


def train_and_score(name: str, steps: int, seed: int = 0) -> UsageResult:
    """Train the VQ autoencoder with quantiser `name` (see `build_quantizer`) on digits for `steps`
    AdamW steps of batch 64 in fp32, then score it on the test split.

    Both quantisers meet the same initial encoder and decoder weights and the same batches.
    """
    train_x, test_x = all_images("train"), all_images("test")
    torch.manual_seed(seed)
    # encoder and decoder first, so that their weights do not depend on which quantiser follows
    model = VQAutoencoder(nn.Identity(), USAGE_DIM, USAGE_PRESET.model.arch)
    model.quantizer = build_quantizer(name, USAGE_DIM, OURS_USAGE, PEER_USAGE)
    cfg = USAGE_PRESET.train
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas,
                                  weight_decay=0.0)
    order = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # k-means seeding and dead-code restarts draw from the global RNG
    model.train()
    for _ in range(steps):
        x = train_x[torch.randint(len(train_x), (cfg.batch_size,), generator=order)]
        x_hat, out = model(x)
        loss = F.mse_loss(x_hat, x) + out.loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        x_hat, out = model(test_x)
    counts = code_histogram(out.indices, OURS_USAGE.codebook_size)  # (K,)
    return UsageResult(float((counts > 0).float().mean()), float(perplexity(counts)),
                       float(F.mse_loss(x_hat, test_x)))


# ---------------------------------------------------------------- main


@dataclass(frozen=True)
class Settings:
    """How long to measure: full runs for stable figures, `--quick` for a smoke run."""

    kl_case: Case
    peak_sizes: tuple[int, ...]
    kl_repeats: int
    vq_repeats: int
    warmup: int
    min_sample_s: float
    usage_steps: int


FULL = Settings(KL_CASE, PEAK_SIZES, kl_repeats=5, vq_repeats=9, warmup=1, min_sample_s=0.3,
                usage_steps=400)
# a batch of 64 is ~0.9 TFLOP per step: smoke runs take 2
QUICK = Settings(Case(KL_CASE.model, KL_CASE.shape, 2), QUICK_PEAK_SIZES, kl_repeats=1,
                 vq_repeats=1, warmup=1, min_sample_s=0.0, usage_steps=30)


def main() -> None:
    args = parse_args(__doc__, profile="also print the top operators of the bf16 KL step and "
                                       "of each VQ")
    if VectorQuantize is None:
        sys.exit("tokenizer_speed.py: vector-quantize-pytorch is not installed; "
                 "pip install -e '.[bench]' (or pip install vector-quantize-pytorch)")
    s = QUICK if args.quick else FULL

    with OtherLoad() as load:
        peaks = {"fp32": measure_peak(torch.float32, s.peak_sizes),
                 "bf16": measure_peak(torch.bfloat16, s.peak_sizes)}
        flops, seconds = measure_cases({"tokenizer_kl": s.kl_case}, s.kl_repeats, s.warmup,
                                       s.min_sample_s)
        calls = vq_calls()
        vq_seconds = median_times(calls, s.vq_repeats, s.warmup, s.min_sample_s)
        usage = {name: train_and_score(name, s.usage_steps) for name in USAGE_RUNS}
    if args.profile:
        print("top operators of the bf16 KL tokenizer step:")
        print_top_ops(BareStep(s.kl_case, "bf16"))
        for name, call in calls.items():
            print(f"top operators of the VQ call, {name}:")
            print_top_ops(call, calls=5)

    params = num_parameters(s.kl_case.tokenizer())
    print(f"tokenizer_kl: {params / 1e6:.2f} M parameters, batch {s.kl_case.batch}, "
          f"{flops['tokenizer_kl'] / 1e9:.1f} GFLOP per training step")
    print(f"vq timing: ours {OURS_TIMING}; peer {PEER_TIMING}")
    print(f"vq usage ({s.usage_steps} steps): ours {OURS_USAGE}; peer {PEER_USAGE}")
    by_precision = {p: seconds["tokenizer_kl", p] for p in ("bf16", "fp32")}
    figures = [Figure("fp32_matmul_peak", peaks["fp32"], "GFLOP/s"),
               Figure("bf16_matmul_peak", peaks["bf16"], "GFLOP/s")]
    figures += case_figures("tokenizer_kl", s.kl_case, by_precision, flops["tokenizer_kl"],
                            peaks)
    figures += [Figure(f"vq_forward_backward_ms_{n}", 1e3 * t, "ms") for n, t in vq_seconds.items()]
    figures.append(Figure("vq_time_ours_over_peer", vq_seconds["ours"] / vq_seconds["peer"], "x"))
    for field, unit, scale in (("usage", "%", 100), ("perplexity", "codes", 1),
                               ("recon_mse", "", 1)):
        figures += [Figure(f"vq_{field}_{n}", scale * getattr(r, field), unit)
                    for n, r in usage.items()]
    print_figures(figures + [Figure("other_load", 100 * load.fraction, "%")])


if __name__ == "__main__":
    main()
