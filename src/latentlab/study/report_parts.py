"""Pieces of report.html that its sections share: images as inline PNG figures and the run
directories of a study as the report reads them."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from latentlab import pixels
from latentlab.study import plots
from latentlab.training.rundir import read_metrics


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _figure(png: bytes, caption: str) -> str:
    return f"<figure>{_img(png, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def grid_png(images: np.ndarray, nrow: int = 10, scale: int = 3) -> bytes:
    """Images (N, H, W, C) uint8 as one PNG grid, `nrow` per row, each pixel scale x scale."""
    images = torch.from_numpy(np.ascontiguousarray(images))
    grid = pixels.make_grid(rearrange(pixels.from_uint8(images), "n h w c -> n c h w"),
                            nrow=nrow)
    image = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _curve(records: list[dict], key: str) -> plots.Curve | None:
    points = [(r["step"], r[key]) for r in records
              if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    return ([p[0] for p in points], [float(p[1]) for p in points]) if points else None


class _Runs:
    """The run directories of a study, as the report reads them."""

    def __init__(self, summary: dict, out: Path):
        self.summary, self.out = summary, out

    def seeds(self, recipe: str) -> list[dict]:
        return self.summary["runs"][recipe]

    def first(self, recipe: str) -> dict:
        return self.seeds(recipe)[0]

    def path(self, entry: dict, key: str) -> Path:
        return self.out / entry[key]

    def curves(self, key: str | tuple[str, ...], stage: str) -> dict[str, list[plots.Curve]]:
        """{recipe: [curve per seed]} of a metrics.jsonl key (the first of `key` present)."""
        keys = (key,) if isinstance(key, str) else key
        found: dict[str, list[plots.Curve]] = {}
        for recipe in self.summary["recipes"]:
            for entry in self.seeds(recipe):
                log = self.path(entry, stage) / "metrics.jsonl"
                records = read_metrics(log.parent) if log.exists() else []
                curve = next((c for k in keys if (c := _curve(records, k))), None)
                if curve:
                    found.setdefault(recipe, []).append(curve)
        return found

    def tokenizer_eval(self, recipe: str) -> dict:
        record = _read_json(self.path(self.first(recipe), "evaluation"))
        return record.get("evaluation", {}).get("tokenizer", {})
