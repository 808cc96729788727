"""The coupled decomposer for continuous latents (DESIGN.md sec. 4.3): tiny generators trained
beside the tokenizer regularise its latent toward predictability and predict the error the big
generator will leave, which the decoder learns to undo.

Per training step, on the latent z (B, L, *S) of the bottleneck:
1. n = standardise(z) (batch statistics with gradient in training, no learnable scale): the
   encoder cannot win the regularizer by shrinking or collapsing z. `standardize: channel`
   does it per channel over batch and positions; `element` per element over the batch, which
   also closes a loophole of the former: a fixed spatial pattern (the same for every item, so
   perfectly predictable) carrying most of a channel's variance while the items' content
   shrinks to a sliver of it (measured on digits: 99.5 % of the variance, without distortion).
2. Each tiny generator G_k (an MLP denoiser of width w_k on flattened n, trained in its own
   optimizer phase on detached n) has loss L_k(t). The regularizer lambda(step) * L_pred, with
   L_pred the loss of the largest tiny generator (or the mean), reaches the encoder through n on
   the input path (the noisy n_t) and the target path, each of which can be detached.
3. Every `fit_every` steps, L(N) = E + A N^(-alpha) is fitted per t-bin to moving averages of
   the L_k over the tiny parameter counts N_k, and extrapolated to N_big:
   rho^2 = L(N_big) / L_largest, clipped to (0, 1]. An ill-posed fit keeps the last good one.
   With held-out latents (`heldout` test items, encoded in eval mode and standardised, scored
   under fixed draws at every fit; never trained on), the fit is L(N, S) = E + A N^(-alpha) +
   B S^(-beta) over the last `fit_history` scorings, S the samples each tiny generator had
   trained on, and rho^2 = L(N_big, S_big) / L_largest(held-out) targets the big generator at
   its own training budget.
4. For the first `distort_fraction` of each batch the decoder gets a distorted latent, moved in
   n's scale and mapped back to z's (times std), detached (the decoder learns to undo it, the
   encoder is not asked to cause it), and scaled by the anneal factor (1 until the last `anneal`
   share of training, then linearly to 0):
   onestep   n + rho(t) (n_tiny - n), n_tiny the largest tiny generator's one-step estimate of n
             from n_t at t ~ U(t_range);
   gaussian  n + rho(t) |n_tiny - n| / sqrt(D) * N(0, I): the same scale, no structure;
   ode       n + rho (n_rt - n), n_rt the endpoint of the tiny generator's probability-flow ODE
             from n to noise and back (`ode_steps` Euler steps each way), rho = rms over t-bins.

Legend: B batch, L latent channels, S latent spatial dims, D = L * prod(S), K tiny generators,
T t-bins.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from latentlab.data.text import TextTokenizer
from latentlab.generators.process import per_batch
from latentlab.generators.samplers import euler
from latentlab.nn import num_parameters
from latentlab.recipes.config import CoupledConfig
from latentlab.recipes.scaling import PowerLaw, rho_squared
from latentlab.recipes.tiny import (
    BigGenerator,
    binned_losses,
    tiny_generator,
    tiny_process,
)
from latentlab.recipes.tracker import LossTracker
from latentlab.tokenizers.bottlenecks.base import BottleneckOutput
from latentlab.tokenizers.bottlenecks.identity import (
    DEAD_VARIANCE,
    IdentityBottleneck,
    IdentityConfig,
)

log = logging.getLogger("latentlab")


@dataclass(frozen=True)
class Coupled:
    """`Coupling.couple`'s result: what the decoder decodes, the regularizer, figures to log,
    and what the tiny generators train on."""

    latent: torch.Tensor
    """(B, L, *S) the latent for the decoder (distorted rows first, then clean ones)."""
    loss: torch.Tensor
    """() lambda * L_pred, already weighted (0 when off)."""
    logs: dict[str, torch.Tensor]
    tiny_input: tuple[torch.Tensor, torch.Tensor | None]
    """Detached: what the tiny phases of this step train on (`Coupling.tiny_loss`), the
    standardised latent (B, L, *S) or the tokens (B, N), and the prompts' token ids (B, P) of
    text-conditioned tiny generators (else None)."""


def distort(z: torch.Tensor, z_tiny: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """z + rho * (z_tiny - z), the latent the big generator is predicted to leave; the
    distortion is detached, z keeps its gradient. z, z_tiny (B, *D), rho (B,)."""
    return z + per_batch(rho, z) * (z_tiny - z).detach()


def ramp(step: int, cfg: CoupledConfig) -> float:
    """lambda(step): 0 before `start`, rising linearly to `weight` over `ramp` steps."""
    if step < cfg.start:
        return 0.0
    return cfg.weight * min(1.0, (step - cfg.start + 1) / max(cfg.ramp, 1))


class Coupling(nn.Module):
    """What every coupling shares: K tiny generators each trained in its own optimizer phase
    on the latents `couple` gave the autoencoder phase to hand on, a `LossTracker` of their
    losses, and a scaling fit every `fit_every` steps. Subclasses say how to score a tiny
    generator (`tiny_terms`), how to couple the latent (`couple`) and what a fit sets
    (`apply_fits`). Everything that must survive a resume is a buffer; nothing else is kept
    between calls but the fit records.
    """

    def __init__(self, cfg: CoupledConfig, tiny: list[nn.Module], series: list[str],
                 n_big: int, s_big: float = math.inf, history: int = 1):
        super().__init__()
        self.cfg, self.n_big, self.s_big = cfg, n_big, s_big
        self.tiny = nn.ModuleList(tiny)
        self.sizes = [num_parameters(m) for m in self.tiny]
        self.tracker = LossTracker(self.sizes, series, cfg.loss_ema, history)
        self.phases = tuple(f"tiny_{w}" for w in cfg.widths)
        self.register_buffer("var_min", torch.ones(()))

    def couple(self, out: BottleneckOutput, step: int, frozen: bool,
               cond: torch.Tensor | None = None) -> Coupled:
        raise NotImplementedError

    def due(self, step: int) -> bool:
        """Whether `observe` wants held-out latents at this step (continuous latents only)."""
        return False

    def tiny_terms(self, k: int, tiny_input: torch.Tensor, cond: torch.Tensor | None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss to train tiny generator k on, per-item values (B,), their series (B,))."""
        raise NotImplementedError

    def apply_fits(self, laws: list[PowerLaw | None]) -> None:
        raise NotImplementedError

    def summary(self) -> dict:
        """Final figures for metrics.json (rho and the like)."""
        raise NotImplementedError

    def tiny_loss(self, k: int, tiny_input: tuple[torch.Tensor, torch.Tensor | None]
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss of tiny generator k on `tiny_input` (`Coupled.tiny_input` of this
        step's micro-batch, handed on by the autoencoder phase); its per-item values go to
        the tracker."""
        loss, values, series = self.tiny_terms(k, *tiny_input)
        self.tracker.add(k, series, values.detach())
        return loss, {f"tiny/loss_{self.cfg.widths[k]}": loss.detach()}

    def begin_step(self, step: int) -> None:
        """Before coupling a latent: fold the losses the tiny phases left pending last step
        into the averages (after a step's first micro-batch nothing is pending: the tiny phases
        run after the autoencoder phase), and refit the scaling law every `fit_every` steps,
        once per step."""
        self.tracker.fold()
        if step > 0 and step % self.cfg.fit_every == 0 and self.tracker.last_fit != step:
            self.apply_fits(self.tracker.refit(step, self.n_big, self.s_big))
            if float(self.var_min) < self.cfg.min_variance:
                log.warning("step %d: a latent channel's variance is %.2g, below coupled."
                            "min_variance=%g: the latent may be collapsing", step,
                            float(self.var_min), self.cfg.min_variance)

    def weight(self, step: int, frozen: bool) -> float:
        return 0.0 if frozen else ramp(step, self.cfg)

    def latent_logs(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-channel variance of the latent over the batch: collapse shows here first."""
        var = rearrange(z.detach().float(), "b l ... -> l (b ...)").var(dim=1)  # (L,)
        self.var_min.copy_(var.min())
        return {"latent/var_min": var.min(), "latent/var_mean": var.mean(),
                "latent/dead_channels": (var < DEAD_VARIANCE).float().mean()}


class LatentCoupling(Coupling):
    """The coupling of a continuous latent (see the module docstring).

    Args:
        cfg: the recipe's settings.
        latent_shape: (L, *S) of one latent.
        family: flow, ddpm or vpsde.
        big: the generator the fit extrapolates to (its size, budget and, for tiny DiTs, DiT).
        steps: the run's length (places the annealing).
        batch: samples per step (S of the tiny generators = step x batch).
    """

    def __init__(self, cfg: CoupledConfig, latent_shape: tuple[int, ...], family: str,
                 big: BigGenerator, steps: int = 1, batch: int = 1,
                 prompts: TextTokenizer | None = None):
        dit = big.dit if cfg.tiny == "dit" else None
        if cfg.tiny == "dit" and dit is None:
            raise ValueError("tiny: dit builds the big generator in miniature, but the big "
                             "generator is not a DiT (name its config in coupled.big_generator)")
        tiny = [tiny_generator(latent_shape, w, cfg.depth, dit=dit, num_classes=big.num_classes,
                               prompts=prompts) for w in cfg.widths]
        super().__init__(cfg, tiny, [f"t{b}" for b in range(cfg.t_bins)], big.parameters,
                         big.samples, cfg.fit_history)
        self.steps, self.batch = steps, batch
        self.normalizer = IdentityBottleneck(latent_shape[0], IdentityConfig(normalize=True))
        self.process = tiny_process(family)
        self.register_buffer("rho", torch.ones(cfg.t_bins))
        self.register_buffer("predicted", torch.full((cfg.t_bins,), math.nan))
        self.register_buffer("observed_at", torch.tensor(-1))

    def couple(self, out: BottleneckOutput, step: int, frozen: bool,
               cond: torch.Tensor | None = None) -> Coupled:
        """Standardise the latent, add the regularizer, distort the decoder's share.

        Args:
            out: the bottleneck's output; out.latent (B, L, *S).
            step: the training step.
            frozen: the encoder is frozen (DAE stage 2): no regularizer, running statistics.
            cond: (B, P) prompt token ids of text-conditioned tiny generators, else None.
        """
        z = out.latent
        n, std = self.standardize(z, frozen)  # (B, L, *S) each
        self.begin_step(step)
        logs = self.latent_logs(z)
        weight = self.weight(step, frozen)
        loss = n.new_zeros(())
        if weight > 0:
            l_pred = self._regularizer(n, cond)
            loss = weight * l_pred
            logs["coupled/l_pred"] = l_pred.detach()
        logs["coupled/lambda"] = torch.tensor(weight)
        latent = z
        rows = round(self.cfg.distort_fraction * z.shape[0])
        if step >= self.cfg.start and (self.fitted or self.cfg.rho >= 0) and rows:
            latent = self._distorted(z, n, std, rows, step,
                                     None if cond is None else cond[:rows])
        logs |= self.tracker.logs() | {"coupled/rho": self.rho.mean(),
                                       "coupled/anneal": torch.tensor(self.anneal(step))}
        logs |= {f"coupled/rho_t{b}": r for b, r in enumerate(self.rho)}
        return Coupled(latent, loss, logs, (n.detach(), cond))

    @property
    def fitted(self) -> bool:
        return any(self.tracker.fitted(b) for b in range(self.cfg.t_bins))

    def standardize(self, z: torch.Tensor, frozen: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, std): z (B, L, *S) standardised in fp32, and the std it was divided by
        (broadcastable to z). channel: per channel over the batch and positions (running
        statistics when frozen); element: every element over the batch, so a fixed spatial
        pattern, the same for every item, cannot pass for predictable content."""
        if self.cfg.standardize == "element":
            z32 = z.float()
            std = z32.std(0, keepdim=True).clamp_min(1e-6)
            return (z32 - z32.mean(0, keepdim=True)) / std, std.detach()
        self.normalizer.train(not frozen)
        n = self.normalizer(z).latent.float()
        std = rearrange(self.normalizer.std(z), "l -> l" + " 1" * (z.ndim - 2))
        return n, std.detach()

    def due(self, step: int) -> bool:
        return (self.cfg.heldout > 0 and step > 0 and step % self.cfg.fit_every == 0
                and int(self.observed_at) != step)

    @torch.no_grad()
    def observe(self, step: int, z: torch.Tensor, cond: torch.Tensor | None = None) -> None:
        """Score every tiny generator on held-out latents z (N, L, *S) (and their prompts'
        ids `cond`), standardised per channel over the set, per t-bin under fixed draws
        (`binned_losses`)."""
        self.observed_at.fill_(step)
        dims = [0] if self.cfg.standardize == "element" else [0, *range(2, z.ndim)]
        n = (z.float() - z.float().mean(dims, keepdim=True)) / z.float().std(
            dims, keepdim=True).clamp_min(1e-6)
        x0 = rearrange(n, "b ... -> b (...)")
        losses = torch.stack([binned_losses(self.process, m, x0, self.cfg.t_bins, cond)
                              for m in self.tiny])  # (K, T)
        self.tracker.observe(step * self.batch, losses)

    def _regularizer(self, n: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """L_pred on n (given the prompts `cond`), with gradient to n on the paths not
        detached."""
        models = self.tiny if self.cfg.regularizer == "mean" else self.tiny[-1:]
        n_in = n.detach() if self.cfg.stop_grad_input else n
        n_target = n.detach() if self.cfg.stop_grad_target else n
        losses = [self._loss(m, n_in, n_target, cond)[0].mean() for m in models]
        return torch.stack(losses).mean()

    def _loss(self, model: nn.Module, n_in: torch.Tensor, n_target: torch.Tensor,
              cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-item loss (B,) of a tiny generator and the times drawn (B,); as `Process.loss`,
        with separate input and target latents so either path can be detached."""
        x_in, x_target = (rearrange(v, "b ... -> b (...)") for v in (n_in, n_target))  # (B, D)
        t = self.process.sample_train_time(len(x_in), None, x_in.device, x_in.dtype)
        noise = torch.randn_like(x_in)
        prediction = model(self.process.add_noise(x_in, noise, t), t, cond)
        target = self.process.target(x_target, noise, t)
        return (prediction.float() - target.float()).pow(2).mean(1), t

    def tiny_terms(self, k: int, tiny_input: torch.Tensor, cond: torch.Tensor | None):
        per_item, t = self._loss(self.tiny[k], tiny_input, tiny_input, cond)
        return per_item.mean(), per_item, self.bin_of(t)

    def bin_of(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) t-bin index of each time in [0, 1]."""
        return (t.detach() * self.cfg.t_bins).long().clamp(0, self.cfg.t_bins - 1)

    def apply_fits(self, laws: list[PowerLaw | None]) -> None:
        """rho per t-bin from its fit, against the largest tiny generator's latest loss there
        (held-out once scored)."""
        largest = self.tracker.latest()[-1]
        for b, law in enumerate(laws):
            if law is not None:
                self.predicted[b] = law(self.n_big, self.s_big)
                self.rho[b] = rho_squared(law, self.n_big, float(largest[b]), self.s_big) ** 0.5

    def rho_at(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) rho at times t (B,): the fit's per t-bin, or the fixed `rho`."""
        if self.cfg.rho >= 0:
            return torch.full_like(t, self.cfg.rho)
        return self.rho[self.bin_of(t)].to(t.dtype)

    def anneal(self, step: int) -> float:
        """1 until the last `anneal` share of training, then linearly to 0 at the last step."""
        if self.cfg.anneal == 0:
            return 1.0
        last = self.steps - 1
        return min(1.0, max(0.0, (last - step) / max(self.cfg.anneal * self.steps, 1.0)))

    @torch.no_grad()
    def move(self, x0: torch.Tensor, step: int, cond: torch.Tensor | None = None
             ) -> torch.Tensor:
        """(R, D) the distortion of standardised latents x0 (R, D) with prompts `cond`
        (module docstring, 4.)."""
        largest = self.tiny[-1]
        if self.cfg.distortion == "ode":
            rho = self.rho_at(torch.full((len(x0),), 0.5, device=x0.device))
            if self.cfg.rho < 0:  # the rms over t-bins: the round trip crosses every t
                rho = rho.new_full(rho.shape, float(self.rho.pow(2).mean().sqrt()))
            error = round_trip(self.process, largest, x0, self.cfg.ode_steps, cond) - x0
        else:
            lo, hi = self.cfg.t_range
            t = lo + (hi - lo) * torch.rand(len(x0), device=x0.device)
            x_t = self.process.add_noise(x0, torch.randn_like(x0), t)
            error = self.process.x0_estimate(largest(x_t, t, cond).float(), x_t, t) - x0
            rho = self.rho_at(t)
            if self.cfg.distortion == "gaussian":
                scale = error.norm(dim=1, keepdim=True) / math.sqrt(x0.shape[1])
                error = scale * torch.randn_like(x0)
        return distort(x0, x0 + error, rho * self.anneal(step)) - x0

    def _distorted(self, z: torch.Tensor, n: torch.Tensor, std: torch.Tensor, rows: int,
                   step: int, cond: torch.Tensor | None) -> torch.Tensor:
        """z with its first `rows` items moved (`move`), in z's scale (times `std`). The move
        is detached; z keeps its gradient (the reconstruction must still reach the encoder)."""
        with torch.no_grad():
            moved = self.move(rearrange(n[:rows], "b ... -> b (...)"), step, cond)  # (R, D)
            delta = (moved.reshape(n[:rows].shape) * std).to(z.dtype)  # (R, L, *S)
        return torch.cat([z[:rows] + delta, z[rows:]])

    def summary(self) -> dict:
        latest = self.tracker.heldout[-1]
        return {"rho": self.rho.tolist(), "predicted_big_loss": self.predicted.tolist(),
                "big_samples": self.s_big, "heldout_tiny_losses": latest.tolist(),
                "heldout_samples": self.tracker.seen.tolist()}


TIME_EPS = 1e-3
"""The round trip runs over t in [TIME_EPS, 1 - TIME_EPS], where every path's x_t is finite."""


def probability_flow(process, model: nn.Module, x: torch.Tensor, t: torch.Tensor,
                     cond: torch.Tensor | None = None) -> torch.Tensor:
    """dx/dt of the probability-flow ODE of any Gaussian path x_t = alpha_t x_0 + sigma_t eps,
    from the model's estimates: alpha'(t) x0_hat + sigma'(t) eps_hat (DDIM's ODE; for the flow
    path, alpha = 1 - t and sigma = t, it is the velocity eps_hat - x0_hat). x (B, D), t 0-d."""
    tb = t.expand(len(x)).to(x.dtype)
    x0_hat = process.x0_estimate(model(x, tb, cond).float(), x, tb)
    alpha, sigma = process.coefficients(tb)
    eps_hat = (x - per_batch(alpha, x) * x0_hat) / per_batch(sigma, x)
    h = 1e-4  # central differences: the coefficients of every process are smooth in t
    (a_hi, s_hi), (a_lo, s_lo) = process.coefficients(tb + h), process.coefficients(tb - h)
    d_alpha, d_sigma = (a_hi - a_lo) / (2 * h), (s_hi - s_lo) / (2 * h)
    return per_batch(d_alpha, x) * x0_hat + per_batch(d_sigma, x) * eps_hat


def round_trip(process, model: nn.Module, x0: torch.Tensor, steps: int,
               cond: torch.Tensor | None = None) -> torch.Tensor:
    """x0 (B, D) carried to noise and back along the model's probability-flow ODE (Euler,
    `steps` each way) given the conditions `cond`; a perfect model on exact arithmetic returns
    x0."""
    ts = torch.linspace(TIME_EPS, 1 - TIME_EPS, steps + 1, device=x0.device, dtype=x0.dtype)

    def field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return probability_flow(process, model, x, t, cond)

    return euler(field, euler(field, x0, ts), ts.flip(0))
