"""A run killed with SIGKILL and resumed ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from latentlab.training import checkpoint

ARGS = ["--train.steps", "120", "--train.batch_size", "16", "--train.checkpoint_every", "10",
        "--train.log_every", "10", "--train.eval_every", "40", "--train.warmup", "5",
        "--model.arch.channels", "8", "--train.ema", "0.9"]


def cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "latentlab", "train-tokenizer", "--out", str(out), *ARGS,
            *extra]


def final(run: Path):
    ckpt = checkpoint.latest(run / "checkpoints")
    return ckpt.name, load_file(ckpt / checkpoint.WEIGHTS)


def losses(run: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss/recon"]) for r in records if "loss/recon" in r]


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(cli(tmp_path / "straight"), check=True, env=env, capture_output=True)

    victim = subprocess.Popen(cli(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    pointer = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and victim.poll() is None:
        if pointer.exists() and int(pointer.read_text().split("_")[1]) >= 40:
            break
        time.sleep(0.01)
    assert victim.poll() is None, "the run finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = checkpoint.latest(tmp_path / "killed" / "checkpoints").name
    assert killed_at != "step_00000120"

    resumed = subprocess.run(cli(tmp_path / "killed", "--resume"), env=env, capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr
    name_a, a = final(tmp_path / "straight")
    name_b, b = final(tmp_path / "killed")
    assert name_a == name_b == "step_00000120"
    assert a.keys() == b.keys()
    for key in a:  # bit for bit: weights, EMA weights and buffers
        assert (a[key] == b[key]).all(), key
    assert losses(tmp_path / "straight") == losses(tmp_path / "killed")
