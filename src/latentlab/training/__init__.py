"""The training loop, checkpoints, run directories, EMA and distributed set-up."""

from latentlab.training.config import TrainConfig
from latentlab.training.engine import TrainResult, train
from latentlab.training.objective import Objective
from latentlab.training.rundir import RunDir

__all__ = ["Objective", "RunDir", "TrainConfig", "TrainResult", "train"]
