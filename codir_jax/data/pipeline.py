"""Fixed-shape, shuffled, sharded and checkpointable batches of a split.

Every process holds the whole tokenised split (GLUE is small) and computes
the same global order for each epoch: a permutation drawn from
`np.random.default_rng([seed, epoch])`, or file order with `shuffle=False`.
Global batch `s` of an epoch is `order[s * G:(s + 1) * G]` with
`G = batch_size * process_count`; process `p` takes rows
`[p * batch_size, (p + 1) * batch_size)` of it. Shards are therefore
disjoint, cover the split, and every process runs the same number of steps.

The padded length T of a batch is the smallest bucket holding the longest
example of the *global* batch, so all processes agree on T (one global
array per step) and the number of shapes, hence XLA compilations, is at most
`len(buckets)`.

The iterator position is `(epoch, step)`; `get_state()` returns it (with a
few fields that `set_state` checks), and a restored iterator yields exactly
the same batches. The state is the same on every process.

Batch contract (API.md), all numpy:
  input_ids, attention_mask, token_type_ids: [B, T] int32.
  labels: [B] int32, float32 for STS-B; -1 / NaN on unlabelled (test) splits.
  example_ids: [B] int32, the example's index in its split.
  valid: [B] bool, False on rows that pad the last partial batch.
Padding rows hold input_ids = pad id, token_type_ids 0, example_ids -1,
labels -1 (0.0 for STS-B, so that losses stay finite) and attention_mask 1
on position 0 only, so that no row is fully masked (softmax and mean pooling
stay finite). Always weight by `valid`.
"""

from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from codir_jax.data import tokenize

Batch = dict[str, np.ndarray]


