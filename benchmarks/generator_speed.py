"""Speed of the generators: DiT training, diffusion sampling, autoregressive decoding.

    python benchmarks/generator_speed.py [--quick] [--profile]

The model, for training and sampling alike: a DiT over a 4x8x8 latent, width 256, depth 6,
4 heads, patch 2 (16 tokens of 256 channels, 7.4M parameters), 10 classes.

dit_train  one optimizer step as `latentlab.training.train` takes it for a flow-matching
           `ProcessObjective`: zero grads, forward and flow-matching loss under the engine's
           autocast, backward, clip, the engine's AdamW (foreach). Batch 128, in bf16 autocast
           and in fp32. FLOPs of forward and backward are counted by `FlopCounterMode`
           (matmuls and attention; norms, activations and the optimizer add time, no FLOPs),
           and the bf16 rate is held to the bf16 matmul peak measured a moment earlier.
           (Attention over these 16 tokens runs on SDPA's math backend on CPU, see
           `latentlab.nn.transformer`: the flash kernel's backward took a third of the step.)
dit_peer   the same step on diffusers' `DiTTransformer2DModel` at the same width, depth, heads,
           patch, channels, latent side and classes (`peer_dit`), timed in turns with ours;
           `dit_time_ours_over_diffusers` is our bf16 step time over its. Differences it cannot
           be configured away from: every block holds its own timestep MLP and class table
           (diffusers' conversion of DiT copies the shared embedders into each block), recomputed
           per block, so it has ~0.8M more parameters and a few more (tiny) matmuls; q, k, v are
           three Linears; its attention takes torch's default SDPA backend; its label table
           drops labels (p = 0.1) on top of the objective's dropout, which costs nothing.
sampling   `process.sample` in eval mode under bf16 autocast (no grad), batch 256: flow
           matching with 8 and 16 Euler steps, DDPM's DDIM with 50 steps; DDPM's ancestral
           sampler with all 1000 steps at batch 32, timed once (it is ~1000 small forwards).
ar         `ARTransformer.sample` of 64 and 256 tokens (width 256, depth 6, 4 heads,
           vocabulary 1024, unconditional), batch 16, under bf16 autocast (about twice as fast
           as fp32 uncached, on par cached), with and without the KV cache. Without it every
           step recomputes the whole prefix, so its cost grows as N^2 and the cache's speed-up
           grows with N. 256 uncached tokens take ~20 s: that run is timed once, unwarmed
           (oneDNN meets 256 new prefix shapes in it, warm-up or not).

`other_load` is the share of the CPUs that other processes used during the run: well above
zero, the figures are low and noisy. `--profile` also prints the top operators of the bf16 DiT
training step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from common import (
    PEAK_SIZES,
    QUICK_PEAK_SIZES,
    Figure,
    OtherLoad,
    measure_peak,
    median_time,
    median_times,
    parse_args,
    print_figures,
    print_top_ops,
)
from torch import nn
from training_step import ObjectiveStep, step_flops

from latentlab.data.base import Batch
from latentlab.generation.objectives import ProcessObjective
from latentlab.generators.autoregressive import ARConfig, ARTransformer
from latentlab.generators.ddpm import DDPM
from latentlab.generators.denoisers.dit import DiT, DiTConfig
from latentlab.generators.flow import FlowMatching
from latentlab.generators.process import Process
from latentlab.training.config import TrainConfig

NUM_CLASSES = 10
DIT = DiTConfig(patch_size=2, width=256, depth=6, heads=4)
LATENT = (4, 8, 8)
"""(C, H, W) of one latent."""


def dit() -> DiT:
    return DiT(DIT, LATENT[0], LATENT[1], NUM_CLASSES)
PRECISIONS = ("bf16", "fp32")


class PeerDiT(nn.Module):
    """diffusers' `DiTTransformer2DModel` configured as `dit()`, behind our denoiser signature
    (x_t (B, C, H, W), t (B,) in [0, 1], labels (B,)) -> (B, C, H, W). Its timestep embedding
    expects DDPM's step indices, so t is scaled to [0, 1000]."""

    def __init__(self):
        super().__init__()
        from diffusers import DiTTransformer2DModel  # seconds to import: only when timed

        self.net = DiTTransformer2DModel(
            num_attention_heads=DIT.heads, attention_head_dim=DIT.width // DIT.heads,
            in_channels=LATENT[0], out_channels=LATENT[0],  # no learned-sigma channels
            num_layers=DIT.depth, sample_size=LATENT[1], patch_size=DIT.patch_size,
            activation_fn="gelu-approximate", num_embeds_ada_norm=NUM_CLASSES,
            norm_type="ada_norm_zero", norm_elementwise_affine=False, norm_eps=1e-6)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.net(x, timestep=t * 1000, class_labels=cond).sample

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def ar_model(seq_len: int) -> ARTransformer:
    return ARTransformer(ARConfig(width=256, depth=6, heads=4), 1024, seq_len)


