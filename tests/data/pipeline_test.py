"""BatchIterator: determinism, epochs, checkpointing, sharding, padding."""

import json

import numpy as np
import pytest

from codir_jax import data

PAD = 0


def fake_split(n=50, max_len=40, seed=0, regression=False, has_labels=True):
  """Token j of example i is 1000 * (i + 1) + j; type ids alternate."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(2, max_len + 1, n)
  offsets = np.zeros(n + 1, np.int64)
  np.cumsum(lengths, out=offsets[1:])
  tokens = np.concatenate(
      [1000 * (i + 1) + np.arange(l) for i, l in enumerate(lengths)]
  )
  types = np.concatenate([np.arange(l) % 2 for l in lengths])
  if regression:
    labels = rng.uniform(0, 5, n).astype(np.float32)
  else:
    labels = rng.integers(0, 3, n).astype(np.int32)
  return data.TokenizedSplit(
      task='stsb' if regression else 'mnli',
      split='train',
      token_ids=tokens.astype(np.int32),
      type_ids=types.astype(np.int8),
      offsets=offsets,
      labels=labels,
      example_ids=np.arange(n, dtype=np.int32),
      max_len=max_len,
      pad_id=PAD,
      has_labels=has_labels,
      is_regression=regression,
  )


def take(it, k):
  return [next(it) for _ in range(k)]


def assert_same(xs, ys):
  assert len(xs) == len(ys)
  for x, y in zip(xs, ys):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def valid_ids(batches):
  return np.concatenate([b['example_ids'][b['valid']] for b in batches])


def test_batch_contract_and_contents():
  ds = fake_split()
  it = data.BatchIterator(ds, batch_size=8, seed=3)
  for b in take(it, it.steps_per_epoch):
    t = b['input_ids'].shape[1]
    assert t in it.buckets
    for key in ['input_ids', 'attention_mask', 'token_type_ids']:
      assert b[key].shape == (8, t) and b[key].dtype == np.int32, key
    assert b['labels'].dtype == np.int32 and b['labels'].shape == (8,)
    assert b['example_ids'].dtype == np.int32 and b['valid'].dtype == bool
    for r in np.nonzero(b['valid'])[0]:
      i = b['example_ids'][r]
      n = ds.lengths[i]
      row = ds.token_ids[ds.offsets[i] : ds.offsets[i + 1]]
      np.testing.assert_array_equal(b['input_ids'][r, :n], row)
      assert (b['input_ids'][r, n:] == PAD).all()
      np.testing.assert_array_equal(b['attention_mask'][r], np.arange(t) < n)
      np.testing.assert_array_equal(
          b['token_type_ids'][r, :n], np.arange(n) % 2
      )
      assert (b['token_type_ids'][r, n:] == 0).all()
      assert b['labels'][r] == ds.labels[i]
    # The bucket is the smallest one that holds the longest row.
    longest = ds.lengths[b['example_ids'][b['valid']]].max()
    assert t == data.bucket_length(longest, it.buckets)


def test_bucket_lengths_limited_to_declared_set():
  ds = fake_split(n=200, max_len=100, seed=1)
  it = data.BatchIterator(ds, batch_size=4, num_epochs=2)
  seen = {b['input_ids'].shape[1] for b in it}
  assert seen <= {16, 32, 64, 100} and len(seen) > 1
  it = data.BatchIterator(ds, batch_size=4, buckets=[50, 100], num_epochs=1)
  assert {b['input_ids'].shape[1] for b in it} <= {50, 100}
  with pytest.raises(ValueError, match='largest bucket'):
    data.BatchIterator(ds, batch_size=4, buckets=[16, 64])


def test_deterministic_by_seed_and_different_per_epoch():
  ds = fake_split()
  steps = data.BatchIterator(ds, batch_size=8).steps_per_epoch
  a = take(data.BatchIterator(ds, batch_size=8, seed=7), 2 * steps)
  b = take(data.BatchIterator(ds, batch_size=8, seed=7), 2 * steps)
  assert_same(a, b)
  c = take(data.BatchIterator(ds, batch_size=8, seed=8), steps)
  assert not np.array_equal(valid_ids(a[:steps]), valid_ids(c))
  e0, e1 = valid_ids(a[:steps]), valid_ids(a[steps:])
  assert not np.array_equal(e0, e1)
  np.testing.assert_array_equal(np.sort(e0), np.arange(len(ds)))
  np.testing.assert_array_equal(np.sort(e1), np.arange(len(ds)))


def test_no_shuffle_is_file_order_and_stops():
  ds = fake_split(n=21)
  it = data.BatchIterator(ds, batch_size=4, shuffle=False, num_epochs=1)
  batches = list(it)
  assert len(batches) == 6
  np.testing.assert_array_equal(valid_ids(batches), np.arange(21))
  with pytest.raises(StopIteration):
    next(it)


@pytest.mark.parametrize('stop', [0, 3, 6, 7, 13])
def test_checkpoint_restore_gives_identical_batches(stop):
  ds = fake_split(n=45)
  it = data.BatchIterator(ds, batch_size=7, seed=11)  # 7 steps per epoch
  take(it, stop)
  state = json.loads(json.dumps(it.get_state()))
  expected = take(it, 12)  # crosses an epoch boundary
  restored = data.BatchIterator(ds, batch_size=7, seed=11)
  restored.set_state(state)
  assert_same(take(restored, 12), expected)
  assert restored.get_state() == it.get_state()


def test_state_is_small_and_checked():
  ds = fake_split(n=45)
  it = data.BatchIterator(ds, batch_size=7, seed=11)
  take(it, 9)
  state = it.get_state()
  assert state['epoch'] == 1 and state['step'] == 2
  assert len(json.dumps(state)) < 200
  other = data.BatchIterator(ds, batch_size=7, seed=12)
  with pytest.raises(ValueError, match='seed'):
    other.set_state(state)
  other = data.BatchIterator(ds, batch_size=5, seed=11)
  with pytest.raises(ValueError, match='global_batch_size'):
    other.set_state(state)
  with pytest.raises(ValueError, match='Bad iterator state'):
    it.set_state({'epoch': 0, 'step': 99})


@pytest.mark.parametrize('process_count, n', [(2, 50), (3, 50), (4, 9)])
def test_process_shards_disjoint_and_cover(process_count, n):
  ds = fake_split(n=n)
  iters = [
      data.BatchIterator(
          ds,
          batch_size=4,
          seed=5,
          num_epochs=2,
          process_index=p,
          process_count=process_count,
      )
      for p in range(process_count)
  ]
  per_process = [list(it) for it in iters]
  steps = {len(b) for b in per_process}
  assert len(steps) == 1  # every process runs the same number of steps
  for epoch in range(2):
    seen = []
    k = iters[0].steps_per_epoch
    for batches in per_process:
      seen.append(valid_ids(batches[epoch * k : (epoch + 1) * k]))
    all_ids = np.concatenate(seen)
    assert len(all_ids) == len(set(all_ids.tolist())) == n
    np.testing.assert_array_equal(np.sort(all_ids), np.arange(n))
  # All processes agree on the padded length of every step.
  for s in range(len(per_process[0])):
    assert len({b[s]['input_ids'].shape for b in per_process}) == 1
  # The shards of one process together are the single-process batch.
  single = take(
      data.BatchIterator(ds, batch_size=4 * process_count, seed=5),
      iters[0].steps_per_epoch,
  )
  for s, b in enumerate(single):
    for key, value in b.items():
      cat = np.concatenate([pp[s][key] for pp in per_process])
      np.testing.assert_array_equal(cat, value, err_msg=key)


def test_padding_rows_are_invalid():
  ds = fake_split(n=10)
  batches = list(data.BatchIterator(ds, batch_size=4, num_epochs=1))
  assert len(batches) == 3
  last = batches[-1]
  np.testing.assert_array_equal(last['valid'], [True, True, False, False])
  assert (last['example_ids'][2:] == -1).all()
  assert (last['labels'][2:] == -1).all()
  assert (last['input_ids'][2:] == PAD).all()
  assert (last['token_type_ids'][2:] == 0).all()
  # Exactly one attended position keeps pooling/softmax finite.
  np.testing.assert_array_equal(last['attention_mask'][2:].sum(1), [1, 1])
  assert all(b['valid'].all() for b in batches[:-1])
  dropped = list(
      data.BatchIterator(ds, batch_size=4, num_epochs=1, drop_remainder=True)
  )
  assert len(dropped) == 2 and all(b['valid'].all() for b in dropped)


def test_regression_and_unlabelled_labels():
  ds = fake_split(n=5, regression=True)
  b = next(data.BatchIterator(ds, batch_size=8, shuffle=False))
  assert b['labels'].dtype == np.float32
  np.testing.assert_array_equal(b['labels'][:5], ds.labels)
  assert (b['labels'][5:] == 0.0).all() and not b['valid'][5:].any()


def test_bad_arguments():
  ds = fake_split(n=10)
  with pytest.raises(ValueError, match='batch_size'):
    data.BatchIterator(ds, batch_size=0)
  with pytest.raises(ValueError, match='process'):
    data.BatchIterator(ds, batch_size=2, process_index=2, process_count=2)
  with pytest.raises(ValueError, match='no batch'):
    data.BatchIterator(ds, batch_size=11, drop_remainder=True)
