"""The coupled decomposer for discrete latents (VQ, LFQ, FSQ; DESIGN.md sec. 4.3, item 5):
tiny autoregressive priors on the token grid.

- Each tiny prior of width w_k learns next-token prediction on the tokens of this step
  (raster order; after the prompt on captioned data, else unconditional) in its own optimizer
  phase. Two series are tracked per prior:
  the cross-entropy (nats per token) and the error rate of its argmax prediction.
- Regularizer: tokens are discrete, so the next-token loss cannot reach the encoder through the
  indices. It reaches it through the latent instead: each latent vector l_i (straight-through,
  so its gradient is the encoder's) defines a soft assignment q_i = softmax(-|l_i - c_j|^2 / tau)
  over the codes c_j, and the regularizer is the cross-entropy of the largest tiny prior's
  prediction against q_i. It pulls each latent toward codes the prior finds likely, i.e. makes
  the token sequence more predictable. tau is the median squared distance from a code to its
  nearest other code, so the assignment is as soft as the codebook is dense.
- Fits: the law is fitted to both series. rho^2 = CE(N_big) / CE_largest is logged as for
  continuous latents; the decoder's distortion uses the error rate: each token is replaced by
  the largest prior's prediction with probability p = err(N_big) / err_largest, so that the
  decoder sees errors at the extrapolated big-model rate err(N_big) (replacing by a prediction
  that is right changes nothing, so a replacement fraction equal to err(N_big) itself would
  under-shoot it by the factor err_largest).

Legend: B batch, L latent channels, S token grid, N = prod(S) tokens, V codebook size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from latentlab.data.text import TextTokenizer
from latentlab.recipes.config import CoupledConfig
from latentlab.recipes.coupled import Coupled, Coupling
from latentlab.recipes.scaling import PowerLaw, rho_squared
from latentlab.recipes.tiny import tiny_generator
from latentlab.tokenizers.bottlenecks.base import Bottleneck, BottleneckOutput

CE, ERROR = 0, 1


class TokenCoupling(Coupling):
    """The coupling of a discrete latent (see the module docstring).

    Args:
        cfg: the recipe's settings.
        bottleneck: the tokenizer's discrete bottleneck (read, never trained here).
        latent_shape: (L, *S) of one latent.
        n_big: parameter count of the big prior the fit extrapolates to.
    """

    def __init__(self, cfg: CoupledConfig, bottleneck: Bottleneck,
                 latent_shape: tuple[int, ...], n_big: int,
                 prompts: TextTokenizer | None = None):
        vocab = bottleneck.codebook_size
        tiny = [tiny_generator(latent_shape[1:], w, cfg.depth, vocab, prompts=prompts)
                for w in cfg.widths]
        super().__init__(cfg, tiny, ["ce", "error"], n_big)
        self._bottleneck = [bottleneck]  # a reference, not a submodule: the tokenizer owns it
        self.register_buffer("rho", torch.ones(()))
        self.register_buffer("replace", torch.zeros(()))

    @property
    def bottleneck(self) -> Bottleneck:
        return self._bottleneck[0]

    def couple(self, out: BottleneckOutput, step: int, frozen: bool,
               cond: torch.Tensor | None = None) -> Coupled:
        tokens = rearrange(out.indices, "b ... -> b (...)")  # (B, N)
        self.begin_step(step)
        logs = self.latent_logs(out.latent)
        weight = self.weight(step, frozen)
        loss = out.latent.new_zeros((), dtype=torch.float32)
        if weight > 0:
            l_pred = self._regularizer(out.latent, tokens, cond)
            loss = weight * l_pred
            logs["coupled/l_pred"] = l_pred.detach()
        latent = out.latent
        if step >= self.cfg.start and self.tracker.fitted(ERROR) and self.replace > 0:
            latent = self._replaced(out, tokens, cond)
        logs |= self.tracker.logs() | {"coupled/lambda": torch.tensor(weight),
                                       "coupled/rho": self.rho, "coupled/replace": self.replace}
        return Coupled(latent, loss, logs, (tokens.detach(), cond))

    def codes(self) -> torch.Tensor:
        """(V, L) fp32: every code of the bottleneck."""
        indices = torch.arange(self.bottleneck.codebook_size, device=self.rho.device)[:, None]
        return self.bottleneck.indices_to_codes(indices).float()[..., 0]

    def _regularizer(self, latent: torch.Tensor, tokens: torch.Tensor,
                     cond: torch.Tensor | None) -> torch.Tensor:
        """Cross-entropy of the largest tiny prior against the soft code assignment of each
        latent vector (gradient to the encoder through the latent)."""
        vectors = rearrange(latent.float(), "b l ... -> b (...) l")  # (B, N, L)
        codes = self.codes().detach()  # (V, L)
        with torch.no_grad():
            gaps = torch.cdist(codes, codes).pow(2)
            gaps.fill_diagonal_(float("inf"))
            tau = gaps.min(dim=1).values.median().clamp_min(1e-8)
        assignment = F.softmax(-(vectors[..., None, :] - codes).pow(2).sum(-1) / tau, dim=-1)
        log_p = F.log_softmax(self.tiny[-1](tokens, cond).float(), dim=-1)  # (B, N, V)
        return -(assignment * log_p).sum(-1).mean()

    def tiny_terms(self, k: int, tokens: torch.Tensor, cond: torch.Tensor | None):
        logits = self.tiny[k](tokens, cond).float()  # (B, N, V)
        ce = F.cross_entropy(rearrange(logits, "b n v -> b v n"), tokens, reduction="none")
        error = (logits.argmax(-1) != tokens).float()  # (B, N)
        b = len(tokens)
        values = torch.cat([ce.mean(1), error.mean(1)])  # (2B,)
        series = torch.cat([torch.full((b,), CE), torch.full((b,), ERROR)]).to(tokens.device)
        return ce.mean(), values, series

    def apply_fits(self, laws: list[PowerLaw | None]) -> None:
        largest = self.tracker.averages()[-1].tolist()
        if laws[CE] is not None:
            self.rho.fill_(rho_squared(laws[CE], self.n_big, largest[CE]) ** 0.5)
        if laws[ERROR] is not None and largest[ERROR] > 0:
            self.replace.fill_(min(1.0, max(0.0, laws[ERROR](self.n_big) / largest[ERROR])))

    def _replaced(self, out: BottleneckOutput, tokens: torch.Tensor,
                  cond: torch.Tensor | None = None) -> torch.Tensor:
        """The latent with each token replaced, with probability `replace`, by the code of the
        largest prior's prediction (teacher-forced on the true prefix). Tokens kept keep their
        (straight-through) gradient."""
        with torch.no_grad():
            predicted = self.tiny[-1](tokens, cond).argmax(-1).reshape(out.indices.shape)
            mask = torch.rand(out.indices.shape, device=tokens.device) < self.replace
            codes = self.bottleneck.indices_to_codes(predicted).to(out.latent.dtype)
        return torch.where(mask[:, None], codes, out.latent)  # (B, L, *S)

    def summary(self) -> dict:
        return {"rho": [float(self.rho)], "replace_fraction": float(self.replace)}
