"""The training loop: one function for every objective.

`train` does, per optimizer step: seed, set the learning rate, then for each phase of the
objective accumulate gradients over the step's micro-batches (giving each phase what the earlier
ones handed on for that micro-batch), clip, and step that phase's optimizer; then update the EMA,
log, evaluate and checkpoint on schedule. Everything a resumed run needs (weights, EMA, optimizer
moments, step) is in the checkpoint, and everything random is a function of (seed, rank, step),
so a run killed and resumed ends bit-identical to one that was not.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from latentlab import pixels
from latentlab.data.base import Batch, LatentlabDataset, collate
from latentlab.errors import DataError, TrainingDiverged
from latentlab.training import checkpoint
from latentlab.training import distributed as D
from latentlab.training.config import TrainConfig
from latentlab.training.ema import EMA
from latentlab.training.objective import Objective
from latentlab.training.progress import Progress
from latentlab.training.rundir import RunDir
from latentlab.training.sampler import StepSampler
from latentlab.training.schedule import lr_factor

log = logging.getLogger("latentlab")


@dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
        step: the last step trained.
        logs, evals: the last logged training figures and held-out figures.
        replicas_identical: every process ended with bitwise the same weights.
        eval_model: the model to evaluate and sample from: the EMA copy of the objective's
            `ema_model()` when there is one, else that model itself.
    """

    step: int
    logs: dict[str, float]
    evals: dict[str, float]
    replicas_identical: bool
    eval_model: nn.Module | None


def step_seed(seed: int, rank: int, step: int) -> int:
    """The seed of every random draw at (rank, step): resumable without saving RNG streams."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def make_optimizers(objective: Objective, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
    """One AdamW per phase; weight decay on matrices and kernels only (as nanoGPT does)."""
    optimizers = {}
    for phase in objective.phases:
        params = objective.phase_parameters(phase)
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
        # foreach: one fused update over all tensors, ~5% of a small model's step on CPU
        optimizers[phase] = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr,
                                              betas=cfg.betas, foreach=True)
    return optimizers


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively (not by emulation, which is slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """'bf16' or 'fp32': the configured precision, with 'auto' decided by the device."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def _autocast(cfg: TrainConfig, device: torch.device):
    enabled = resolve_precision(cfg.precision, device) == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def _loader(data: LatentlabDataset, sampler: StepSampler, workers: int) -> DataLoader:
    return DataLoader(data, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                      persistent_workers=workers > 0)


def _next(batches) -> Batch:
    """The next batch; a data error raised in a DataLoader worker comes back as one line.

    DataLoader re-raises a worker's exception with the worker's whole traceback as its message;
    the user needs only the last line, which names the file.
    """
    try:
        return next(batches)
    except DataError as e:
        lines = str(e).strip().splitlines()
        if len(lines) > 1:
            raise type(e)(lines[-1].split(": ", 1)[-1]) from None
        raise


def _restore(run: RunDir, objective: Objective, ema: EMA | None,
             optimizers: dict[str, torch.optim.Optimizer], device: torch.device) -> int:
    """Load the run's latest checkpoint into the live objects; returns its step."""
    ckpt = checkpoint.load_latest(run.checkpoints, map_location=device)
    split = {"model": {}, "ema": {}}
    for key, value in ckpt.tensors.items():
        head, _, rest = key.partition(".")
        split[head][rest] = value
    objective.load_state_dict(split["model"])
    if ema is not None:
        ema.load_state_dict(split["ema"])
    for phase, opt in optimizers.items():
        opt.load_state_dict(ckpt.state["optimizers"][phase])
    torch.set_rng_state(ckpt.state["rng"].cpu())
    log.info("resumed from %s", ckpt.path)
    return ckpt.step


def _save(run: RunDir, step: int, objective: Objective, ema: EMA | None,
          optimizers: dict[str, torch.optim.Optimizer], cfg: TrainConfig, config_text: str):
    tensors = {f"model.{k}": v for k, v in objective.state_dict().items()}
    if ema is not None:
        tensors |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
    state = {"optimizers": {k: o.state_dict() for k, o in optimizers.items()},
             "rng": torch.get_rng_state()}
    meta = {"samples_seen": step * cfg.batch_size, "config": config_text}
    checkpoint.save(run.checkpoints, step, tensors, state, meta, keep=cfg.keep_checkpoints)


def _evaluate(objective: Objective, ema: EMA | None, eval_data: LatentlabDataset | None,
              view: Batch, run: RunDir, step: int) -> dict[str, float]:
    """Held-out figures and a sample grid, with EMA weights when there are any."""
    model = objective.ema_model()
    swap = ema.swapped_into(model) if ema is not None else contextlib.nullcontext()
    was_training = objective.training
    objective.eval()
    with swap:
        evals = objective.evaluate(eval_data) if eval_data is not None else {}
        images = objective.visualize(view)
    objective.train(was_training)
    if images is not None:
        pixels.save_grid(images, run.samples / f"step_{step:08d}.png", scale=4)
    return {f"eval/{k}": v for k, v in evals.items()}


