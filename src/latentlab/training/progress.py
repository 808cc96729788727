"""Progress for people: a bar with rate and ETA on a terminal, plain log lines elsewhere."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """Shows training progress on the main process.

    On a terminal, a tqdm bar (rate, ETA) carries the latest figures. When stderr is not a
    terminal (CI, a log file) there is no bar; each log step prints one line instead.
    """

    def __init__(self, total: int, start: int, enabled: bool = True, desc: str = "train"):
        self.enabled, self.total, self.start = enabled, total, start
        self.t0 = time.perf_counter()
        tty = sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=start, desc=desc, dynamic_ncols=True,
                        disable=not (enabled and tty), leave=False)
        self.lines = enabled and not tty

    def update(self, step: int) -> None:
        self.bar.update(step - self.bar.n)

    def message(self, step: int, logs: dict[str, float]) -> None:
        shown = {k: v for k, v in logs.items() if k.startswith(("loss", "eval/"))}
        text = " ".join(f"{k} {v:.4g}" for k, v in shown.items())
        if not self.enabled:
            return
        if self.lines:
            rate = (step - self.start) / max(time.perf_counter() - self.t0, 1e-9)
            eta = (self.total - step) / rate if rate > 0 else 0.0
            print(f"step {step}/{self.total} {text} ({rate:.1f} it/s, eta "
                  f"{format_duration(eta)})", file=sys.stderr, flush=True)
        else:
            self.bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        self.bar.close()