class BatchIterator(Iterator[Batch]):
  """Iterates fixed-shape batches of a `TokenizedSplit` over epochs."""

  def __init__(
      self,
      data: tokenize.TokenizedSplit,
      *,
      batch_size: int,
      shuffle: bool = True,
      seed: int = 0,
      num_epochs: int | None = None,
      drop_remainder: bool = False,
      buckets: Sequence[int] | None = None,
      process_index: int = 0,
      process_count: int = 1,
  ):
    """Builds the iterator at epoch 0, step 0.

    Args:
      data: the tokenised split.
      batch_size: rows per batch on this process (per-host batch size).
      shuffle: draw a new permutation per epoch from (seed, epoch); if False,
        iterate in split order (evaluation).
      seed: shuffling seed.
      num_epochs: stop after this many epochs; None = repeat forever.
      drop_remainder: skip the last partial global batch of each epoch
        (then every row is valid); otherwise pad it with invalid rows.
      buckets: allowed padded lengths, ascending; the last must be >=
        `data.max_len`. Default: `tokenize.make_buckets(data.max_len)`.
      process_index: this process (`jax.process_index()`).
      process_count: number of processes (`jax.process_count()`).
    """
    if batch_size < 1:
      raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    if not 0 <= process_index < process_count:
      raise ValueError(f'process {process_index} of {process_count}')
    self._data = data
    self._batch_size = batch_size
    self._shuffle = shuffle
    self._seed = int(seed)
    self._num_epochs = num_epochs
    self._drop_remainder = drop_remainder
    self._buckets = tuple(
        sorted(buckets or tokenize.make_buckets(data.max_len))
    )
    if self._buckets[-1] < data.max_len:
      raise ValueError(
          f'largest bucket {self._buckets[-1]} < max_len {data.max_len}'
      )
    self._process_index = process_index
    self._process_count = process_count
    self._global_batch = batch_size * process_count
    n = len(data)
    if drop_remainder:
      self._steps = n // self._global_batch
    else:
      self._steps = -(-n // self._global_batch)
    if self._steps == 0:
      raise ValueError(
          f'{n} examples give no batch of global size {self._global_batch}'
          ' with drop_remainder=True'
      )
    self._lengths = data.lengths
    self._epoch = 0
    self._step = 0
    self._order_epoch = -1
    self._order = np.zeros(0, np.int64)

  @property
  def steps_per_epoch(self) -> int:
    return self._steps

  @property
  def buckets(self) -> tuple[int, ...]:
    return self._buckets

  # --- checkpointable position -------------------------------------------

  def get_state(self) -> dict[str, Any]:
    """Small JSON-able position: next batch is `step` of `epoch`."""
    return {
        'epoch': self._epoch,
        'step': self._step,
        'seed': self._seed,
        'num_examples': len(self._data),
        'global_batch_size': self._global_batch,
    }

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Restores a position from `get_state()` (checks it fits this data)."""
    expected = {
        'seed': self._seed,
        'num_examples': len(self._data),
        'global_batch_size': self._global_batch,
    }
    for key, value in expected.items():
      if key in state and int(state[key]) != value:
        raise ValueError(
            f'Iterator state has {key}={state[key]}, this iterator {value}'
        )
    epoch, step = int(state['epoch']), int(state['step'])
    if epoch < 0 or not 0 <= step <= self._steps:
      raise ValueError(f'Bad iterator state epoch={epoch}, step={step}')
    self._epoch, self._step = epoch, step

  # --- iteration ----------------------------------------------------------

  def __iter__(self) -> 'BatchIterator':
    return self

  def __next__(self) -> Batch:
    if self._step >= self._steps:
      self._epoch += 1
      self._step = 0
    if self._num_epochs is not None and self._epoch >= self._num_epochs:
      raise StopIteration
    batch = self.batch_at(self._epoch, self._step)
    self._step += 1
    return batch

  def epoch_order(self, epoch: int) -> np.ndarray:
    """[N] int64: the global order of examples in `epoch`."""
    if self._order_epoch != epoch:
      n = len(self._data)
      if self._shuffle:
        rng = np.random.default_rng([self._seed, epoch])
        self._order = rng.permutation(n)
      else:
        self._order = np.arange(n, dtype=np.int64)
      self._order_epoch = epoch
    return self._order

  def batch_at(self, epoch: int, step: int) -> Batch:
    """This process's batch `step` of `epoch` (no change of position)."""
    order = self.epoch_order(epoch)
    g = order[step * self._global_batch : (step + 1) * self._global_batch]
    longest = int(self._lengths[g].max()) if len(g) else 1
    t = tokenize.bucket_length(longest, self._buckets)
    lo = self._process_index * self._batch_size
    return self._gather(g[lo : lo + self._batch_size], t)

  def pad_rows(self, rows: np.ndarray, t: int) -> Batch:
    """A batch of the examples `rows` (<= batch_size), padded to [B, t]."""
    return self._gather(np.asarray(rows, np.int64), t)

  def _gather(self, rows: np.ndarray, t: int) -> Batch:
    """Pads the ragged `rows` to [batch_size, t] (invalid rows at the end)."""
    data, b, k = self._data, self._batch_size, len(rows)
    starts = data.offsets[rows]  # [k]
    lens = self._lengths[rows]  # [k]
    cols = np.arange(t)
    mask = cols[None, :] < lens[:, None]  # [k, t]
    flat = np.where(mask, starts[:, None] + cols[None, :], 0)  # [k, t]

    input_ids = np.full((b, t), data.pad_id, np.int32)
    token_type_ids = np.zeros((b, t), np.int32)
    attention_mask = np.zeros((b, t), np.int32)
    if len(data.token_ids):
      input_ids[:k] = np.where(mask, data.token_ids[flat], data.pad_id)
      token_type_ids[:k] = np.where(mask, data.type_ids[flat], 0)
    attention_mask[:k] = mask
    attention_mask[k:, 0] = 1

    if data.is_regression:
      labels = np.zeros(b, np.float32)
    else:
      labels = np.full(b, -1, np.int32)
    labels[:k] = data.labels[rows]
    example_ids = np.full(b, -1, np.int32)
    example_ids[:k] = data.example_ids[rows]
    valid = np.zeros(b, bool)
    valid[:k] = True
    return {
        'input_ids': input_ids,
        'attention_mask': attention_mask,
        'token_type_ids': token_type_ids,
        'labels': labels,
        'example_ids': example_ids,
        'valid': valid,
    }
