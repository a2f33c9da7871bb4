"""Progress bars and per-epoch logs that never stall the GPU.

Running sums of loss and accuracy stay on the device. Every few steps the
sums are copied to pinned host memory without blocking, and the bar shows
the last copy that has landed (checked with a CUDA event, not a
synchronisation), so the step loop never waits for the GPU.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fmn_core.utils.atomic import atomic_write_text


class DeviceMeter:
    """Sums of named per-step quantities kept on the device."""

    def __init__(self, names: list[str], device: torch.device):
        self.names = names
        self.device = device
        self.sums = torch.zeros(len(names), dtype=torch.float64, device=device)
        self._host = torch.zeros(len(names), dtype=torch.float64, pin_memory=device.type == "cuda")
        self._event: torch.cuda.Event | None = None
        self._snapshot: dict[str, float] = {}

    def add(self, values: torch.Tensor) -> None:
        """``values``: a 1-D device tensor in ``names`` order (sums, not means)."""
        self.sums += values.detach().to(torch.float64)

    def request_snapshot(self) -> None:
        """Start a non-blocking copy of the sums to the host."""
        if self.device.type == "cuda":
            if self._event is not None and not self._event.query():
                return  # the previous copy has not landed yet; do not queue another
            self._host.copy_(self.sums, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._host.copy_(self.sums)

    def latest(self) -> dict[str, float]:
        """The most recent sums that have reached the host (possibly a few steps old)."""
        if self.device.type != "cuda" or (self._event is not None and self._event.query()):
            self._snapshot = dict(zip(self.names, self._host.tolist(), strict=True))
        return self._snapshot

    def totals(self) -> dict[str, float]:
        """Exact sums; synchronises, so call it at the end of an epoch only."""
        return dict(zip(self.names, self.sums.tolist(), strict=True))


class EpochProgress:
    """A tqdm bar over one epoch's steps with images/s, loss and accuracy."""

    def __init__(self, total_steps: int, description: str, enabled: bool = True, refresh_every: int = 10):
        self.bar = tqdm(total=total_steps, desc=description, unit="step", disable=not enabled, leave=False,
                        dynamic_ncols=True)
        self.start = time.perf_counter()
        self.images = 0
        self.refresh_every = refresh_every
        self.steps = 0

    def step(self, batch_images: int, meter: DeviceMeter, loss_key: str, acc_key: str) -> None:
        self.steps += 1
        self.images += batch_images
        self.bar.update(1)
        if self.steps % self.refresh_every == 0:
            meter.request_snapshot()
            latest = meter.latest()
            count = latest.get("count") or 0
            postfix = {"img/s": f"{self.images / max(time.perf_counter() - self.start, 1e-9):.0f}"}
            if count:
                postfix.update(loss=f"{latest[loss_key] / count:.3f}", acc=f"{latest[acc_key] / count:.3f}")
            self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        self.bar.close()


def write_metrics_log(path: str | Path, history: list[dict]) -> Path:
    """Per-epoch metrics as JSON lines, rewritten atomically so a resumed run never duplicates epochs."""
    return atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in history))


def read_metrics_log(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
