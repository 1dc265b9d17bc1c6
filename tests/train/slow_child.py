"""Runs the CLI with a delay before each train batch, so that a test can
kill it mid-run. The delay changes timing only, never the numbers.

  python tests/train/slow_child.py SECONDS <codir_jax.main flags...>
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

_DELAY = float(sys.argv.pop(1))
_put = sharding.put_batch


def _slow_put(batch, mesh):
  if "labels" in batch and "valid" in batch and len(batch) > 5:
    time.sleep(_DELAY)
  return _put(batch, mesh)


sharding.put_batch = _slow_put

if __name__ == "__main__":
  app.run(cli.main)
