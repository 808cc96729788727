"""How a training command reads its data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataConfig:
    spec: str = "digits"
    """Dataset spec: a built-in (digits, mixture, shapes, faces) or an on-disk source
    (folder:PATH, npz:PATH, mnist:DIR, cifar10:DIR), with options after commas."""
    num_workers: int = 0
    """DataLoader worker processes; 0 decodes in the training process (best for built-ins)."""
    skip_corrupt: bool = False
    """Replace a corrupt item by the next readable one and count it, instead of stopping."""

    def __post_init__(self):
        if not self.spec:
            raise ValueError("spec: must not be empty")
        if self.num_workers < 0:
            raise ValueError(f"num_workers: must be >= 0, got {self.num_workers}")