@dataclass(frozen=True)
class Settings:
    """How long to measure: full runs for stable figures, `--quick` for a smoke run."""

    peak_sizes: tuple[int, ...]
    train_batch: int
    repeats: int
    warmup: int
    min_sample_s: float
    sample_batch: int
    sample_repeats: int
    ddpm_batch: int
    ar_batch: int
    ar_lengths: tuple[int, ...]
    ar_repeats: int
    ar_once: int
    """Uncached sampling of this many tokens or more is timed once, without warm-up."""


FULL = Settings(PEAK_SIZES, train_batch=128, repeats=5, warmup=1, min_sample_s=0.3,
                sample_batch=256, sample_repeats=3, ddpm_batch=32, ar_batch=16,
                ar_lengths=(64, 256), ar_repeats=3, ar_once=256)
# smoke run: small batches; the AR lengths too, as 256 uncached tokens take tens of seconds
QUICK = Settings(QUICK_PEAK_SIZES, train_batch=32, repeats=1, warmup=1, min_sample_s=0.0,
                 sample_batch=16, sample_repeats=1, ddpm_batch=2, ar_batch=2,
                 ar_lengths=(16, 64), ar_repeats=1, ar_once=64)


class DiTStep(ObjectiveStep):
    """One step of flow matching on the DiT (as `BareStep` is for the tokenizer). Latents are
    not images, so the engine keeps their memory format (no channels_last)."""

    def __init__(self, precision: str, batch: int, peer: bool = False):
        self.cfg = TrainConfig(device="cpu", precision=precision)
        torch.manual_seed(0)
        model = PeerDiT() if peer else dit()
        self.objective = ProcessObjective(model, FlowMatching(), NUM_CLASSES,
                                          label_dropout=0.1).train()
        self.batch = Batch(torch.randn(batch, *LATENT),
                           torch.randint(0, NUM_CLASSES, (batch,)))
        self.ready()


def train_figures(settings: Settings, peak: float) -> list[Figure]:
    steps = {p: DiTStep(p, settings.train_batch) for p in PRECISIONS}
    peer = DiTStep("bf16", settings.train_batch, peer=True)
    flops, peer_flops = step_flops(steps["bf16"]), step_flops(peer)
    # all in turns, so that a burst of outside load does not skew their ratios
    seconds = median_times(steps | {"peer": peer}, settings.repeats, settings.warmup,
                           settings.min_sample_s)
    for name, step, f in (("dit_train", steps["bf16"], flops), ("dit_peer", peer, peer_flops)):
        print(f"{name}: {step.objective.model.num_parameters / 1e6:.2f}M parameters, "
              f"batch {settings.train_batch}, {f / 1e9:.2f} GFLOP per step")
    peer_s = seconds.pop("peer")
    figures = [Figure("dit_time_ours_over_diffusers", seconds["bf16"] / peer_s, "x"),
               Figure("dit_peer_bf16_images_per_s", settings.train_batch / peer_s, "images/s"),
               Figure("dit_peer_bf16_peak_fraction", 100 * peer_flops / peer_s / 1e9 / peak,
                      "%")]
    for name, t in seconds.items():
        figures.append(Figure(f"dit_train_{name}_images_per_s", settings.train_batch / t,
                              "images/s"))
        if name != "fp32":
            gflops = flops / t / 1e9
            figures += [Figure(f"dit_train_{name}_gflops", gflops, "GFLOP/s"),
                        Figure(f"dit_train_{name}_peak_fraction", 100 * gflops / peak, "%")]
    return figures + [Figure("dit_train_bf16_over_fp32", seconds["fp32"] / seconds["bf16"], "x")]


