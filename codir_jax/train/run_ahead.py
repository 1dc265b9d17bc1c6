"""How far the train loop's host may run ahead of its devices.

`jax.jit` dispatches asynchronously: a call returns once the step is
queued, and the host waits for the device only when it reads a value. A
loop that reads values only when it logs (every `log.every_steps`) queues
up to that many steps ahead of the device, and each queued step holds its
batch in device memory. A preemption notice is checked when a step is
dispatched, so every queued step still runs before the save: measured
~45 steps (~60 s at 1.3 s/step) late on a CPU run with
log.every_steps=50, past a pod's grace period.

`StepWindow` caps the steps dispatched but not finished at
`MAX_IN_FLIGHT`. It waits on a small output of a step (its metrics),
never on the state, which the next step donates. The numbers do not
change: only when the host waits does.
"""

from __future__ import annotations

import collections
from typing import Any

import jax

# Two keep the device busy (the next step is queued while one runs) and the
# host at most one step ahead: a SIGTERM is acted on within two steps, and
# at most two batches wait on the device. Cost: the wait per step, ~1 ms
# on a 2-core CPU where the host shares the cores with XLA (configs/tiny.py,
# ~9 ms steps: 112 -> 100 steps/s); ~0.1% of a 1.3 s step if it stays ~1 ms.
MAX_IN_FLIGHT = 2


class StepWindow:
  """The steps dispatched and maybe unfinished, at most `limit` of them.

  Per step: `wait_for_room()`, then dispatch, then `dispatched(outputs)`.
  """

  def __init__(self, limit: int = MAX_IN_FLIGHT):
    if limit < 1:
      raise ValueError(f"limit must be >= 1, got {limit}")
    self.limit = limit
    self._pending: collections.deque[Any] = collections.deque()

  def dispatched(self, outputs: Any) -> None:
    """Records a step by outputs that are ready when it is (not donated)."""
    self._pending.append(outputs)

  def wait_for_room(self) -> None:
    """Blocks until fewer than `limit` recorded steps may be unfinished."""
    while len(self._pending) >= self.limit:
      jax.block_until_ready(self._pending.popleft())
