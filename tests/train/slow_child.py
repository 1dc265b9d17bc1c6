"""Runs the CLI, pausing before one train step so that a test can signal it
at a known point. The pause changes timing only, never the numbers.

  python tests/train/slow_child.py STEP SIGNAL_DIR <codir_jax.main flags...>

Before its STEP-th train step (counted in this process, from 1; 0 = never),
the child creates SIGNAL_DIR/paused and waits until SIGNAL_DIR/go exists
(at most 300 s). A signal the test sends meanwhile lands before that step.
"""

import os
import sys
import time

sys.path.insert(
    0,
    os.path.dirname(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ),
)

from absl import app  # noqa: E402

from codir_jax import main as cli  # noqa: E402
from codir_jax import sharding  # noqa: E402

_PAUSE_AT = int(sys.argv.pop(1))
_SIGNALS = sys.argv.pop(1)
_put = sharding.put_batch
_train_steps = 0


def _pause() -> None:
  open(os.path.join(_SIGNALS, "paused"), "w").close()
  t0 = time.monotonic()
  while not os.path.exists(os.path.join(_SIGNALS, "go")):
    if time.monotonic() - t0 > 300:
      break
    time.sleep(0.02)


def _pausing_put(batch, mesh):
  global _train_steps
  if "labels" in batch and "valid" in batch and len(batch) > 5:  # Train.
    _train_steps += 1
    if _train_steps == _PAUSE_AT:
      _pause()
  return _put(batch, mesh)


sharding.put_batch = _pausing_put

if __name__ == "__main__":
  app.run(cli.main)
