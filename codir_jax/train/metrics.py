"""Metric accumulation and writing: JSON lines, TensorBoard and progress.

Train steps return metrics as `{name: (sum, count)}`; `mean_of` turns a list
of them into means at logging time. `MetricWriter` appends one JSON object a
line to `<workdir>/metrics.jsonl` (readable by the notebooks in
`experiments/` with `pandas.read_json(lines=True)`), mirrors scalars to
TensorBoard event files (tensorboardX, no TensorFlow needed) and prints a
progress line with steps/s and ETA. Only process 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Mapping, Sequence, TextIO

import numpy as np


def mean_of(
    history: Sequence[Mapping[str, tuple[Any, Any]]],
) -> dict[str, float]:
  """Means of `(sum, count)` metrics accumulated over several steps.

  Args:
    history: per-step dicts `{name: (sum, count)}` (host numpy values).

  Returns:
    `{name: sum_total / count_total}`; a metric with zero count is NaN.
  """
  totals: dict[str, list[float]] = {}
  for metrics in history:
    for name, (s, c) in metrics.items():
      acc = totals.setdefault(name, [0.0, 0.0])
      acc[0] += float(np.asarray(s, np.float64))
      acc[1] += float(np.asarray(c, np.float64))
  return {k: (s / c if c else math.nan) for k, (s, c) in totals.items()}


def _format_eta(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h:d}:{m:02d}:{s:02d}"


def drop_rows_after(path: str, step: int) -> None:
  """Rewrites the JSONL file `path` without rows past `step` (atomic)."""
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    lines = f.readlines()
  # A torn last line (killed mid-write) is dropped too.
  keep = [
      l
      for l in lines
      if l.endswith("\n") and json.loads(l).get("step", 0) <= step
  ]
  if len(keep) == len(lines):
    return
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(keep)
  os.replace(tmp, path)


class MetricWriter:
  """Writes scalars to JSONL + TensorBoard and prints progress lines."""

  def __init__(
      self,
      workdir: str,
      *,
      total_steps: int,
      enabled: bool = True,
      tensorboard: bool = True,
      stream: TextIO = sys.stdout,
      resume_step: int = 0,
  ):
    """Opens `<workdir>/metrics.jsonl` for appending.

    Args:
      workdir: the run's directory.
      total_steps: for the progress line's percentage and ETA.
      enabled: False on processes other than 0 (they write nothing).
      tensorboard: also write TensorBoard event files.
      stream: where progress lines go.
      resume_step: the step the run (re)starts from; rows logged past it by
        an earlier, killed process are dropped first (atomically), so the
        file holds one row per step and split across kills and resumes.
    """
    self._enabled = enabled
    self._total = total_steps
    self._stream = stream
    self._t0: float | None = None
    self._step0 = 0
    self._jsonl = None
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    drop_rows_after(path, resume_step)
    self._jsonl = open(path, "a", encoding="utf-8")
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def start(self, step: int) -> None:
    """Marks the step the run (re)starts from, for steps/s and ETA."""
    self._t0 = time.perf_counter()
    self._step0 = step

  def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
    """Records `scalars` for `split` ('train', 'eval', ...) at `step`."""
    if not self._enabled:
      return
    row = {"step": int(step), "split": split}
    row.update({k: float(v) for k, v in scalars.items()})
    self._jsonl.write(json.dumps(row, allow_nan=True) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(f"{split}/{k}", float(v), int(step))
      self._tb.flush()

  def progress(self, step: int, scalars: Mapping[str, float]) -> None:
    """Prints `step/total (pct) | steps/s | ETA | metrics`."""
    if not self._enabled:
      return
    rate, eta = math.nan, math.nan
    if self._t0 is not None and step > self._step0:
      elapsed = time.perf_counter() - self._t0
      rate = (step - self._step0) / max(elapsed, 1e-9)
      eta = (self._total - step) / rate
    pct = 100.0 * step / max(self._total, 1)
    shown = " ".join(f"{k}={v:.4g}" for k, v in sorted(scalars.items()))
    print(
        f"[{step}/{self._total} {pct:5.1f}%] {rate:.2f} steps/s"
        f" ETA {_format_eta(eta)} | {shown}",
        file=self._stream,
        flush=True,
    )

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None