def train(objective: Objective, data: LatentlabDataset, cfg: TrainConfig, run: RunDir,
          config_text: str, eval_data: LatentlabDataset | None = None,
          num_workers: int = 0) -> TrainResult:
    """Train `objective` on `data` for `cfg.steps` optimizer steps, writing into `run`.

    Args:
        objective: the models and losses; moved to the run's device here.
        data: training items; `eval_data` is scored by `objective.evaluate` on schedule.
        cfg: loop settings. `run.mode == "resume"` continues from the latest checkpoint.
        config_text: the resolved configuration, stored in every checkpoint.

    Raises:
        TrainingDiverged: a loss was NaN or inf; the latest checkpoint is left intact.
    """
    world = D.setup(cfg.device)
    device = world.device
    fmt = torch.channels_last if cfg.channels_last and data.is_image else torch.preserve_format
    objective.to(device=device, memory_format=fmt)
    model = objective
    if world.distributed:
        # several phases use disjoint parameter sets, so some are unused in each backward;
        # buffers (codebooks, running statistics) are synchronised by their own modules
        unused = len(objective.phases) > 1 or objective.unused_parameters
        model = DistributedDataParallel(objective, find_unused_parameters=unused,
                                        broadcast_buffers=False)
    optimizers = make_optimizers(objective, cfg)
    ema_target = objective.ema_model() if cfg.ema > 0 else None
    ema = EMA(ema_target, cfg.ema).to(device) if ema_target is not None else None

    start = _restore(run, objective, ema, optimizers, device) if run.mode == "resume" else 0
    if world.is_main:
        run.start_logging(start)
    sampler = StepSampler(len(data), cfg.batch_size, cfg.accumulate, world.rank, world.size,
                          cfg.seed, start_step=start)
    batches = iter(_loader(data, sampler, num_workers))
    view = data.__getitems__(list(range(min(16, len(data))))).to(device, fmt)

    params = {p: objective.phase_parameters(p) for p in objective.phases}
    progress = Progress(cfg.steps, start, enabled=world.is_main)
    sums: dict[str, float] = {}
    logs: dict[str, float] = {}
    evals: dict[str, float] = {}
    skipped, seen, tick = 0, 0, time.perf_counter()
    objective.train()
    for step in range(start, cfg.steps):
        torch.manual_seed(step_seed(cfg.seed, world.rank, step))
        factor = lr_factor(step, cfg.steps, cfg.warmup, cfg.schedule, cfg.min_lr_ratio)
        if ema is not None and objective.stage_starts(step):
            ema.copy_to(ema_target)
        micro = [_next(batches).to(device, fmt) for _ in range(cfg.accumulate)]
        skipped += sum(b.skipped for b in micro)
        # per micro-batch, what each phase hands on to the later phases of this step (e.g. the
        # latents a coupled recipe's tiny generators train on); gone when the step ends
        handed: list[dict[str, Any]] = [{} for _ in micro]
        for phase in objective.phases:
            opt = optimizers[phase]
            for group in opt.param_groups:
                group["lr"] = cfg.lr * factor
            opt.zero_grad(set_to_none=True)
            for i, batch in enumerate(micro):
                # only the last micro-batch all-reduces gradients (DDP's no_sync)
                sync = (i == len(micro) - 1 or not world.distributed)
                with (contextlib.nullcontext() if sync else model.no_sync()), \
                        _autocast(cfg, device):
                    loss, step_logs, handed[i][phase] = model(phase, batch, step, handed[i])
                # note: a host-device sync per micro-batch; cheap next to a training step
                if D.any_rank(not torch.isfinite(loss).item(), world):
                    done = checkpoint.latest(run.checkpoints) if world.is_main else None
                    raise TrainingDiverged(
                        f"loss of phase '{phase}' is not finite at step {step}; last good "
                        f"checkpoint: {done or 'none'}")
                (loss / len(micro)).backward()
                for k, v in step_logs.items():
                    sums[k] = sums.get(k, 0.0) + float(v) / len(micro)
            if cfg.grad_clip > 0:
                norm = nn.utils.clip_grad_norm_(params[phase], cfg.grad_clip)
                sums[f"grad_norm/{phase}"] = sums.get(f"grad_norm/{phase}", 0.0) + float(norm)
            opt.step()
        if ema is not None:
            ema.update(ema_target)
        seen += 1
        done_steps = step + 1

        if done_steps % cfg.log_every == 0 or done_steps == cfg.steps:
            elapsed = time.perf_counter() - tick
            logs = D.mean_over_ranks({k: v / seen for k, v in sums.items()}, world)
            logs |= {"lr": cfg.lr * factor, "items_per_s": seen * cfg.batch_size / elapsed,
                     "data/skipped": float(skipped)}
            if world.is_main:
                run.log(done_steps, logs)
                progress.message(done_steps, logs)
            sums, seen, tick = {}, 0, time.perf_counter()
        at_end = done_steps == cfg.steps
        if at_end or (cfg.eval_every and done_steps % cfg.eval_every == 0):
            if world.is_main:
                evals = _evaluate(objective, ema, eval_data, view, run, done_steps)
                run.log(done_steps, evals)
            D.barrier()
        if at_end or done_steps % cfg.checkpoint_every == 0:
            if world.is_main:
                _save(run, done_steps, objective, ema, optimizers, cfg, config_text)
            D.barrier()
        progress.update(done_steps)
    progress.close()
    if start >= cfg.steps and world.is_main:  # resumed a finished run: still report on it
        evals = _evaluate(objective, ema, eval_data, view, run, cfg.steps)
    identical = D.replicas_identical([*objective.parameters(), *objective.buffers()], world)
    if world.is_main:
        run.log(cfg.steps, {"replicas_identical": float(identical)})
        run.close()
    eval_model = ema.shadow if ema is not None else objective.ema_model()
    return TrainResult(cfg.steps, {k: v for k, v in logs.items() if math.isfinite(v)}, evals,
                       identical, eval_model)
