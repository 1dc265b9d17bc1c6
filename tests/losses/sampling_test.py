"""Negative ranks: distinct and uniform over subsets when the pool allows."""

import collections
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from codir_jax.losses import memory_bank
from codir_jax.losses import sampling
from tests.reference import losses_reference as ref

_ALGORITHMS = {
    "floyd": lambda key, pool, k, n: sampling._floyd(key, pool, k),  # pylint: disable=protected-access
    "random_keys": sampling._random_keys,  # pylint: disable=protected-access
}


@pytest.mark.parametrize("name", sorted(_ALGORITHMS))
def test_every_subset_is_equally_likely(name):
  # 5 eligible ranks, K = 3: 10 subsets, each with probability 1/10
  # (counted exactly, not sampled); with replacement would also give
  # multisets such as {0, 0, 1}.
  rows, pool, k = 20_000, 5, 3
  picks = np.asarray(
      _ALGORITHMS[name](
          jax.random.key(0), jnp.full((rows,), pool, jnp.int32), k, 12
      )
  )
  subsets = collections.Counter(tuple(sorted(r)) for r in picks)
  expected = list(itertools.combinations(range(pool), k))
  assert set(subsets) == set(expected)
  counts = [subsets[s] for s in expected]
  p = stats.chisquare(counts, [rows / len(expected)] * len(expected)).pvalue
  assert p > 1e-3, (counts, p)


def test_draw_ranks_is_distinct_when_the_pool_allows_else_replaces():
  pool = jnp.asarray([0, 1, 4, 6, 40, 1200], jnp.int32)
  k = 6
  for seed in range(20):
    ranks = np.asarray(
        sampling.draw_ranks(
            jax.random.key(seed), pool=pool, num=k, max_pool=1200
        )
    )
    assert ranks.shape == (6, k) and ranks.dtype == np.int32
    assert (ranks[0] == 0).all()  # Empty pool: zeros (masked by callers).
    assert (ranks[1] == 0).all()
    assert ((ranks[2] >= 0) & (ranks[2] < 4)).all()  # 4 < K: replacement.
    for row, size in zip(ranks[3:], (6, 40, 1200)):
      assert len(set(row.tolist())) == k and row.min() >= 0
      assert row.max() < size


def test_small_pool_draws_with_replacement_uniformly():
  rows, pool, k = 4000, 3, 5
  ranks = np.asarray(
      sampling.draw_ranks(
          jax.random.key(1),
          pool=jnp.full((rows,), pool, jnp.int32),
          num=k,
          max_pool=64,
      )
  )
  counts = np.bincount(ranks.ravel(), minlength=pool)
  assert stats.chisquare(counts).pvalue > 1e-3, counts
  assert (np.asarray([len(set(r)) for r in ranks]) < k).all()


def test_random_keys_do_not_depend_on_the_padded_bank_size():
  # A bank padded for n devices has more slots; the draws must not change.
  pool = jnp.asarray([30, 50, 64], jnp.int32)
  a = sampling._random_keys(jax.random.key(2), pool, 20, 64)  # pylint: disable=protected-access
  b = sampling._random_keys(jax.random.key(2), pool, 20, 72)  # pylint: disable=protected-access
  np.testing.assert_array_equal(a, b)


def test_bank_negatives_have_no_duplicates_and_are_eligible():
  # MRPC-like: K = 100 among ~1,200 eligible slots; with replacement about
  # K^2 / (2 |E|) ~ 4 duplicates per row would appear.
  n, k = 3668, 100
  rng = np.random.default_rng(0)
  labels = (rng.uniform(size=n) < 0.32).astype(np.int32)
  bank = memory_bank.init(
      jax.random.key(0),
      num_slots=n,
      dim=8,
      labels=jnp.asarray(labels),
      all_valid=True,
  )
  qids = jnp.asarray([0, 5, 17, 1000], jnp.int32)
  qlab = jnp.asarray(labels[np.asarray(qids)])
  ids, mask = memory_bank.sample_negatives(
      bank,
      rng=jax.random.key(3),
      query_ids=qids,
      query_labels=qlab,
      num_negatives=k,
  )
  ids, mask = np.asarray(ids), np.asarray(mask)
  assert mask.all()
  for row, q in zip(ids, np.asarray(qids)):
    assert len(set(row.tolist())) == k
    allowed = set(
        ref.eligible_slots(np.ones(n, bool), labels, q, labels[q], True)
    )
    assert set(row.tolist()) <= allowed
