"""All-gather of variable-length int32 arrays across JAX processes.

`PretrainIterator(exchange=allgather)` uses it to share tokenised text: each
process sends the ids it tokenised and receives every process's. Two
collectives (`multihost_utils.process_allgather`) per call: the counts
`[P, 2]`, then one padded payload `[P, L]` (lengths, then tokens). `L` is
rounded up to a power of two so that few shapes are ever compiled.

Every process must call `allgather` the same number of times, in the same
order relative to its other collectives (the data iterator does: it calls
it at the same `next()` on every process).
"""

from typing import Sequence

import jax
from jax.experimental import multihost_utils
import numpy as np

_MIN_BUCKET = 64


def _bucket(n: int) -> int:
  """The smallest power of two >= max(n, 64)."""
  return max(_MIN_BUCKET, 1 << (int(n) - 1).bit_length())


def _gather(x: np.ndarray) -> np.ndarray:
  """[...] on each process -> [P, ...] in process order."""
  with jax.transfer_guard("allow"):
    out = multihost_utils.process_allgather(x)
  return np.asarray(out).reshape((jax.process_count(),) + x.shape)


def allgather(local: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
  """This process's 1-D int32 arrays -> every process's, in process order."""
  arrays = [np.asarray(a, np.int32).reshape(-1) for a in local]
  lengths = np.asarray([len(a) for a in arrays], np.int32)
  counts = _gather(np.asarray([len(arrays), lengths.sum()], np.int32))
  n_max = _bucket(counts[:, 0].max())
  payload = np.zeros(n_max + _bucket(counts[:, 1].max()), np.int32)
  payload[: len(arrays)] = lengths
  if arrays:
    payload[n_max : n_max + lengths.sum()] = np.concatenate(arrays)
  shares = []
  for (count, total), row in zip(counts, _gather(payload)):
    tokens = row[n_max : n_max + total]
    ends = np.cumsum(row[:count])
    shares.append([tokens[e - n : e] for e, n in zip(ends, row[:count])])
  return shares
