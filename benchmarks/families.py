"""Training and sampling speed of the token priors, side by side, at the digits presets' shapes.

    python benchmarks/families.py [--quick]

Each prior is built as `train-generator` builds it from its preset
(configs/generators/digits-{ar,maskgit,pixelcnn}.yaml), class-conditional over 10 classes:

tokens     a 4x4 grid of 128 codes (the digits-vq tokenizer's), and hvq's sequence of a 2x2 top
           and a 4x4 bottom grid (digits-vqvae2: 20 tokens, for which `pixelcnn` is VQ-VAE-2's
           pair of PixelCNNs).
train      one optimizer step of the family's objective at batch 128, as the engine takes it
           (bf16 autocast, AdamW, clipping): items per second.
sample     2000 items per call, as `latentlab sample` draws them (eval mode, no grad): items
           per second; maskgit at 2, 4, 8 (its preset) and 16 decoding steps, ar with its KV
           cache, pixelcnn one pass over the grid per position.

Speed does not depend on the weights, so the networks are untrained; which MaskGIT step count
matches the AR prior's sample quality is measured on trained runs (the issue's note). Figures
are ratios to the AR prior measured in the same run (`*_over_ar`, above 1: faster), plus
items/s; `other_load` says how busy other processes kept the CPUs (well above 0: noisy).
"""

from __future__ import annotations

from pathlib import Path

import torch
from common import Figure, OtherLoad, median_times, parse_args, print_figures
from training_step import ObjectiveStep

from latentlab import config as C
from latentlab.data.base import Batch
from latentlab.generation.config import GeneratorRunConfig
from latentlab.generation.models import Modelled
from latentlab.generation.train import make_objective
from latentlab.training.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "generators"
FAMILIES = ("ar", "maskgit", "pixelcnn")
SHAPES = {"grid": (4, 4), "hvq": (20,)}
VOCAB, CLASSES = 128, 10


class PriorStep(ObjectiveStep):
    """One training step of a family's objective on random tokens."""

    def __init__(self, family: str, shape: tuple[int, ...], batch: int):
        cfg = C.load(GeneratorRunConfig, CONFIGS / f"digits-{family}.yaml")
        self.cfg = TrainConfig(device="cpu", precision="bf16", channels_last=False)
        torch.manual_seed(0)
        what = Modelled(shape, "indices", CLASSES, VOCAB)
        self.objective = make_objective(cfg, what, None).train()
        g = torch.Generator().manual_seed(1)
        self.batch = Batch(torch.randint(VOCAB, (batch, *shape), generator=g),
                           torch.randint(CLASSES, (batch,), generator=g))
        self.ready()

    def sampler(self, n: int, steps: int | None = None):
        model = self.objective.model
        labels = torch.arange(n) % CLASSES

        def draw():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                if steps is None:
                    return model.sample(n, labels)
                return model.sample(n, labels, steps)
        return draw


def main() -> None:
    args = parse_args(__doc__)
    batch, n, repeats = (16, 64, 1) if args.quick else (128, 2000, 3)
    figures = []
    with OtherLoad() as load:
        for name, shape in SHAPES.items():
            steps = {f: PriorStep(f, shape, batch) for f in FAMILIES}
            train = median_times(steps, repeats, warmup=1)
            draws = {"ar": steps["ar"].sampler(n), "pixelcnn": steps["pixelcnn"].sampler(n)}
            draws |= {f"maskgit{s}": steps["maskgit"].sampler(n, s) for s in (2, 4, 8, 16)}
            sample = median_times(draws, repeats, warmup=1)
            for f, t in train.items():
                figures.append(Figure(f"{name}_train_{f}_items_per_s", batch / t, "items/s"))
                if f != "ar":
                    figures.append(Figure(f"{name}_train_{f}_over_ar", train["ar"] / t, "x"))
            for f, t in sample.items():
                figures.append(Figure(f"{name}_sample_{f}_items_per_s", n / t, "items/s"))
                if f != "ar":
                    figures.append(Figure(f"{name}_sample_{f}_over_ar", sample["ar"] / t, "x"))
    print_figures(figures + [Figure("other_load", 100 * load.fraction, "%")])


if __name__ == "__main__":
    main()
