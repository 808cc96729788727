"""Generators over latents: continuous processes (flow matching, DDPM, VP-SDE) and their networks.

Time convention (see `time.py`): t = 0 data, t = 1 noise, in every process.
"""

from latentlab.generators.ddpm import DDPM
from latentlab.generators.denoisers import Denoiser
from latentlab.generators.flow import FlowMatching
from latentlab.generators.process import Process, ProcessLoss
from latentlab.generators.vpsde import VPSDE

PROCESSES: dict[str, type[Process]] = {"flow": FlowMatching, "ddpm": DDPM, "vpsde": VPSDE}
"""Process classes by name."""

__all__ = ["DDPM", "PROCESSES", "VPSDE", "Denoiser", "FlowMatching", "Process", "ProcessLoss"]