def sampler(model: nn.Module, process: Process, name: str, steps: int, batch: int
            ) -> Callable[[], torch.Tensor]:
    """A call drawing `batch` latents with `process`'s sampler `name`, under bf16 autocast."""
    cond = torch.randint(0, NUM_CLASSES, (batch,))
    g = torch.Generator().manual_seed(0)

    def run() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return process.sample(model, (batch, *LATENT), cond, steps=steps, sampler=name,
                                  generator=g)

    return run


def sampling_figures(settings: Settings) -> list[Figure]:
    torch.manual_seed(0)
    model = dit().eval()
    flow, ddpm = FlowMatching(), DDPM()
    b = settings.sample_batch
    runs = {"flow_euler8": sampler(model, flow, "euler", 8, b),
            "flow_euler16": sampler(model, flow, "euler", 16, b),
            "ddim50": sampler(model, ddpm, "ddim", 50, b)}
    # the three share their shapes: one short warm-up run sets oneDNN's kernels for all
    sampler(model, flow, "euler", 2, b)()
    seconds = median_times(runs, settings.sample_repeats, warmup=0)
    # 1000 forwards: warm up on a few steps at its batch, then time a single run
    sampler(model, ddpm, "ancestral", 10, settings.ddpm_batch)()
    ddpm_s = median_time(sampler(model, ddpm, "ancestral", 1000, settings.ddpm_batch), 1,
                         warmup=0)
    print(f"sampling: batch {b}; ddpm1000 at batch {settings.ddpm_batch}")
    return [Figure(f"{name}_images_per_s", b / t, "images/s") for name, t in seconds.items()] + [
        Figure("ddpm1000_images_per_s", settings.ddpm_batch / ddpm_s, "images/s")]


def ar_figures(settings: Settings) -> list[Figure]:
    figures, speedups = [], []
    b = settings.ar_batch
    for n in settings.ar_lengths:
        torch.manual_seed(0)
        model = ar_model(n).eval()
        g = torch.Generator().manual_seed(0)

        def run(cache: bool, model: ARTransformer = model, g: torch.Generator = g) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                model.sample(b, generator=g, use_cache=cache)

        if n >= settings.ar_once:
            seconds = {True: median_time(lambda: run(True), settings.ar_repeats, warmup=1),
                       False: median_time(lambda: run(False), 1, warmup=0)}
        else:  # in turns, so that a burst of outside load does not skew their ratio
            seconds = median_times({c: (lambda c=c: run(c)) for c in (True, False)},
                                   settings.ar_repeats, warmup=1)
        figures += [Figure(f"ar_tokens_per_s_{'cache' if c else 'nocache'}_{n}", b * n / t,
                           "tokens/s") for c, t in seconds.items()]
        speedups.append(Figure(f"ar_cache_speedup_{n}", seconds[False] / seconds[True], "x"))
    print(f"ar: batch {b}, bf16 autocast, lengths {settings.ar_lengths}")
    return figures + speedups


def main() -> None:
    args = parse_args(__doc__, profile="also print the top operators of the bf16 DiT "
                                       "training step")
    settings = QUICK if args.quick else FULL

    with OtherLoad() as load:
        peak = measure_peak(torch.bfloat16, settings.peak_sizes)
        figures = [Figure("bf16_matmul_peak", peak, "GFLOP/s")]
        figures += train_figures(settings, peak)
        figures += sampling_figures(settings)
        figures += ar_figures(settings)
    if args.profile:
        print_top_ops(DiTStep("bf16", settings.train_batch))
    print_figures(figures + [Figure("other_load", 100 * load.fraction, "%")])


if __name__ == "__main__":
    main()
