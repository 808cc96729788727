"""The same command under torchrun: 2 gloo processes train one model with DDP.

The VQ preset also exercises the codebook's own synchronisation (EMA statistics, k-means
initialisation and restarts): `replicas_identical` compares parameters and buffers.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_two_process_gloo_run(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "latentlab", "train-tokenizer", "--preset", "digits-vq", "--out", str(out),
           "--train.steps", "60",
           "--train.batch_size", "32", "--train.log_every", "10", "--train.eval_every", "0",
           "--model.arch.channels", "8", "--train.checkpoint_every", "30", "--train.warmup", "5",
           "--train.ema", "0.9"]
    env_threads = {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, **env_threads})
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["replicas_identical"] is True
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    recon = [r["loss/recon"] for r in records if "loss/recon" in r]
    assert len(recon) == 6 and recon[-1] < 0.5 * recon[0]
    assert metrics["test"]["mse"] < 0.5 * metrics["mean_image_mse"]
    # only rank 0 wrote: one event file, one set of checkpoints
    assert len(list((out / "tb").iterdir())) == 1
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == [
        "step_00000030", "step_00000060"]
