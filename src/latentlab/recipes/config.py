"""How a decomposer is trained: the recipe and its settings.

    baseline     reconstruction + the bottleneck's own loss (+ GAN)
    dae          stage 1 with a weak decoder, stage 2 a fresh full decoder on a frozen encoder
    coupled      tiny generators regularise the latent and predict the big generator's error,
                 which the decoder learns to undo
    coupled+dae  coupled in stage 1, then the DAE's stage 2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RECIPES = ("baseline", "dae", "coupled", "coupled+dae")


@dataclass
class DAEConfig:
    stage1_fraction: float = 0.5
    """Share of the training steps spent in stage 1 (encoder + weak decoder)."""
    weak_width: float = 0.25
    """Width multiplier of the stage-1 decoder (< 1 makes it weak; 1 keeps the full width)."""
    weak_dropout: float = 0.0
    """Channel dropout in the stage-1 decoder's residual blocks (another way to weaken it)."""

    def __post_init__(self):
        if not 0 < self.stage1_fraction < 1:
            raise ValueError(f"stage1_fraction: must be in (0, 1), got {self.stage1_fraction}")
        if not 0 < self.weak_width <= 1:
            raise ValueError(f"weak_width: must be in (0, 1], got {self.weak_width}")
        if not 0 <= self.weak_dropout < 1:
            raise ValueError(f"weak_dropout: must be in [0, 1), got {self.weak_dropout}")
        if self.weak_width == 1 and self.weak_dropout == 0:
            raise ValueError("weak_width: 1 with weak_dropout 0 is not a weak decoder; lower "
                             "one of them")


@dataclass
class CoupledConfig:
    family: Literal["auto", "flow", "ddpm", "vpsde", "ar"] = "auto"
    """Family of the tiny generators: auto is flow for continuous latents and ar (next token)
    for discrete ones."""
    widths: tuple[int, ...] = (32, 64, 128)
    """Widths of the tiny generators, a geometric series (at least 3 for the scaling fit)."""
    tiny: Literal["mlp", "dit"] = "mlp"
    """Network of the tiny generators of a continuous latent: an MLP on the flattened latent, or
    the big generator in miniature (dit: its patching, depth, heads' width and conditioning at
    each of `widths`; needs a DiT big generator)."""
    condition: Literal["auto", "text", "none"] = "auto"
    """What the tiny generators are conditioned on: text (the data's captions, through a
    caption tokenizer trained on the training captions and a one-block text encoder per tiny
    generator), or none; auto: text when the data has captions."""
    depth: int = 2
    """Residual blocks (MLP) or transformer blocks (ar) of each tiny generator (a tiny DiT takes
    the big one's depth)."""
    weight: float = 0.1
    """Weight lambda of the predictability regularizer once ramped in."""
    ramp: int = 200
    """Steps over which lambda rises linearly from 0 (after `start`)."""
    start: int = 200
    """Step at which the regularizer and the distortion switch on (the autoencoder and the
    tiny generators first learn alone: a distortion measured by untrained tiny generators is
    noise)."""
    standardize: Literal["channel", "element"] = "element"
    """How the latent is standardised before the tiny generators see it: per channel (over
    batch and positions), or per element (over the batch; a fixed spatial pattern then carries
    no variance, so it cannot pass for predictable content)."""
    regularizer: Literal["largest", "mean"] = "largest"
    """Which tiny loss regularises the latent: the largest tiny generator's, or the mean."""
    stop_grad_input: bool = False
    """Detach the latent on the generator's input path (the noisy z_t)."""
    stop_grad_target: bool = False
    """Detach the latent on the target path (what the generator regresses onto)."""
    fit_every: int = 100
    """Steps between scaling-law fits (M)."""
    heldout: int = 256
    """Test-split items whose latents score the tiny generators at every fit (continuous
    latents): the fit uses these held-out losses, never training losses."""
    fit_history: int = 4
    """Held-out scorings the law L(N, S) is fitted on (the last ones); 1 fits L(N) on the last
    scoring alone (then the prediction ignores the big generator's training budget)."""
    loss_ema: float = 0.98
    """Decay of the moving average of each tiny loss that the fit uses."""
    t_bins: int = 4
    """Time bins with their own moving averages and fit (continuous processes)."""
    big_parameters: int = 0
    """N_big, the parameter count of the generator that will be trained on this latent; 0 takes
    it from `big_generator`."""
    big_generator: str = ""
    """A generator run config (YAML) whose network's parameter count is N_big."""
    big_samples: int = 0
    """S_big, the samples the big generator trains on (steps x batch); 0 takes it from
    `big_generator` (with `big_parameters` alone: trained to convergence)."""
    distortion: Literal["onestep", "ode", "gaussian"] = "onestep"
    """What the decoder learns to undo: onestep, z + rho (z_tiny - z) with z_tiny the largest tiny
    generator's one-step estimate from z_t; ode, rho times the endpoint error of its
    probability-flow ODE from z to noise and back; gaussian, noise with the onestep error's
    scale, rho * |z_tiny - z| / sqrt(D) * N(0, I) (the l-DeTok-style control)."""
    ode_steps: int = 8
    """Euler steps each way of the ode distortion's round trip."""
    rho: float = -1.0
    """The distortion's rho: negative takes it from the scaling fit (per t-bin); a value in
    [0, 1] fixes it (the control for where rho comes from)."""
    anneal: float = 0.0
    """Last share of the training steps over which the distortion falls linearly to none, so
    the decoder ends on clean latents (0: no annealing)."""
    distort_fraction: float = 0.5
    """Share of each batch the decoder sees distorted (z + rho * (z_tiny - z)); the rest clean."""
    t_range: tuple[float, float] = (0.0, 1.0)
    """Range of t at which distorted latents are drawn for the decoder."""
    min_variance: float = 1e-3
    """Warn when a latent channel's variance (before normalisation) falls below this."""
    min_usage: float = 0.1
    """Warn when the fraction of codebook entries in use falls below this (discrete)."""

    def __post_init__(self):
        if len(self.widths) < 3:
            raise ValueError(f"widths: the scaling fit needs at least 3, got {list(self.widths)}")
        if any(w < 1 for w in self.widths) or list(self.widths) != sorted(set(self.widths)):
            raise ValueError(f"widths: must be increasing and positive, got {list(self.widths)}")
        for name in ("depth", "fit_every", "t_bins", "fit_history", "ode_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("weight", "ramp", "start", "big_parameters", "big_samples", "heldout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.loss_ema < 1:
            raise ValueError(f"loss_ema: must be in [0, 1), got {self.loss_ema}")
        if self.rho > 1:
            raise ValueError(f"rho: must be <= 1 (negative: from the fit), got {self.rho}")
        if not 0 <= self.anneal < 1:
            raise ValueError(f"anneal: must be in [0, 1), got {self.anneal}")
        if not 0 <= self.distort_fraction <= 1:
            raise ValueError(f"distort_fraction: must be in [0, 1], got {self.distort_fraction}")
        lo, hi = self.t_range
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"t_range: need 0 <= low < high <= 1, got {list(self.t_range)}")
