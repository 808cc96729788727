"""Tokenizer presets: one per built-in dataset and bottleneck, e.g. `digits-kl`, `shapes32-fsq`.

Each preset is a full `train-tokenizer` configuration. `configs/<name>.yaml` holds the same
configuration as YAML, only the settings that act (a test keeps the two equal). Names:
DATASET-BOTTLENECK, with `ae` for the plain autoencoder (identity bottleneck) and `dvae` for
DALL-E's discrete VAE (gumbel bottleneck) and `vqvae2` for VQ-VAE-2's two levels (hvq).
"""

from __future__ import annotations

from latentlab import config as C
from latentlab.recipes.train import TokenizerRunConfig

# architecture and training budget per dataset: small enough to train in minutes on 2 cores
DATASETS: dict[str, dict] = {
    "digits": {
        "data": {"spec": "digits"},
        "model": {"arch": {"kind": "conv", "channels": 32, "ch_mult": [1, 2], "blocks": 1}},
        "train": {"steps": 1500, "batch_size": 64, "lr": 2e-3, "warmup": 100,
                  "eval_every": 500, "checkpoint_every": 500, "log_every": 100},
    },
    "shapes32": {
        "data": {"spec": "shapes:size=32"},
        "model": {"arch": {"kind": "conv", "channels": 32, "ch_mult": [1, 2, 2], "blocks": 1}},
        "train": {"steps": 2000, "batch_size": 32, "lr": 1e-3, "warmup": 100,
                  "eval_every": 500, "checkpoint_every": 500, "log_every": 100},
    },
    "faces32": {
        "data": {"spec": "faces:size=32"},
        "model": {"arch": {"kind": "conv", "channels": 32, "ch_mult": [1, 2, 2], "blocks": 1}},
        "train": {"steps": 1000, "batch_size": 32, "lr": 1e-3, "warmup": 100,
                  "eval_every": 500, "checkpoint_every": 500, "log_every": 100},
    },
    "mixture": {
        "data": {"spec": "mixture"},
        "model": {"arch": {"kind": "mlp", "encoder_hidden": [128, 128],
                           "decoder_hidden": [128, 128]}},
        "train": {"steps": 1500, "batch_size": 128, "lr": 2e-3, "warmup": 100,
                  "eval_every": 500, "checkpoint_every": 500, "log_every": 100,
                  "channels_last": False},
    },
}

# the bottleneck and latent size per dataset: discrete codebooks of ~128 codes on digits,
# ~1000 on 32x32 images; a 2-D latent on the mixture toy, as in the DAE paper (§6.1)
BOTTLENECKS: dict[str, dict[str, dict]] = {
    "digits": {
        "ae": {"latent_channels": 2},
        "kl": {"latent_channels": 2, "bottleneck": {"kind": "kl"}},
        "vq": {"latent_channels": 4, "bottleneck": {"kind": "vq", "codebook_size": 128}},
        "fsq": {"latent_channels": 3, "bottleneck": {"kind": "fsq", "levels": [5, 5, 5]}},
        "lfq": {"latent_channels": 7, "bottleneck": {"kind": "lfq"}},
        "dvae": {"latent_channels": 4, "bottleneck": {"kind": "gumbel", "codebook_size": 128,
                                                      "anneal_steps": 1000}},
        "vqvae2": {"latent_channels": 8, "bottleneck": {"kind": "hvq", "codebook_size": 128,
                                                        "hidden": 64}},
    },
    "shapes32": {
        "ae": {"latent_channels": 4},
        "kl": {"latent_channels": 4, "bottleneck": {"kind": "kl"}},
        "vq": {"latent_channels": 8, "bottleneck": {"kind": "vq", "codebook_size": 1024}},
        "fsq": {"latent_channels": 4,
                "bottleneck": {"kind": "fsq", "levels": [8, 5, 5, 5]}},
        "lfq": {"latent_channels": 10, "bottleneck": {"kind": "lfq"}},
        "dvae": {"latent_channels": 8, "bottleneck": {"kind": "gumbel", "codebook_size": 1024,
                                                      "anneal_steps": 1000}},
        "vqvae2": {"latent_channels": 16, "bottleneck": {"kind": "hvq", "codebook_size": 512,
                                                         "hidden": 64}},
    },
    "mixture": {
        "ae": {"latent_channels": 2},
        "kl": {"latent_channels": 2, "bottleneck": {"kind": "kl"}},
        "vq": {"latent_channels": 2, "bottleneck": {"kind": "vq", "codebook_size": 64}},
        "fsq": {"latent_channels": 2, "bottleneck": {"kind": "fsq", "levels": [8, 8]}},
        "lfq": {"latent_channels": 6, "bottleneck": {"kind": "lfq"}},
        "dvae": {"latent_channels": 2, "bottleneck": {"kind": "gumbel", "codebook_size": 64,
                                                      "anneal_steps": 1000}},
    },
}
BOTTLENECKS["faces32"] = BOTTLENECKS["shapes32"]


def _preset(dataset: str, bottleneck: str) -> TokenizerRunConfig:
    variant = {"model": BOTTLENECKS[dataset][bottleneck]}
    return C.from_dict(TokenizerRunConfig, C.merge(DATASETS[dataset], variant))


TOKENIZER_PRESETS: dict[str, TokenizerRunConfig] = {
    f"{d}-{b}": _preset(d, b) for d in DATASETS for b in BOTTLENECKS[d]}


def preset_yaml(name: str) -> str:
    """`configs/<name>.yaml`: the preset's settings that act, a comment per section (`latentlab
    train-tokenizer --help` documents each field)."""
    return (f"# `latentlab train-tokenizer --preset {name}` as a config file (generated from\n"
            "# latentlab.recipes.presets; tests/test_presets.py keeps the two equal)\n"
            + C.dump_yaml(TOKENIZER_PRESETS[name], comments=False))
