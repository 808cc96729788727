"""The training loop's knobs, shared by every command that trains."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class TrainConfig:
    steps: int = 2000
    """Optimizer steps to train for."""
    batch_size: int = 64
    """Global batch per optimizer step, summed over processes and accumulation micro-batches;
    so a run means the same thing on 1 process or 8."""
    accumulate: int = 1
    """Micro-batches per optimizer step (gradient accumulation)."""
    lr: float = 1e-3
    """Peak learning rate of AdamW."""
    betas: tuple[float, float] = (0.9, 0.99)
    """AdamW betas."""
    weight_decay: float = 0.0
    """AdamW weight decay, applied to weight matrices and kernels only (not biases or norms)."""
    warmup: int = 100
    """Linear warmup steps."""
    schedule: Literal["cosine", "constant"] = "cosine"
    """Learning-rate schedule after warmup."""
    min_lr_ratio: float = 0.1
    """Final learning rate of the cosine schedule, as a fraction of lr."""
    grad_clip: float = 1.0
    """Clip the global gradient norm of each optimizer to this; 0 disables."""
    ema: float = 0.999
    """Decay of the exponential moving average of the weights used for evaluation; 0 disables."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """bf16 autocast, plain fp32, or 'auto': bf16 where the device computes it natively (CUDA
    GPUs with bf16, CPUs with AVX512-BF16 or AMX), else fp32. A CPU without them emulates bf16
    some 30x slower than fp32 (measured on an AVX2-only EPYC: 1.3 vs 42 GFLOP/s)."""
    channels_last: bool = True
    """Keep images and conv weights in channels_last layout (faster convolutions)."""
    seed: int = 0
    """Seeds initialisation, data order and every random draw of training."""
    device: str = "auto"
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    log_every: int = 50
    """Steps between log lines and metrics.jsonl records."""
    eval_every: int = 500
    """Steps between evaluations and sample grids (also at the end); 0: only at the end."""
    checkpoint_every: int = 500
    """Steps between checkpoints (also at the end)."""
    keep_checkpoints: int = 3
    """How many recent checkpoints to keep."""

    def __post_init__(self):
        for name in ("steps", "batch_size", "accumulate", "log_every", "checkpoint_every",
                     "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("warmup", "eval_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema: must be in [0, 1), got {self.ema}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip: must be >= 0, got {self.grad_clip}")
        if self.batch_size % self.accumulate:
            raise ValueError(f"batch_size: {self.batch_size} is not divisible by "
                             f"accumulate={self.accumulate}")
